"""The arithmetic of the datapath behind the MAC array: accumulator, activation unit, rescaling.

These are the integer operations of the numeric contract (``docs/image-format.md``), vectorised
over numpy ``int64`` arrays. Accumulator values are integers at the scale ``f_w + f_a_in`` of the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel_sim.errors import AccelSimError, AccelSimTypeError
from accel_sim.numerics.formats import OVERFLOW_MODES, ROUNDING_MODES, Fixed, check_mode

ACTIVATIONS = ("none", "relu", "clipact", "clamp")
EXACT_LIMIT = 2.0**53  # float64 holds every integer of smaller magnitude
MARGIN = 1 - 2.0**-40  # float64 bounds are computed with rounding: stay clear of a limit by this factor
MAX_ACC_BITS = 64


@dataclass(frozen=True)
class Datapath:
    """Accumulator width and the modes of the arithmetic after the multipliers.

    Attributes
    ----------
    acc_bits : int
        Accumulator width in bits (4..64); at least the sum of the operand widths, checked where a
        layer is run.
    overflow : {"saturate", "wrap"}
        What the accumulator does when a sum leaves its range.
    rounding : {"nearest_even", "nearest_up", "floor"}
        How the activation unit rounds when it shifts an accumulator value to the next layer's
        activation format.
    """

    acc_bits: int = 32
    overflow: str = "saturate"
    rounding: str = "nearest_even"

    def __post_init__(self) -> None:
        if not isinstance(self.acc_bits, int) or isinstance(self.acc_bits, bool):
            raise AccelSimTypeError(f"acc_bits must be an integer, got {type(self.acc_bits).__name__}")
        if not 4 <= self.acc_bits <= MAX_ACC_BITS:
            raise AccelSimError(f"acc_bits must lie in 4..{MAX_ACC_BITS}, got {self.acc_bits}")
        check_mode("overflow", self.overflow, OVERFLOW_MODES)
        check_mode("rounding", self.rounding, ROUNDING_MODES)

    @property
    def acc_min(self) -> int:
        return -(1 << (self.acc_bits - 1))

    @property
    def acc_max(self) -> int:
        return (1 << (self.acc_bits - 1)) - 1

    def check_operands(self, weight_bits: int, act_bits: int, bias_bits: int, where: str) -> None:
        """Refuse an accumulator narrower than one product of the given operand widths, or than the
        bias as it enters the accumulator (``bias_bits``: its word plus its shift to the
        accumulator's scale)."""
        if self.acc_bits < weight_bits + act_bits:
            raise AccelSimError(
                f"acc_bits {self.acc_bits} is narrower than a product of {weight_bits}-bit weights and "
                f"{act_bits}-bit activations ({weight_bits + act_bits} bits) in {where}"
            )
        if self.acc_bits < bias_bits:
            raise AccelSimError(f"acc_bits {self.acc_bits} is narrower than the bias at the accumulator's scale "
                                f"({bias_bits} bits) in {where}")

    def overflow_acc(self, values: np.ndarray) -> np.ndarray:
        """Apply the accumulator's overflow mode to integers that may lie outside its range.

        Exact for inputs that are the true values modulo 2**64 in ``wrap`` mode, or the true values
        in ``saturate`` mode.
        """
        values = np.asarray(values, dtype=np.int64)
        if self.overflow == "saturate":
            return np.clip(values, self.acc_min, self.acc_max)
        if self.acc_bits == 64:
            return values
        shift = np.int64(64 - self.acc_bits)
        return (values << shift) >> shift  # sign-extend the low acc_bits bits

    def add(self, acc: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``acc + values`` through the accumulator's overflow mode, exact for any ``int64``
        operands in the accumulator's range (also at 64 bits, where the sum can leave int64)."""
        acc, values = np.asarray(acc, dtype=np.int64), np.asarray(values, dtype=np.int64)
        with np.errstate(over="ignore"):
            total = acc + values  # modulo 2**64
        if self.overflow == "wrap":
            return self.overflow_acc(total)
        # the int64 sum overflowed where the operands share a sign that the sum lacks
        overflowed = ((acc ^ total) & (values ^ total)) < 0
        total = np.where(overflowed, np.where(values > 0, self.acc_max, self.acc_min), total)
        return np.clip(total, self.acc_min, self.acc_max)


def threshold_to_acc(threshold: float, acc_frac_bits: int) -> int:
    """The largest accumulator integer ``v`` with ``v · 2**-acc_frac_bits <= threshold``.

    Comparing integers with it is exactly the comparison of real values with ``threshold``.
    """
    if not np.isfinite(threshold) or threshold < 0:
        raise AccelSimError(f"activation threshold must be a finite number >= 0, got {threshold!r}")
    with np.errstate(over="ignore"):  # an infinite product is handled below
        scaled = np.floor(np.ldexp(np.float64(threshold), acc_frac_bits))
    limit = np.iinfo(np.int64).max  # above every accumulator: the unit then clips nothing
    return limit if not np.isfinite(scaled) or scaled >= limit else int(scaled)


def apply_activation(acc: np.ndarray, kind: str, threshold_acc: int | None) -> np.ndarray:
    """The activation unit on accumulator integers: none, relu, clipact or clamp."""
    acc = np.asarray(acc, dtype=np.int64)
    if kind == "none":
        return acc
    if kind == "relu":
        return np.maximum(acc, 0)
    if threshold_acc is None:
        raise AccelSimError(f"activation {kind!r} needs a threshold")
    if kind == "clipact":
        return np.where((acc >= 0) & (acc <= threshold_acc), acc, 0)
    if kind == "clamp":
        return np.clip(acc, 0, threshold_acc)
    check_mode("activation", kind, ACTIVATIONS)
    raise AssertionError("unreachable")


def apply_activation_float(x: np.ndarray, kind: str, threshold: float | None) -> np.ndarray:
    """The activation unit in float32: NaN stays NaN through relu and clamp, clipact maps it to 0."""
    x = np.asarray(x, dtype=np.float32)
    if kind == "none":
        return x
    if kind == "relu":
        return np.maximum(x, np.float32(0))
    if threshold is None:
        raise AccelSimError(f"activation {kind!r} needs a threshold")
    t = np.float32(threshold)
    if kind == "clipact":
        return np.where((x >= 0) & (x <= t), x, np.float32(0)).astype(np.float32)
    if kind == "clamp":
        return np.minimum(np.maximum(x, np.float32(0)), t)
    check_mode("activation", kind, ACTIVATIONS)
    raise AssertionError("unreachable")


def shift_round(values: np.ndarray, shift: int, rounding: str) -> np.ndarray:
    """Exact ``values / 2**shift`` rounded to integers (``shift <= 0`` multiplies).

    Left shifts first clip to ±2**62 >> -shift, far outside any activation word, so that the
    following saturation gives the same result without int64 overflow.
    """
    v = np.asarray(values, dtype=np.int64)
    if shift <= 0:
        limit = np.int64(1 << max(0, 62 + shift))
        return np.clip(v, -limit, limit) << np.int64(-shift)
    if shift >= 64:  # |v / 2**shift| < 1/2: floor gives 0 or -1, the nearest modes 0
        return np.where(v < 0, -1, 0).astype(np.int64) if rounding == "floor" else np.zeros_like(v)
    s = np.int64(shift)
    if rounding == "floor":
        return v >> s
    check_mode("rounding", rounding, ROUNDING_MODES)
    half = np.int64(1) << (s - 1)
    quotient = v >> s  # floor
    remainder = v - (quotient << s)  # in [0, 2**shift): exact, although quotient << 63 wraps
    if rounding == "nearest_up":
        round_up = remainder >= half
    else:
        round_up = (remainder > half) | ((remainder == half) & ((quotient & 1) == 1))
    return quotient + round_up.astype(np.int64)


def requantize(acc: np.ndarray, acc_frac_bits: int, out: Fixed, rounding: str) -> np.ndarray:
    """Accumulator integers → words of ``out``: shift to ``out.frac_bits`` with ``rounding``, saturate."""
    shifted = shift_round(acc, acc_frac_bits - out.frac_bits, rounding)
    return np.clip(shifted, out.raw_min, out.raw_max)
