"""Fault maps: the explicit list of faults of one faulty run, struct-of-arrays.

Every fault is one row across the arrays of :class:`FaultMap`:

============  =========  ==================================================================
field         dtype      meaning
============  =========  ==================================================================
``site``      int8       0 ``weight_memory``, 1 ``weight_buffer``, 2 ``activation_buffer``, 3 ``pe``
``layer``     int32      index in ``image.layers`` (weight memory; transient faults); -1 = all
``tensor``    int8       weight memory: 0 weight, 1 bias; -1 otherwise
``index``     int64      weight memory: flat element index; buffers: address (word); -1 for PEs
``row``       int32      PE row; -1 otherwise
``col``       int32      PE column; -1 otherwise
``register``  int8       PE: 0 weight register, 1 product, 2 partial-sum output (TMR: plus
                         3 · replica, or 9 the voter); -1 otherwise
``bit``       int16      bit position, 0 = least significant, in the word or register
``model``     int8       0 ``flip``, 1 ``stuck_at_0``, 2 ``stuck_at_1``
``image``     int32      -1 permanent (every image); else the one image of a transient fault
``access``    int64      transient PE fault: the MAC, ``(pixel · K + k) · N + n`` of that layer
                         for that image; -1 otherwise
============  =========  ==================================================================

A map also records how it was drawn (rate, seed, job key, count mode) and the SHA-256 of the
image's content and the hardware config it was drawn for; applying it elsewhere is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.hardware.redundancy import PE_REGISTERS, register_name

SITES = ("weight_memory", "weight_buffer", "activation_buffer", "pe")
MODELS = ("flip", "stuck_at_0", "stuck_at_1")
REGISTERS = PE_REGISTERS + ("voter",)  # the kinds of PE register (a TMR voter's output too)
PERSISTENCE = ("permanent", "transient")
COUNT_MODES = ("binomial", "exact")

FIELD_DTYPES = {
    "site": np.int8, "layer": np.int32, "tensor": np.int8, "index": np.int64, "row": np.int32,
    "col": np.int32, "register": np.int8, "bit": np.int16, "model": np.int8, "image": np.int32,
    "access": np.int64,
}


@dataclass(frozen=True)
class FaultMap:
    """Faults as parallel arrays (see the module docstring) plus their provenance."""

    site: np.ndarray
    layer: np.ndarray
    tensor: np.ndarray
    index: np.ndarray
    row: np.ndarray
    col: np.ndarray
    register: np.ndarray
    bit: np.ndarray
    model: np.ndarray
    image: np.ndarray
    access: np.ndarray
    image_hash: str = ""
    hw_hash: str = ""
    rate: float = 0.0
    seed: int = 0
    job_key: str = ""
    count_mode: str = "binomial"
    persistence: str = "permanent"
    description: str = field(default="")

    def __post_init__(self) -> None:
        sizes = set()
        for name, dtype in FIELD_DTYPES.items():
            raw = np.asarray(getattr(self, name)).reshape(-1)
            if raw.size and not (np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_):
                raise AccelSimError(f"fault map field {name} must hold integers, got {raw.dtype}")
            info = np.iinfo(dtype)
            if raw.size and (int(raw.min()) < info.min or int(raw.max()) > info.max):
                bad = raw[(raw < info.min) | (raw > info.max)][0]
                raise AccelSimError(f"fault map field {name} holds {int(bad)}, outside the range of its "
                                    f"{np.dtype(dtype).name} field ({info.min}..{info.max})")
            arr = np.array(raw, dtype=dtype)  # checked above: the cast keeps every value
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
            sizes.add(arr.size)
        if len(sizes) > 1:
            raise AccelSimError(f"fault map fields have different lengths: {sorted(sizes)}")

    def __len__(self) -> int:
        return int(self.site.size)

    @staticmethod
    def empty(**attrs) -> "FaultMap":
        return FaultMap(**{name: np.zeros(0, dtype) for name, dtype in FIELD_DTYPES.items()}, **attrs)

    @staticmethod
    def concat(maps: list["FaultMap"], **attrs) -> "FaultMap":
        arrays = {name: np.concatenate([getattr(m, name) for m in maps]) if maps else np.zeros(0, dtype)
                  for name, dtype in FIELD_DTYPES.items()}
        return FaultMap(**arrays, **attrs)

    def select(self, mask: np.ndarray) -> "FaultMap":
        """The faults where ``mask`` is true, same provenance."""
        selected = object.__new__(FaultMap)  # the arrays are checked already: skip __post_init__'s copies
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in FIELD_DTYPES:
                value = value[mask]
                value.flags.writeable = False
            object.__setattr__(selected, f.name, value)
        return selected

    def with_image(self, image: int) -> "FaultMap":
        """The same faults, all hitting image ``image`` (-1: every image)."""
        arrays = {name: getattr(self, name) for name in FIELD_DTYPES}
        arrays["image"] = np.full(len(self), image)
        return FaultMap(**arrays, **self.provenance)

    def of_site(self, site: str) -> "FaultMap":
        return self.select(self.site == SITES.index(site))

    @property
    def provenance(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in FIELD_DTYPES}

    def rows(self) -> list[dict]:
        """One readable dict per fault (for ``accel-sim faults show``)."""
        out = []
        for i in range(len(self)):
            out.append({
                "site": SITES[self.site[i]], "layer": int(self.layer[i]),
                "tensor": {0: "weight", 1: "bias"}.get(int(self.tensor[i]), ""),
                "index": int(self.index[i]), "row": int(self.row[i]), "col": int(self.col[i]),
                "register": register_name(self.register[i]) if self.register[i] >= 0 else "",
                "bit": int(self.bit[i]), "model": MODELS[self.model[i]], "image": int(self.image[i]),
                "access": int(self.access[i]),
            })
        return out
