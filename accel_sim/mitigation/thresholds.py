"""Threshold files: the activation thresholds of a network as a small TOML document.

Layout (every table but ``[thresholds]`` is optional; a file with only ``[thresholds]`` is read as
given thresholds)::

    schema = "accel-sim-thresholds"
    version = 1
    method = "clipact"                 # or "clamp"
    image_hash = "3f2a…"               # content hash of the ReLU image they were chosen for

    [thresholds]                       # layer index (text) = T, real units
    "0" = 5.125
    "3" = 7.25

    [sources]                          # where each T came from: act_max, act_max_p99.9, tuned, file
    "0" = "tuned"

    [act_max]                          # the bound each tuned layer was searched under
    "0" = 11.5

    [settings]                         # what chose them (tuning settings, data, seed)
    rates = [1e-07, 1e-06]
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from accel_sim.errors import AccelSimError
from accel_sim.mitigation.apply import check_method

SCHEMA = "accel-sim-thresholds"
VERSION = 1


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of a network's activation layers.

    Attributes
    ----------
    method : {"clipact", "clamp"}
    values : dict of int to float
        Layer index → T (real units, finite, >= 0).
    sources : dict of int to str
        Layer index → where T came from.
    act_max : dict of int to float
        Layer index → the profiled bound a tuned T was searched under (may be empty).
    image_hash : str
        Content hash of the ReLU image the thresholds were chosen for ("" unknown).
    settings : dict
        The settings that chose them (JSON-compatible).
    """

    method: str
    values: dict[int, float]
    sources: dict[int, str] = field(default_factory=dict)
    act_max: dict[int, float] = field(default_factory=dict)
    image_hash: str = ""
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_method(self.method)
        for layer, value in self.values.items():
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise AccelSimError(f"threshold layer indices must be integers >= 0, got {layer!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise AccelSimError(f"threshold of layer {layer} must be a finite number >= 0, got {value!r}")
        object.__setattr__(self, "values", {int(k): float(v) for k, v in sorted(self.values.items())})
        object.__setattr__(self, "sources", {int(k): str(self.sources.get(k, "given")) for k in self.values})


def write_thresholds(thresholds: Thresholds, path: str | os.PathLike) -> Path:
    """Write ``thresholds`` as TOML (to a temporary name, then renamed)."""
    path = Path(path)
    lines = [f"# activation thresholds written by accel-sim ({thresholds.method})",
             f'schema = "{SCHEMA}"', f"version = {VERSION}", f"method = {json.dumps(thresholds.method)}",
             f"image_hash = {json.dumps(thresholds.image_hash)}", "", "[thresholds]"]
    lines += [f'"{k}" = {_float(v)}' for k, v in thresholds.values.items()]
    lines += ["", "[sources]"] + [f'"{k}" = {json.dumps(v)}' for k, v in thresholds.sources.items()]
    if thresholds.act_max:
        lines += ["", "[act_max]"] + [f'"{k}" = {_float(v)}' for k, v in sorted(thresholds.act_max.items())]
    if thresholds.settings:
        lines += ["", "[settings]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(thresholds.settings.items())
                                       if v is not None]  # TOML has no null: an unset setting is left out
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_thresholds(path: str | os.PathLike, method: str | None = None) -> Thresholds:
    """Read a threshold file; ``method`` is used when the file names none (a bare
    ``[thresholds]`` table) and must agree with it otherwise."""
    path = Path(path)
    where = f"threshold file {str(path)!r}"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AccelSimError(f"{where} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AccelSimError(f"{where} cannot be read as TOML: {exc}") from None
    known = {"schema", "version", "method", "image_hash", "thresholds", "sources", "act_max", "settings"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AccelSimError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if "schema" in data and data["schema"] != SCHEMA:
        raise AccelSimError(f"{where}: schema must be {SCHEMA!r}, got {data['schema']!r}")
    if not isinstance(data.get("version", VERSION), int) or data.get("version", VERSION) > VERSION:
        raise AccelSimError(f"{where}: version {data.get('version')!r} is newer than this accel-sim reads ({VERSION})")
    file_method = data.get("method")
    if file_method is not None and method is not None and file_method != method:
        raise AccelSimError(f"{where}: holds {file_method} thresholds, {method} was asked for")
    chosen = file_method or method or "clipact"
    if not isinstance(chosen, str):
        raise AccelSimError(f"{where}: method must be text, got {chosen!r}")
    tables = {}
    for key in ("thresholds", "sources", "act_max"):
        table = data.get(key, {})
        if not isinstance(table, dict):
            raise AccelSimError(f"{where}: [{key}] must be a table of \"layer index\" = value")
        tables[key] = {_layer_index(k, key, where): v for k, v in table.items()}
    if "thresholds" not in data or not tables["thresholds"]:
        raise AccelSimError(f"{where}: needs a [thresholds] table of \"layer index\" = T")
    for key, kind in (("thresholds", float), ("act_max", float), ("sources", str)):
        for k, v in tables[key].items():
            if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise AccelSimError(f"{where}: [{key}] \"{k}\" must be a number, got {v!r}")
            if kind is str and not isinstance(v, str):
                raise AccelSimError(f"{where}: [{key}] \"{k}\" must be text, got {v!r}")
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise AccelSimError(f"{where}: [settings] must be a table")
    image_hash = data.get("image_hash", "")
    if not isinstance(image_hash, str):
        raise AccelSimError(f"{where}: image_hash must be text, got {image_hash!r}")
    sources = {k: tables["sources"].get(k, "file") for k in tables["thresholds"]}
    try:
        return Thresholds(chosen, tables["thresholds"], sources, tables["act_max"], image_hash, settings)
    except ValueError as exc:
        raise AccelSimError(f"{where}: {exc}") from None


def _layer_index(key: str, table: str, where: str) -> int:
    if not key.isdigit():
        raise AccelSimError(f"{where}: [{table}] keys must be layer indices (\"0\", \"3\", ...), got {key!r}")
    return int(key)


def _float(value: float) -> str:
    return repr(float(value))  # shortest text that reads back to the same float64


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))
