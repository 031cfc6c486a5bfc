"""Number formats of the emulated datapath: signed/unsigned fixed point and IEEE-754 float32.

A *raw word* is the integer the hardware stores: a fixed-point value ``x`` is held as
``raw = x · 2**frac_bits``, an integer of ``word_bits`` bits. Raw words travel as ``int64`` numpy
arrays (``float32`` for :class:`Float32`). Bit operations act on the word's unsigned bit pattern
(two's complement for signed formats), never through strings.

Text forms (used in configs, files and messages): ``fixed16.12`` (signed, 16-bit word, 12
fractional bits), ``ufixed8.8`` (unsigned), ``fp32``. Non-default modes are appended:
``fixed16.12/floor/wrap``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from accel_sim.errors import AccelSimError, AccelSimTypeError

ROUNDING_MODES = ("nearest_even", "nearest_up", "floor")
OVERFLOW_MODES = ("saturate", "wrap")
MIN_WORD_BITS, MAX_WORD_BITS = 2, 32
MAX_ABS_FRAC_BITS = 64


def check_mode(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise AccelSimError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class Fixed:
    """A fixed-point format: ``word_bits``-bit words with ``frac_bits`` fractional bits.

    Attributes
    ----------
    word_bits : int
        Width of the stored word, 2..32 bits.
    frac_bits : int
        Position of the binary point (may be negative or exceed ``word_bits``), -64..64.
    signed : bool
        Two's complement (True) or unsigned words.
    rounding : {"nearest_even", "nearest_up", "floor"}
        How :func:`quantize` maps a real value to the nearest representable one.
    overflow : {"saturate", "wrap"}
        What :func:`quantize` does with values outside the word's range.
    """

    word_bits: int
    frac_bits: int
    signed: bool = True
    rounding: str = "nearest_even"
    overflow: str = "saturate"

    def __post_init__(self) -> None:
        if not isinstance(self.word_bits, (int, np.integer)) or isinstance(self.word_bits, bool):
            raise AccelSimTypeError(f"word_bits must be an integer, got {type(self.word_bits).__name__}")
        if not isinstance(self.frac_bits, (int, np.integer)) or isinstance(self.frac_bits, bool):
            raise AccelSimTypeError(f"frac_bits must be an integer, got {type(self.frac_bits).__name__}")
        if not MIN_WORD_BITS <= self.word_bits <= MAX_WORD_BITS:
            raise AccelSimError(f"word_bits must lie in {MIN_WORD_BITS}..{MAX_WORD_BITS}, got {self.word_bits}")
        if abs(self.frac_bits) > MAX_ABS_FRAC_BITS:
            raise AccelSimError(f"frac_bits must lie in -{MAX_ABS_FRAC_BITS}..{MAX_ABS_FRAC_BITS}, got {self.frac_bits}")
        check_mode("rounding", self.rounding, ROUNDING_MODES)
        check_mode("overflow", self.overflow, OVERFLOW_MODES)
        object.__setattr__(self, "word_bits", int(self.word_bits))
        object.__setattr__(self, "frac_bits", int(self.frac_bits))

    @property
    def raw_min(self) -> int:
        """Smallest raw word."""
        return -(1 << (self.word_bits - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        """Largest raw word."""
        return (1 << (self.word_bits - 1)) - 1 if self.signed else (1 << self.word_bits) - 1

    @property
    def signed_width(self) -> int:
        """Bits of the narrowest two's complement word that holds every raw word (one more than
        ``word_bits`` for unsigned formats)."""
        return self.word_bits + (not self.signed)

    @property
    def is_float(self) -> bool:
        return False

    @property
    def name(self) -> str:
        """Compact text form, e.g. ``fixed16.12`` or ``ufixed8.8/floor/wrap``."""
        base = f"{'' if self.signed else 'u'}fixed{self.word_bits}.{self.frac_bits}"
        if (self.rounding, self.overflow) != (ROUNDING_MODES[0], OVERFLOW_MODES[0]):
            base += f"/{self.rounding}/{self.overflow}"
        return base

    def __str__(self) -> str:
        return self.name

    def storage_dtype(self) -> np.dtype:
        """Smallest signed integer dtype that holds every raw word."""
        for dtype in (np.int8, np.int16, np.int32, np.int64):
            info = np.iinfo(dtype)
            if info.min <= self.raw_min and self.raw_max <= info.max:
                return np.dtype(dtype)
        raise AssertionError("unreachable: words are at most 32 bits")


@dataclass(frozen=True)
class Float32:
    """IEEE-754 binary32 storage and arithmetic (the FT-ClipAct paper's setting)."""

    word_bits: int = 32

    def __post_init__(self) -> None:
        if self.word_bits != 32:
            raise AccelSimError(f"Float32.word_bits is always 32, got {self.word_bits}")

    @property
    def is_float(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return "fp32"

    def __str__(self) -> str:
        return "fp32"

    def storage_dtype(self) -> np.dtype:
        return np.dtype(np.float32)


Format = Fixed | Float32

_FIXED_RE = re.compile(r"^(u?)fixed(\d+)\.(-?\d+)(?:/([a-z_]+)/([a-z_]+))?$")


def parse_format(text: str) -> Format:
    """Parse a format's text form (``fixed16.12``, ``ufixed8.8``, ``fixed8.4/floor/wrap``, ``fp32``)."""
    if not isinstance(text, str):
        raise AccelSimTypeError(f"a number format must be given as text, got {type(text).__name__}")
    if text == "fp32":
        return Float32()
    match = _FIXED_RE.match(text)
    if not match:
        raise AccelSimError(
            f"unknown number format {text!r}; expected e.g. 'fixed16.12', 'ufixed8.8', "
            "'fixed8.4/floor/wrap' or 'fp32'"
        )
    unsigned, word, frac, rounding, overflow = match.groups()
    kwargs = {} if rounding is None else {"rounding": rounding, "overflow": overflow}
    return Fixed(int(word), int(frac), signed=not unsigned, **kwargs)


def quantize(fmt: Format, values: np.ndarray) -> np.ndarray:
    """Real values → raw words (``int64``; ``float32`` for :class:`Float32`).

    Rounds ``values · 2**frac_bits`` with ``fmt.rounding``, then saturates or wraps (two's
    complement modulo ``2**word_bits``) per ``fmt.overflow``.

    Raises
    ------
    ValueError
        On NaN (any mode) or infinity (``wrap`` mode) in a fixed-point format.
    """
    x = np.asarray(values, dtype=np.float64)
    if fmt.is_float:
        return x.astype(np.float32)
    if np.isnan(x).any():
        raise AccelSimError(f"cannot quantize NaN to {fmt.name}")
    scaled = np.ldexp(x, fmt.frac_bits)  # exact, unless the result is subnormal (far below 1/2)
    rounded = round_scaled(scaled, fmt.rounding)
    if fmt.rounding == "floor":  # a negative value that underflowed to -0.0 still floors to -1
        rounded = np.where((rounded == 0) & (x < 0), -1.0, rounded)
    if fmt.overflow == "saturate":
        return np.clip(rounded, fmt.raw_min, fmt.raw_max).astype(np.int64)
    if np.isinf(x).any():
        raise AccelSimError(f"cannot wrap an infinite value into {fmt.name}")
    # float64 holds these integers exactly, and fmod of exact integers is exact.
    wrapped = np.mod(rounded, float(1 << fmt.word_bits))
    return wrap(fmt, wrapped.astype(np.int64))


def round_scaled(scaled: np.ndarray, rounding: str) -> np.ndarray:
    """Round float64 values to integers (still float64) with the given rounding mode."""
    if rounding == "nearest_even":
        return np.rint(scaled)
    if rounding == "nearest_up":
        # not floor(x + 0.5): that sum rounds (0.49999999999999994 + 0.5 == 1.0, and an odd
        # integer above 2**52 plus 0.5 goes to the even one above); x − floor(x) is exact
        whole = np.floor(scaled)
        return whole + (scaled - whole >= 0.5)
    if rounding == "floor":
        return np.floor(scaled)
    check_mode("rounding", rounding, ROUNDING_MODES)
    raise AssertionError("unreachable")


def dequantize(fmt: Format, raw: np.ndarray) -> np.ndarray:
    """Raw words → real values (float64; float32 for :class:`Float32`)."""
    if fmt.is_float:
        return np.asarray(raw, dtype=np.float32)
    return np.ldexp(np.asarray(raw, dtype=np.float64), -fmt.frac_bits)


def saturate(fmt: Fixed, raw: np.ndarray) -> np.ndarray:
    """Clip integer words to the format's range (``int64``)."""
    return np.clip(np.asarray(raw, dtype=np.int64), fmt.raw_min, fmt.raw_max)


def wrap(fmt: Fixed, raw: np.ndarray) -> np.ndarray:
    """Reduce integers modulo ``2**word_bits`` into the format's range (two's complement)."""
    return from_bits(fmt, to_bits(fmt, raw))


def to_bits(fmt: Format, raw: np.ndarray) -> np.ndarray:
    """Raw words → their unsigned bit patterns of exactly ``word_bits`` bits (``uint64``)."""
    if fmt.is_float:
        return np.asarray(raw, dtype=np.float32).view(np.uint32).astype(np.uint64)
    mask = np.uint64((1 << fmt.word_bits) - 1)
    return np.asarray(raw, dtype=np.int64).view(np.uint64) & mask


def from_bits(fmt: Format, bits: np.ndarray) -> np.ndarray:
    """Bit patterns (only the low ``word_bits`` bits are read) → raw words."""
    bits = np.asarray(bits, dtype=np.uint64) & np.uint64((1 << fmt.word_bits) - 1)
    if fmt.is_float:
        return bits.astype(np.uint32).view(np.float32)
    raw = bits.astype(np.int64)
    if fmt.signed:
        sign = np.int64(1 << (fmt.word_bits - 1))
        raw = np.where(raw >= sign, raw - (sign << 1), raw)
    return raw


def _bit_mask(fmt: Format, bit: np.ndarray | int) -> np.ndarray:
    bit = np.asarray(bit)
    if not np.issubdtype(bit.dtype, np.integer):
        raise AccelSimTypeError(f"bit positions must be integers, got {bit.dtype}")
    if bit.size and (bit.min() < 0 or bit.max() >= fmt.word_bits):
        raise AccelSimError(f"bit positions must lie in 0..{fmt.word_bits - 1} for {fmt.name}, got {bit.min()}..{bit.max()}")
    return np.left_shift(np.uint64(1), bit.astype(np.uint64))


def flip(fmt: Format, raw: np.ndarray, bit: np.ndarray | int) -> np.ndarray:
    """Invert bit ``bit`` (0 = least significant) of each word; ``bit`` broadcasts against ``raw``."""
    return from_bits(fmt, to_bits(fmt, raw) ^ _bit_mask(fmt, bit))


def stuck_at_0(fmt: Format, raw: np.ndarray, bit: np.ndarray | int) -> np.ndarray:
    """Force bit ``bit`` of each word to 0."""
    return from_bits(fmt, to_bits(fmt, raw) & ~_bit_mask(fmt, bit))


def stuck_at_1(fmt: Format, raw: np.ndarray, bit: np.ndarray | int) -> np.ndarray:
    """Force bit ``bit`` of each word to 1."""
    return from_bits(fmt, to_bits(fmt, raw) | _bit_mask(fmt, bit))


BIT_OPERATIONS = {"flip": flip, "stuck_at_0": stuck_at_0, "stuck_at_1": stuck_at_1}


def fault_rounds(index: np.ndarray):
    """Positions into ``index`` (the word each fault hits) in rounds that touch a word at most
    once, a word's faults in their given order: applying the rounds one after another applies
    several faults on one word one after another."""
    index = np.asarray(index)
    pending = np.arange(index.size)
    while pending.size:
        _, first = np.unique(index[pending], return_index=True)
        yield pending[first]
        pending = np.delete(pending, first)
