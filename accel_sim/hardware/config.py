"""The emulated accelerator's configuration, and loading it from TOML files or built-in presets.

The built-in presets are package data (``accel_sim/hardware/presets/*.toml``), found with
:mod:`importlib.resources`, so they work from an installed wheel as from a checkout.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from accel_sim.errors import AccelSimError, AccelSimTypeError
from accel_sim.hardware.dataflows import DATAFLOWS
from accel_sim.hardware.ecc import ECC_MODES
from accel_sim.hardware.redundancy import DMR_MISMATCH_ACTIONS, PE_REDUNDANCY_MODES
from accel_sim.numerics import OVERFLOW_MODES, ROUNDING_MODES, Datapath
from accel_sim.numerics.formats import check_mode

_OPTIONS_OFF = {"memory_ecc": "none", "pe_redundancy": "none", "dmr_mismatch": "flag"}  # options whose "off" value is left out of to_dict and the hash
MAX_ARRAY_SIDE = 4096
MAX_BUFFER_KIB = 2**20


@dataclass(frozen=True)
class HardwareConfig:
    """A systolic-array accelerator.

    Attributes
    ----------
    name : str
        A short name for reports.
    rows, cols : int
        Processing elements (PEs) of the array, 1..4096 each.
    dataflow : str
        A dataflow name (:mod:`accel_sim.hardware.dataflows`): ``ws``, weight-stationary
        (window × filters on rows × cols, output pixels stream), or ``os``, output-stationary
        (output pixels × filters on rows × cols, the window streams).
    weight_bits, act_bits : int
        Widest weight and activation words the multipliers take (bits); images with narrower
        words run unchanged.
    acc_bits : int
        Accumulator (and in-array partial-sum) width in bits; at least ``weight_bits + act_bits``.
    overflow : {"saturate", "wrap"}
        Accumulator overflow mode.
    rounding : {"nearest_even", "nearest_up", "floor"}
        Rounding of the activation unit's rescaling shift.
    weight_buffer_kib, activation_buffer_kib : float
        On-chip SRAM sizes in KiB; each must hold at least one array tile (rows × cols words).
    description : str
        What the preset imitates.
    memory_ecc : {"none", "secded"}
        Error correction on the weight memory and both buffers: ``secded`` stores each word as an
        extended Hamming code word (:mod:`accel_sim.hardware.ecc`; a 16-bit word takes 22 bits,
        so a buffer of the same KiB holds fewer cells); faults are drawn over code words, single
        errors are corrected and double errors detected (the word reads as 0).
    pe_redundancy : {"none", "dmr", "tmr"}
        ``dmr``: every PE is two replicas and a comparator that flags an image when their partial
        sums differ; ``tmr``: three replicas and a bitwise majority voter
        (:mod:`accel_sim.hardware.redundancy`). PE faults may hit any replica's registers and
        the voter's output.
    dmr_mismatch : {"flag", "recompute"}
        What a DMR mismatch does: ``flag`` keeps the result and flags the image; ``recompute``
        runs a flagged image again (transient faults do not recur) and keeps the second run.
    """

    name: str
    rows: int
    cols: int
    dataflow: str = "ws"
    weight_bits: int = 16
    act_bits: int = 16
    acc_bits: int = 48
    overflow: str = "saturate"
    rounding: str = "nearest_even"
    weight_buffer_kib: float = 64.0
    activation_buffer_kib: float = 64.0
    description: str = ""
    memory_ecc: str = "none"
    pe_redundancy: str = "none"
    dmr_mismatch: str = "flag"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = {"str": str, "int": int, "float": (int, float)}[f.type]
            if not isinstance(value, expected) or isinstance(value, bool):
                raise AccelSimTypeError(f"hardware field {f.name} must be {f.type}, got {type(value).__name__} {value!r}")
            if f.type == "float":
                object.__setattr__(self, f.name, float(value))  # 64 and 64.0 are the same size
        for side in ("rows", "cols"):
            if not 1 <= getattr(self, side) <= MAX_ARRAY_SIDE:
                raise AccelSimError(f"hardware field {side} must lie in 1..{MAX_ARRAY_SIDE}, got {getattr(self, side)}")
        check_mode("hardware field dataflow", self.dataflow, DATAFLOWS)
        check_mode("hardware field overflow", self.overflow, OVERFLOW_MODES)
        check_mode("hardware field rounding", self.rounding, ROUNDING_MODES)
        check_mode("hardware field memory_ecc", self.memory_ecc, ECC_MODES)
        check_mode("hardware field pe_redundancy", self.pe_redundancy, PE_REDUNDANCY_MODES)
        check_mode("hardware field dmr_mismatch", self.dmr_mismatch, DMR_MISMATCH_ACTIONS)
        if self.dmr_mismatch != "flag" and self.pe_redundancy != "dmr":
            raise AccelSimError(f"hardware field dmr_mismatch is {self.dmr_mismatch!r}, but pe_redundancy is "
                                f"{self.pe_redundancy!r}: a mismatch action needs pe_redundancy = \"dmr\"")
        for width in ("weight_bits", "act_bits"):
            if not 2 <= getattr(self, width) <= 32:
                raise AccelSimError(f"hardware field {width} must lie in 2..32, got {getattr(self, width)}")
        if not self.weight_bits + self.act_bits <= self.acc_bits <= 64:
            raise AccelSimError(
                f"hardware field acc_bits ({self.acc_bits}) must lie in {self.weight_bits + self.act_bits}..64: "
                f"an accumulator narrower than a product of {self.weight_bits}-bit weights and "
                f"{self.act_bits}-bit activations cannot hold it"
            )
        for buf, bits in (("weight_buffer_kib", self.weight_bits), ("activation_buffer_kib", self.act_bits)):
            size = getattr(self, buf)
            if not math.isfinite(size) or size > MAX_BUFFER_KIB:
                raise AccelSimError(f"hardware field {buf} must be a finite size of at most {MAX_BUFFER_KIB} KiB "
                                    f"(1 GiB), got {size!r}")
            if not size > 0 or self.buffer_words(size, bits) < self.rows * self.cols:
                raise AccelSimError(
                    f"hardware field {buf} ({size} KiB) is smaller than one {self.rows}x{self.cols} array tile "
                    f"of {bits}-bit words ({self.rows * self.cols * bits / 8192:g} KiB)"
                )

    @staticmethod
    def buffer_words(kib: float, word_bits: int) -> int:
        """Words of ``word_bits`` bits in a buffer of ``kib`` KiB."""
        return int(kib * 1024 * 8) // word_bits

    @property
    def datapath(self) -> Datapath:
        return Datapath(self.acc_bits, self.overflow, self.rounding)

    def to_dict(self) -> dict:
        """The fields, less options that are off (``memory_ecc``, ``pe_redundancy`` = ``"none"``,
        ``dmr_mismatch`` = ``"flag"``): a config reads and hashes as it did before such an option
        existed, so earlier results and maps still match."""
        return {k: v for k, v in asdict(self).items() if _OPTIONS_OFF.get(k, object()) != v}

    def config_hash(self) -> str:
        """SHA-256 of everything but the name and description (what changes results)."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()

    def check_image_fits(self, weight_bits: int, act_bits: int) -> None:
        """Refuse an image whose words are wider than the multipliers."""
        if weight_bits > self.weight_bits or act_bits > self.act_bits:
            raise AccelSimError(
                f"the image has {weight_bits}-bit weights and {act_bits}-bit activations; hardware {self.name} "
                f"multiplies at most {self.weight_bits}-bit weights and {self.act_bits}-bit activations"
            )


def preset_names() -> list[str]:
    """Names of the built-in hardware presets (``edge16``, ``edge16-os``, ...)."""
    folder = importlib.resources.files("accel_sim.hardware") / "presets"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_preset(name: str) -> HardwareConfig:
    """A built-in hardware preset by name (see :func:`preset_names`)."""
    if name not in preset_names():
        raise AccelSimError(f"unknown hardware preset {name!r}; built-in presets: {', '.join(preset_names())}")
    text = (importlib.resources.files("accel_sim.hardware") / "presets" / f"{name}.toml").read_text()
    return hardware_from_dict(tomllib.loads(text), f"preset {name}", name)


def load_hardware(path_or_preset: str | os.PathLike) -> HardwareConfig:
    """Read a hardware file (TOML, one table ``[hardware]``; unknown keys are refused), or a
    built-in preset when given a bare preset name (no ``.toml`` suffix) that is not a file."""
    text = os.fspath(path_or_preset)
    if not text.endswith(".toml") and not Path(text).exists() and text in preset_names():
        return load_preset(text)
    path = Path(text)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        hint = f" and names no built-in preset ({', '.join(preset_names())})" if not text.endswith(".toml") else ""
        raise AccelSimError(f"hardware file {text!r} does not exist{hint}") from None
    except IsADirectoryError:
        raise AccelSimError(f"hardware file {text!r} is a directory") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AccelSimError(f"hardware file {str(path)!r} is not valid TOML: {exc}") from None
    return hardware_from_dict(data, str(path))


def hardware_from_dict(data: dict, where: str, default_name: str | None = None) -> HardwareConfig:
    """Build a config from a parsed TOML document ``{"hardware": {...}}`` (``name`` defaults to
    ``default_name``, else the stem of ``where``)."""
    extra = sorted(set(data) - {"hardware"})
    if extra or not isinstance(data.get("hardware"), dict):
        raise AccelSimError(f"{where}: expected a single [hardware] table, found {', '.join(extra) or 'none'}")
    table = dict(data["hardware"])
    known = {f.name for f in fields(HardwareConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise AccelSimError(f"{where}: unknown key {unknown[0]!r} in [hardware]; known keys: {', '.join(sorted(known))}")
    table.setdefault("name", default_name or Path(where).stem)
    try:
        return HardwareConfig(**table)
    except TypeError as exc:
        if "missing" in str(exc):
            raise AccelSimError(f"{where}: [hardware] lacks a required key ({exc})") from None
        raise AccelSimTypeError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise AccelSimError(f"{where}: {exc}") from None
