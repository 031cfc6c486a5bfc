"""Fault-map files (HDF5) and checking a map against the image and hardware it is applied to.

Layout: root attributes ``schema = "accel-sim-faults"``, ``schema_version = 1``, the map's
provenance (``image_hash``, ``hw_hash``, ``rate``, ``seed``, ``job_key``, ``count_mode``,
``persistence``, ``description``) and one dataset per field of :class:`FaultMap` (see
:mod:`accel_sim.faults.model`), all of the map's length.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from accel_sim.attributes import integer, real, text
from accel_sim.errors import AccelSimError
from accel_sim.faults.model import FIELD_DTYPES, MODELS, SITES, FaultMap
from accel_sim.faults.sites import buffer_capacity, register_bits
from accel_sim.hardware import HardwareConfig
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.hardware.memory import stored_bits
from accel_sim.hardware.redundancy import VOTER, register_codes
from accel_sim.image import Image, WeightedLayer

SCHEMA = "accel-sim-faults"
SCHEMA_VERSION = 1
_TEXT_ATTRS = ("image_hash", "hw_hash", "job_key", "count_mode", "persistence", "description")


def write_fault_map(fmap: FaultMap, path: str | os.PathLike) -> Path:
    """Write ``fmap`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            for key, value in fmap.provenance.items():
                f.attrs[key] = value
            for name in FIELD_DTYPES:
                f.create_dataset(name, data=getattr(fmap, name))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_fault_map(path: str | os.PathLike) -> FaultMap:
    """Read a fault-map file; a truncated, foreign or malformed file is refused naming it."""
    path = Path(path)
    if not path.is_file():
        raise AccelSimError(f"fault map {str(path)!r} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("schema") != SCHEMA:
                raise AccelSimError(f"fault map {str(path)!r} is not an accel-sim fault map (no schema={SCHEMA!r})")
            version = integer(f.attrs.get("schema_version", -1), f"fault map {str(path)!r}: attribute schema_version")
            if version > SCHEMA_VERSION or version < 1:
                raise AccelSimError(f"fault map {str(path)!r} has schema version {version}; this accel-sim reads "
                                    f"versions 1..{SCHEMA_VERSION}")
            for key in ("image_hash", "hw_hash"):  # without them a map could be applied anywhere
                if not text(f.attrs.get(key, ""), f"fault map {str(path)!r}: attribute {key}"):
                    raise AccelSimError(f"fault map {str(path)!r} lacks its {key} attribute: it cannot be checked "
                                        "against the image and hardware it is applied to")
            missing = [name for name in FIELD_DTYPES if name not in f]
            if missing:
                raise AccelSimError(f"fault map {str(path)!r} lacks the dataset(s) {', '.join(missing)}")
            arrays = {name: _dataset(f, name, path) for name in FIELD_DTYPES}
            meta = {key: text(f.attrs.get(key, ""), f"fault map {str(path)!r}: attribute {key}") for key in _TEXT_ATTRS}
            meta["rate"] = real(f.attrs.get("rate", 0.0), f"fault map {str(path)!r}: attribute rate")
            meta["seed"] = integer(f.attrs.get("seed", 0), f"fault map {str(path)!r}: attribute seed")
    except OSError as exc:
        raise AccelSimError(f"fault map {str(path)!r} is not a readable HDF5 file (truncated or corrupt?): {exc}") from None
    try:
        fmap = FaultMap(**arrays, **meta)
    except ValueError as exc:
        raise AccelSimError(f"fault map {str(path)!r}: {exc}") from None
    check_fields(fmap, f"fault map {str(path)!r}")
    return fmap


def check_fields(fmap: FaultMap, where: str = "fault map") -> None:
    """Refuse codes out of range and fields set where a fault's site does not read them (each is
    -1 there, see :mod:`accel_sim.faults.model`), whatever image the map is applied to."""
    if not len(fmap):
        return
    _check(np.isin(fmap.site, range(len(SITES))), fmap, "site", "is not a known site code (0..3)", where)
    _check(np.isin(fmap.model, range(len(MODELS))), fmap, "model", "is not a known fault model code (0..2)", where)
    _check(fmap.bit >= 0, fmap, "bit", "is negative", where)
    _check(fmap.image >= -1, fmap, "image", "is below -1", where)
    _check(fmap.layer >= -1, fmap, "layer", "is below -1", where)
    memory, pe = fmap.site == SITES.index("weight_memory"), fmap.site == SITES.index("pe")
    transient_pe = pe & (fmap.image >= 0)
    rules = (
        ("tensor", np.where(memory, np.isin(fmap.tensor, (0, 1)), fmap.tensor == -1), "must be 0 or 1 for weight "
         "memory and -1 elsewhere"),
        ("index", np.where(pe, fmap.index == -1, fmap.index >= 0), "must be >= 0 for memories and buffers, -1 for PEs"),
        ("row", np.where(pe, fmap.row >= 0, fmap.row == -1), "must be >= 0 for PEs and -1 elsewhere"),
        ("col", np.where(pe, fmap.col >= 0, fmap.col == -1), "must be >= 0 for PEs and -1 elsewhere"),
        ("register", np.where(pe, np.isin(fmap.register, register_codes("tmr")), fmap.register == -1),
         f"must be 0..8 or {VOTER} (TMR replicas and voter) for PEs and -1 elsewhere"),
        ("access", np.where(transient_pe, fmap.access >= -1, fmap.access == -1),
         "must be -1 except for transient PE faults"),
        ("layer", ~memory | (fmap.layer >= 0), "must name a layer for weight-memory faults"),
    )
    for name, ok, problem in rules:
        _check(ok, fmap, name, problem, where)


def _dataset(f: h5py.File, name: str, path: Path) -> np.ndarray:
    node = f[name]
    if not isinstance(node, h5py.Dataset):
        raise AccelSimError(f"fault map {str(path)!r}: {name} must be a dataset")
    data = node[()]
    if not isinstance(data, np.ndarray) or data.ndim != 1:
        raise AccelSimError(f"fault map {str(path)!r}: dataset {name} must be one-dimensional, got shape "
                            f"{np.shape(data)}")
    return data


def check_fault_map(fmap: FaultMap, image: Image, hw: HardwareConfig, n_images: int | None = None,
                    where: str = "fault map") -> None:
    """Refuse a map drawn for another image or hardware, or holding an impossible fault."""
    if fmap.image_hash and fmap.image_hash != image.content_hash():
        raise AccelSimError(f"{where} was drawn for another image (image hash {fmap.image_hash[:12]}…, this image "
                         f"{image.content_hash()[:12]}…)")
    if fmap.hw_hash and fmap.hw_hash != hw.config_hash():
        raise AccelSimError(f"{where} was drawn for another hardware config (hash {fmap.hw_hash[:12]}…, "
                         f"{hw.name} is {hw.config_hash()[:12]}…)")
    if not len(fmap):
        return
    check_fields(fmap, where)
    if n_images is not None:
        _check(fmap.image < n_images, fmap, "image", f"is beyond the {n_images} images of the run", where)
    layer_ok = (fmap.layer == -1) | np.isin(fmap.layer, [i for i, l in enumerate(image.layers)
                                                         if isinstance(l, WeightedLayer)])
    _check(layer_ok, fmap, "layer", "is not a conv2d/linear layer of the image", where)
    for code, site in enumerate(SITES):
        sel = fmap.site == code
        if not sel.any():
            continue
        sub = fmap.select(sel)
        if site == "weight_memory":
            _check_weight_memory(sub, image, hw, where)
        elif site == "pe":
            widths = register_bits(image, hw)
            _check((sub.row >= 0) & (sub.row < hw.rows) & (sub.col >= 0) & (sub.col < hw.cols), sub, "row/col",
                   f"lies outside the {hw.rows}x{hw.cols} array", where)
            _check(np.isin(sub.register, list(widths)), sub, "register",
                   f"is not a PE register of {hw.name} (pe_redundancy {hw.pe_redundancy!r})", where)
            limit = np.array([widths.get(int(r), 0) for r in sub.register])
            _check(sub.bit < limit, sub, "bit", "is not below the register's width", where)
            transient = sub.select(sub.image >= 0)
            _check(transient.layer >= 0, transient, "layer", "must name the layer of a transient PE fault", where)
            macs = np.array([gemm_shape(image.layers[int(i)]).macs for i in transient.layer], dtype=np.int64)
            _check((transient.access >= -1) & (transient.access < macs), transient, "access",
                   "is not a MAC of its layer (0..M·K·N - 1, or -1 for an idle PE)", where)
        else:
            capacity, bits = buffer_capacity(image, hw, site)
            _check((sub.index >= 0) & (sub.index < capacity), sub, "index",
                   f"is an address beyond the {site} ({capacity} words)", where)
            _check(sub.bit < bits, sub, "bit", f"is not below the {bits}-bit word of the {site}", where)


def _check_weight_memory(sub: FaultMap, image: Image, hw: HardwareConfig, where: str) -> None:
    _check(sub.layer >= 0, sub, "layer", "must name a layer for weight-memory faults", where)
    for i in np.unique(sub.layer):
        layer = image.layers[int(i)]
        part = sub.select(sub.layer == i)
        _check(np.isin(part.tensor, (0, 1)), part, "tensor", "must be 0 (weight) or 1 (bias)", where)
        size = np.where(part.tensor == 0, layer.weight.size, layer.bias.size)
        width = np.where(part.tensor == 0, stored_bits(layer.weight_format.word_bits, hw),
                         stored_bits(layer.bias_format.word_bits, hw))  # code words under ECC
        _check((part.index >= 0) & (part.index < size), part, "index", f"is beyond layer {int(i)}'s tensor", where)
        _check(part.bit < width, part, "bit", f"is not below the word width of layer {int(i)}", where)


def _check(ok: np.ndarray, fmap: FaultMap, name: str, problem: str, where: str) -> None:
    bad = np.nonzero(~np.asarray(ok))[0]
    if bad.size:
        i = int(bad[0])
        value = (int(fmap.row[i]), int(fmap.col[i])) if name == "row/col" else getattr(fmap, name)[i]
        raise AccelSimError(f"{where}: fault {i} ({SITES[fmap.site[i]] if 0 <= fmap.site[i] < 4 else '?'}) "
                         f"{name} {value} {problem}")
