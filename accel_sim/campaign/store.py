"""The results store: one HDF5 file per campaign, one row per finished job.

The file is rewritten whole, to a temporary name and renamed, after every finished job: a
campaign killed at any moment leaves the previous complete file (never a half-written one), and
a resumed campaign skips exactly the jobs it holds. A campaign with more variants or rates than
the file's (the others unchanged) resumes from it too: only the new cells run.

Layout: root attributes ``schema = "accel-sim-results"``, ``schema_version = 2``, ``campaign``
(name), ``config`` (the resolved campaign as JSON); dataset ``jobs``, a table with the columns of
:data:`ROW_DTYPE`. Version 1 lacked ``flagged``, ``silent`` and ``recomputed`` (no hardware could
flag an image then); its files read with no image flagged or recomputed and every wrong
prediction silent.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np

from accel_sim.errors import AccelSimError

SCHEMA = "accel-sim-results"
SCHEMA_VERSION = 2
RESULTS_NAME = "results.h5"
LOCK_NAME = ".campaign.lock"
# flagged: images the hardware flagged (DMR); silent: wrong predictions not flagged;
# recomputed: images run a second time after a flag
ROW_DTYPE = np.dtype([
    ("key", "S128"), ("variant", "S64"), ("rate", "f8"), ("trial", "i4"), ("seed", "i8"), ("faults", "i8"),
    ("correct", "i8"), ("total", "i8"), ("nan_count", "i8"), ("flagged", "i8"), ("silent", "i8"),
    ("recomputed", "i8"), ("seconds", "f8"), ("worker", "S64"),
])
_ROW_DTYPE_V1 = np.dtype([(name, ROW_DTYPE[name]) for name in ROW_DTYPE.names
                          if name not in ("flagged", "silent", "recomputed")])
TIMING_COLUMNS = ("seconds", "worker")


class ResultsStore:
    """Rows of one campaign, persisted after every :meth:`add`."""

    def __init__(self, path: Path, campaign: str, config: dict):
        self.path = Path(path)
        self.campaign = campaign
        self.rows = np.zeros(0, dtype=ROW_DTYPE)
        if self.path.exists():
            stored_config, self.rows = read_results(self.path)
            config = merged_config(stored_config, config)
            if config is None:
                raise AccelSimError(f"{str(self.path)!r} holds results of a different campaign configuration; "
                                    "choose another output folder (--out) or remove it")
        self.config_json = json.dumps(config, sort_keys=True)

    def finished(self) -> set[str]:
        return {k.decode() for k in self.rows["key"]}

    def add(self, row: dict) -> None:
        record = np.zeros(1, dtype=ROW_DTYPE)
        for name in ROW_DTYPE.names:
            value = row[name]
            record[name] = value.encode() if isinstance(value, str) else value
        self.rows = np.concatenate([self.rows, record])
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")  # one per process
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["campaign"] = self.campaign
            f.attrs["config"] = self.config_json
            f.create_dataset("jobs", data=self.rows)
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        os.replace(tmp, self.path)


# what a run resolves per variant: a run focused on some variants resolves only theirs
PER_VARIANT = ("image_hashes", "thresholds")
# campaign keys that do not change any row: where the rows are written, and how jobs are spread
NO_BEARING = ("output", "execution")


def merged_config(stored: dict, resolved: dict) -> dict | None:
    """The resolved configuration of a results file after a run resolved ``resolved`` on it, or
    None when that run's rows would not be comparable with the stored ones.

    The run's campaign may extend the stored one (:func:`extends`); the hardware and data must be
    the same, and so must the images and thresholds of every variant both resolved (the union of
    them is kept)."""
    resolved = json.loads(json.dumps(resolved))  # as read back: lists, string keys
    if set(stored) != set(resolved) or not extends(stored["campaign"], resolved["campaign"]):
        return None
    if any(stored[k] != resolved[k] for k in stored if k not in PER_VARIANT and k != "campaign"):
        return None
    merged = dict(resolved)
    for key in PER_VARIANT:
        old, new = stored[key], resolved[key]
        if any(old[v] != new[v] for v in set(old) & set(new)):
            return None
        merged[key] = {**old, **new}
    return merged


def extends(old: dict, new: dict) -> bool:
    """Whether campaign ``new`` (a campaign's ``to_dict``) computes every row of ``old`` as ``old``
    does: the same settings but perhaps more variants and rates (the stored variants unchanged), or
    another output folder or execution engine."""
    if set(old) != set(new):
        return False
    for key in old:
        if key in NO_BEARING:
            continue
        if key == "faults":
            if {**old[key], "rates": None} != {**new[key], "rates": None} or not set(old[key]["rates"]) <= set(
                    new[key]["rates"]):
                return False
        elif key == "variants":
            by_name = {v["name"]: v for v in new[key]}
            if any(by_name.get(v["name"]) != v for v in old[key]):
                return False
        elif old[key] != new[key]:
            return False
    return True


def read_results(path: str | os.PathLike) -> tuple[dict, np.ndarray]:
    """(resolved config, rows) of a results file."""
    path = Path(path)
    if not path.is_file():
        raise AccelSimError(f"results file {str(path)!r} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("schema") != SCHEMA:
                raise AccelSimError(f"{str(path)!r} is not an accel-sim results file")
            if not isinstance(f.get("jobs"), h5py.Dataset) or f["jobs"].dtype not in (ROW_DTYPE, _ROW_DTYPE_V1):
                raise AccelSimError(f"results file {str(path)!r} has no jobs table of the expected columns")
            if "config" not in f.attrs:
                raise AccelSimError(f"results file {str(path)!r} lacks its config attribute")
            try:
                config = json.loads(str(f.attrs["config"]))
            except json.JSONDecodeError as exc:
                raise AccelSimError(f"results file {str(path)!r}: its config attribute is not JSON ({exc})") from None
            if not isinstance(config, dict) or not isinstance(config.get("campaign"), dict):
                raise AccelSimError(f"results file {str(path)!r}: its config attribute holds no campaign")
            return config, _current_rows(f["jobs"][()])
    except OSError as exc:
        raise AccelSimError(f"results file {str(path)!r} is not a readable HDF5 file: {exc}") from None


def _current_rows(stored: np.ndarray) -> np.ndarray:
    """Rows of either schema version as :data:`ROW_DTYPE`."""
    if stored.dtype == ROW_DTYPE:
        return np.array(stored, dtype=ROW_DTYPE)
    rows = np.zeros(stored.shape, dtype=ROW_DTYPE)
    for name in stored.dtype.names:
        rows[name] = stored[name]
    rows["silent"] = stored["total"] - stored["correct"]  # version 1: nothing was flagged
    return rows


def rows_as_dicts(rows: np.ndarray) -> list[dict]:
    return [{name: (row[name].decode() if isinstance(row[name], bytes) else row[name].item())
             for name in ROW_DTYPE.names} for row in rows]


def write_csv(rows: np.ndarray, path: str | os.PathLike) -> Path:
    """The jobs table as CSV (one line per job, sorted by variant, rate, trial)."""
    path = Path(path)
    table = sorted(rows_as_dicts(rows), key=lambda r: (r["variant"], r["rate"], r["trial"]))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROW_DTYPE.names))
        writer.writeheader()
        writer.writerows(table)
    return path
