"""Campaign files (TOML) parsed into frozen dataclasses; unknown keys and bad values refused.

Layout (see ``campaigns/quickstart.toml``)::

    name = "quickstart"            # required
    seed = 1234                    # required, >= 0
    output = "results/quickstart"  # output folder (relative to the current directory)

    [model]        zoo = "alexnet" | image = "file.h5";  format = "fp32" | "fixedW" | "fixedW.F"
                   calibration = 512   (images that set the fixed-point formats)
    [data]         source = "bundled" | "cifar10";  folder = "..." (cifar10; default $ACCEL_SIM_DATA)
                   split = "test";  count = 1000;  offset = 0;  profile_count = 512
    [hardware]     preset = "edge16" (a built-in preset) | file = "my.toml"
    [faults]       site, model, persistence, count_mode, rates = [...], trials, layers, bits, registers,
                   target_ci95 (pp; 0 = off), min_trials: with a target, trials grow from min_trials
                   (doubling, up to trials) until each mean's 95 % CI half-width is at most it
    [[variants]]   name, activation = "relu" | "clipact" | "clamp",
                   thresholds = "act_max" | "tuned" | "file.toml" (see accel_sim.mitigation.thresholds), format
    [tuning]       how "tuned" thresholds are tuned: site, model, count_mode, rates, trials,
                   tune_images, profile_images, percentile, candidates, max_rounds,
                   early_stop_round, early_stop_pp, mode
    [execution]    engine = "local" | "dask";  workers = 2;  scheduler = "tcp://..." ;  batch_size
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_sim.errors import AccelSimError
from accel_sim.faults.draw import DrawSpec
from accel_sim.faults.model import COUNT_MODES, MODELS, PERSISTENCE, REGISTERS, SITES
from accel_sim.hardware.config import HardwareConfig, preset_names
from accel_sim.image.export import parse_export_format
from accel_sim.mitigation import ACTIVATIONS, MODES, SearchSettings, TuneSettings

ENGINES = ("local", "dask")
MAX_NAME = 64  # characters of a campaign or variant name (the results store keeps 64-byte names)
_NAME_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_NAME}}}")
MAX_JOBS = 1_000_000  # variants × rates × trials: the results of more do not fit a results file


@dataclass(frozen=True)
class ModelSpec:
    zoo: str = ""
    image: str = ""
    format: str = "fp32"
    calibration: int = 512


@dataclass(frozen=True)
class DataSpec:
    source: str = "bundled"
    folder: str = ""
    split: str = "test"
    count: int = 1000
    offset: int = 0
    profile_count: int = 512


@dataclass(frozen=True)
class HardwareSpec:
    preset: str = "edge16"
    file: str = ""


@dataclass(frozen=True)
class FaultSpec:
    site: str = "weight_memory"
    model: str = "flip"
    persistence: str = "permanent"
    count_mode: str = "binomial"
    rates: tuple[float, ...] = ()
    trials: int = 1
    layers: tuple[int, ...] = ()
    bits: tuple[int, ...] = ()
    registers: tuple[str, ...] = ()
    target_ci95: float = 0.0
    min_trials: int = 10

    @property
    def first_trials(self) -> int:
        """Trials of every (variant, rate) in the first round: all of them without a CI target."""
        return min(self.min_trials, self.trials) if self.target_ci95 else self.trials

    def draw_spec(self, rate: float) -> DrawSpec:
        return DrawSpec(self.site, rate, self.model, self.persistence, self.count_mode,
                        self.layers or None, self.bits or None, self.registers or None)


# a variant's hardware protection, as the hardware options it sets: ecc = SEC-DED on the memories,
# dmr = duplicated PEs whose comparators flag an image, dmr-recompute = and rerun it once,
# tmr = triplicated PEs with voters
PROTECTIONS = {"none": {}, "ecc": {"memory_ecc": "secded"}, "dmr": {"pe_redundancy": "dmr"},
               "dmr-recompute": {"pe_redundancy": "dmr", "dmr_mismatch": "recompute"},
               "tmr": {"pe_redundancy": "tmr"}}


def protected_hardware(hw: HardwareConfig, protection: str) -> HardwareConfig:
    """``hw`` with a variant's protection (a key of :data:`PROTECTIONS`) switched on."""
    return dataclasses.replace(hw, **PROTECTIONS[protection])


@dataclass(frozen=True)
class VariantSpec:
    name: str
    activation: str = "relu"
    thresholds: str = ""
    format: str = ""
    protection: str = "none"
    weights: str = ""  # a weights file of the zoo architecture (e.g. fault-aware trained); "": the zoo's


_TUNE = TuneSettings()  # the [tuning] defaults are the tuning layer's


@dataclass(frozen=True)
class TuningSpec:
    """``[tuning]``: how ``thresholds = "tuned"`` variants are tuned (the seed is the campaign's);
    see :class:`accel_sim.mitigation.TuneSettings`. ``percentile = 100`` profiles the maximum."""

    site: str = _TUNE.site
    model: str = _TUNE.model
    count_mode: str = _TUNE.count_mode
    rates: tuple[float, ...] = _TUNE.rates
    trials: int = _TUNE.trials
    tune_images: int = _TUNE.tune_images
    profile_images: int = _TUNE.profile_images
    percentile: float = 100.0
    candidates: int = _TUNE.search.candidates
    max_rounds: int = _TUNE.search.max_rounds
    early_stop_round: int = _TUNE.search.early_stop_round
    early_stop_pp: float = _TUNE.search.early_stop_pp
    mode: str = "fast"

    def settings(self, method: str, seed: int) -> TuneSettings:
        """These settings for ``method`` with the campaign's ``seed`` (raises on bad values)."""
        return TuneSettings(method, self.site, self.model, self.count_mode, self.rates, self.trials, self.tune_images,
                            self.profile_images, None if self.percentile == 100 else self.percentile,
                            SearchSettings(self.candidates, self.max_rounds, self.early_stop_round,
                                           self.early_stop_pp), seed)


@dataclass(frozen=True)
class ExecutionSpec:
    engine: str = "local"
    workers: int = 2
    scheduler: str = ""
    batch_size: int = 100


@dataclass(frozen=True)
class CampaignConfig:
    name: str
    seed: int
    model: ModelSpec
    data: DataSpec
    hardware: HardwareSpec
    faults: FaultSpec
    variants: tuple[VariantSpec, ...]
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    output: str = ""
    tuning: TuningSpec = field(default_factory=TuningSpec)

    def to_dict(self) -> dict:
        """The campaign as plain data (lists, as in a parsed file: ``campaign_from_dict`` reads it
        back); a variant's protection is left out when it is "none", its weights when they are
        the zoo's, so that results files written before those options existed still match their
        campaign."""
        data = _as_lists(dataclasses.asdict(self))
        for variant in data["variants"]:
            for option, off in (("protection", "none"), ("weights", "")):
                if variant[option] == off:
                    del variant[option]
        return data


def _as_lists(value):
    """``value`` with every tuple, in dicts and lists too, turned into a list."""
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


_SECTIONS = {"model": ModelSpec, "data": DataSpec, "hardware": HardwareSpec, "faults": FaultSpec,
             "execution": ExecutionSpec, "tuning": TuningSpec}


def load_campaign(path: str | os.PathLike) -> CampaignConfig:
    """Parse and validate a campaign file; every error names the file, the key and its line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AccelSimError(f"campaign file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AccelSimError(f"campaign file {str(path)!r} cannot be read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AccelSimError(f"campaign file {str(path)!r} is not valid TOML: {exc}") from None
    for key in ("layers", "bits", "registers"):  # in a file, [] is a mistake; a resolved config writes it for "all"
        if isinstance(data.get("faults"), dict) and data["faults"].get(key) == []:
            raise AccelSimError(f"campaign file {str(path)!r}: faults.{key}{_line_of(text, key)} must list at least "
                                "one value when given (leave it out for all)")
    return campaign_from_dict(data, str(path), text)


def campaign_from_dict(data: dict, where: str = "campaign", text: str = "") -> CampaignConfig:
    """Validate a parsed campaign document (``text``, the source, only locates keys for messages)."""
    def fail(key: str, problem: str) -> ValueError:
        return AccelSimError(f"campaign file {where!r}: {key}{_line_of(text, key)} {problem}")

    known = {"name", "seed", "output", "variants", *_SECTIONS}
    for key in data:
        if key not in known:
            raise fail(key, f"is not a known key (known: {', '.join(sorted(known))})")
    for key in ("name", "seed", "variants", "faults"):
        if key not in data:
            raise fail(key, "is missing")
    name = _typed(data["name"], str, "name", fail)
    if not _NAME_RE.fullmatch(name):
        raise fail("name", f"must be 1..{MAX_NAME} ASCII letters, digits, '.', '-' or '_', got {name!r}")
    seed = _typed(data["seed"], int, "seed", fail)
    if seed < 0:
        raise fail("seed", f"must be >= 0, got {seed}")
    output = _typed(data.get("output", f"results/{name}"), str, "output", fail)
    sections = {}
    for key, cls in _SECTIONS.items():
        table = data.get(key, {})
        if not isinstance(table, dict):
            raise fail(key, f"must be a table, got {type(table).__name__}")
        sections[key] = _build(cls, table, key, fail)
    variants_raw = data["variants"]
    if not isinstance(variants_raw, list) or not variants_raw:
        raise fail("variants", "must be a non-empty list of [[variants]] tables")
    variants = []
    for i, table in enumerate(variants_raw):
        if not isinstance(table, dict):
            raise fail(f"variants[{i}]", "must be a table")
        if "name" not in table:
            raise fail(f"variants[{i}].name", "is missing")
        variants.append(_build(VariantSpec, table, f"variants[{i}]", fail))
    config = CampaignConfig(name, seed, sections["model"], sections["data"], sections["hardware"], sections["faults"],
                            tuple(variants), sections["execution"], output, sections["tuning"])
    _check_values(config, fail)
    return config


def _line_of(text: str, dotted: str) -> str:
    key = re.sub(r"\[\d+\]", "", dotted).split(".")[-1]
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"^\s*({re.escape(key)}\s*=|\[+\s*{re.escape(key)}\s*\]+)", line):
            return f" (line {number})"
    return ""


def _typed(value: Any, kind: type, key: str, fail) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise fail(key, f"must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, table: dict, prefix: str, fail):
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}"
        if key not in hints:
            raise fail(dotted, f"is not a known key (known: {', '.join(hints)})")
        hint = hints[key]
        if hint.startswith("tuple"):
            inner = {"tuple[float, ...]": float, "tuple[int, ...]": int, "tuple[str, ...]": str}[hint]
            if not isinstance(value, list):
                raise fail(dotted, f"must be a list, got {type(value).__name__} {value!r}")
            values[key] = tuple(_typed(v, inner, dotted, fail) for v in value)
        else:
            values[key] = _typed(value, {"str": str, "int": int, "float": float}[hint], dotted, fail)
    return cls(**values)


def _check_values(c: CampaignConfig, fail) -> None:
    m, d, f, e = c.model, c.data, c.faults, c.execution
    if bool(m.zoo) == bool(m.image):
        raise fail("model", "needs exactly one of zoo (a zoo model name) or image (an image file)")
    if m.zoo and m.zoo not in ("alexnet", "vgg16"):
        raise fail("model.zoo", f"must be alexnet or vgg16, got {m.zoo!r}")
    if m.image and not Path(m.image).is_file():
        raise fail("model.image", f"names a missing file {m.image!r}")
    _check_format(m.format, "model.format", fail)
    for key, value, low in (("model.calibration", m.calibration, 1), ("data.count", d.count, 1),
                            ("data.offset", d.offset, 0), ("data.profile_count", d.profile_count, 1),
                            ("faults.trials", f.trials, 1), ("execution.workers", e.workers, 1),
                            ("execution.batch_size", e.batch_size, 1)):
        if value < low:
            raise fail(key, f"must be >= {low}, got {value}")
    if d.source not in ("bundled", "cifar10"):
        raise fail("data.source", f"must be bundled or cifar10, got {d.source!r}")
    if d.split not in ("test", "train"):
        raise fail("data.split", f"must be test or train, got {d.split!r}")
    if not c.hardware.file and c.hardware.preset not in preset_names():
        raise fail("hardware.preset", f"names no built-in preset ({', '.join(preset_names())}), got {c.hardware.preset!r}")
    if c.hardware.file and not Path(c.hardware.file).is_file():
        raise fail("hardware.file", f"names a missing file {c.hardware.file!r}")
    for key, value, allowed in (("faults.site", f.site, SITES), ("faults.model", f.model, MODELS),
                                ("faults.persistence", f.persistence, PERSISTENCE),
                                ("faults.count_mode", f.count_mode, COUNT_MODES), ("execution.engine", e.engine, ENGINES)):
        if value not in allowed:
            raise fail(key, f"must be one of {', '.join(allowed)}, got {value!r}")
    jobs = len(c.variants) * len(f.rates) * f.trials
    if jobs > MAX_JOBS:
        raise fail("faults.trials", f"gives {jobs:,} jobs (variants x rates x trials); at most {MAX_JOBS:,} are allowed")
    if not 0 < d.count <= 10**7 or d.profile_count > 10**7 or m.calibration > 10**7:
        raise fail("data.count", "and profile_count and model.calibration must be at most 10,000,000 images")
    for key, values, high in (("faults.layers", f.layers, 10_000), ("faults.bits", f.bits, 63)):
        for value in values:
            if not 0 <= value <= high:
                raise fail(key, f"must lie in 0..{high}, got {value}")
    if f.registers and f.site != "pe":
        raise fail("faults.registers", f"restricts PE faults only, but faults.site is {f.site!r}")
    if not (0 <= f.target_ci95 <= 100):  # NaN fails too
        raise fail("faults.target_ci95", f"must be a half-width in percentage points in [0, 100] (0: no target), "
                                         f"got {f.target_ci95!r}")
    if f.min_trials < 2:
        raise fail("faults.min_trials", f"must be >= 2 (a confidence interval needs two trials), got {f.min_trials}")
    if not f.rates:
        raise fail("faults.rates", "must list at least one fault rate")
    for rate in f.rates:
        if not 0 <= rate <= 1:
            raise fail("faults.rates", f"must lie in [0, 1], got {rate!r}")
    if len(set(f.rates)) != len(f.rates):
        raise fail("faults.rates", "lists a rate twice")
    for reg in f.registers:
        if reg not in REGISTERS:
            raise fail("faults.registers", f"must be among {', '.join(REGISTERS)}, got {reg!r}")
    names = [v.name for v in c.variants]
    if len(set(names)) != len(names):
        raise fail("variants", f"have duplicate names {names}")
    for i, v in enumerate(c.variants):
        _check_variant(f"variants[{i}]", v, fail)
    t = c.tuning
    if t.mode not in MODES:
        raise fail("tuning.mode", f"must be one of {', '.join(MODES)}, got {t.mode!r}")
    try:
        t.settings("clipact", c.seed)
    except ValueError as exc:
        raise fail("tuning", str(exc)) from None
    if m.image and any(v.format and v.format != m.format for v in c.variants):
        raise fail("variants", "cannot change the format of a given image file (use model.zoo)")
    if m.image and any(v.weights for v in c.variants):
        raise fail("variants", "cannot change the weights of a given image file (use model.zoo)")


def _check_variant(key: str, v: VariantSpec, fail) -> None:
    if not _NAME_RE.fullmatch(v.name):
        raise fail(f"{key}.name", f"must be 1..{MAX_NAME} ASCII letters, digits, '.', '-' or '_', got {v.name!r}")
    if v.activation not in ACTIVATIONS:
        raise fail(f"{key}.activation", f"must be one of {', '.join(ACTIVATIONS)}, got {v.activation!r}")
    if v.activation != "relu" and not v.thresholds:
        raise fail(f"{key}.thresholds", f"is needed for {v.activation} (act_max or a file)")
    if v.thresholds and v.thresholds not in ("act_max", "tuned") and not Path(v.thresholds).is_file():
        raise fail(f"{key}.thresholds", f"must be act_max, tuned or an existing file, got {v.thresholds!r}")
    if v.activation == "relu" and v.thresholds:
        raise fail(f"{key}.thresholds", "goes with activation clipact or clamp, not relu")
    if v.format:
        _check_format(v.format, f"{key}.format", fail)
    if v.protection not in PROTECTIONS:
        raise fail(f"{key}.protection", f"must be one of {', '.join(PROTECTIONS)}, got {v.protection!r}")
    if v.weights and not Path(v.weights).is_file():
        raise fail(f"{key}.weights", f"names a missing file {v.weights!r}")


def _check_format(text: str, key: str, fail) -> None:
    try:
        parse_export_format(text)
    except AccelSimError as exc:
        raise fail(key, str(exc).removeprefix("format ")) from None
