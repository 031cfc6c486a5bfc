"""Number formats, bit operations and datapath arithmetic against plain definitions."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numba import njit

from accel_sim.numerics import (
    Datapath,
    Fixed,
    Float32,
    apply_activation,
    dequantize,
    flip,
    frac_bits_for,
    from_bits,
    parse_format,
    quantize,
    requantize,
    saturate,
    shift_round,
    stuck_at_0,
    stuck_at_1,
    threshold_to_acc,
    to_bits,
    wrap,
)
from accel_sim.hardware.int8_kernels import ROUNDING_CODES, _shift_round
from accel_sim.image.reference import accumulate

word_bits = st.integers(2, 32)
frac_bits = st.integers(-8, 40)
rounding = st.sampled_from(["nearest_even", "nearest_up", "floor"])
overflow = st.sampled_from(["saturate", "wrap"])


@st.composite
def fixed_formats(draw, signed=None):
    return Fixed(draw(word_bits), draw(frac_bits), draw(st.booleans()) if signed is None else signed,
                 draw(rounding), draw(overflow))


@st.composite
def format_and_raw(draw, size=20):
    fmt = draw(fixed_formats())
    raw = draw(st.lists(st.integers(fmt.raw_min, fmt.raw_max), min_size=1, max_size=size))
    return fmt, np.array(raw, dtype=np.int64)


def plain_round(value: Fraction, mode: str) -> int:
    """Rounding of an exact rational, written from the definitions."""
    floor = math.floor(value)
    rest = value - floor
    if mode == "floor":
        return floor
    if mode == "nearest_up":
        return floor + (1 if rest >= Fraction(1, 2) else 0)
    if rest != Fraction(1, 2):
        return floor + (1 if rest > Fraction(1, 2) else 0)
    return floor + (floor % 2)  # a tie goes to the even neighbour


def plain_quantize(fmt: Fixed, x: float) -> int:
    """``clip(round(x·2^f), min, max)`` (saturate) or two's complement wrap, on exact rationals."""
    r = plain_round(Fraction(x) * Fraction(2) ** fmt.frac_bits, fmt.rounding)
    if fmt.overflow == "saturate":
        return min(max(r, fmt.raw_min), fmt.raw_max)
    m = r % (1 << fmt.word_bits)
    return m - (1 << fmt.word_bits) if fmt.signed and m >= 1 << (fmt.word_bits - 1) else m


@settings(max_examples=300, deadline=None)
@given(format_and_raw())
def test_round_trip_raw_bits_raw_and_real_is_exact(case):
    fmt, raw = case
    bits = to_bits(fmt, raw)
    assert bits.dtype == np.uint64 and int(bits.max()) < (1 << fmt.word_bits)
    np.testing.assert_array_equal(from_bits(fmt, bits), raw)
    np.testing.assert_array_equal(quantize(fmt, dequantize(fmt, raw)), raw)


@settings(max_examples=300, deadline=None)
@given(fixed_formats(), st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20))
def test_quantize_agrees_with_plain_definition(fmt, values):
    got = quantize(fmt, np.array(values))
    assert got.dtype == np.int64
    assert got.tolist() == [plain_quantize(fmt, v) for v in values]


@pytest.mark.parametrize("fmt, value", [
    (Fixed(8, 0, rounding="nearest_up"), 0.49999999999999994),  # + 0.5 would round up to 1.0
    (Fixed(8, 0, rounding="nearest_up"), -0.49999999999999994),
    (Fixed(2, 33, signed=False, rounding="nearest_up", overflow="wrap"), 524288.7223788378),  # scaled above 2**52
    (Fixed(8, 0, rounding="nearest_up", overflow="wrap"), 2.0**52 + 1),
])
def test_nearest_up_is_exact_where_adding_a_half_would_round(fmt, value):
    assert quantize(fmt, np.array([value])).tolist() == [plain_quantize(fmt, value)]


@settings(max_examples=200, deadline=None)
@given(format_and_raw(), st.data())
def test_flip_twice_is_identity_and_changes_one_bit(case, data):
    fmt, raw = case
    bit = data.draw(st.integers(0, fmt.word_bits - 1))
    once = flip(fmt, raw, bit)
    np.testing.assert_array_equal(flip(fmt, once, bit), raw)
    changed = to_bits(fmt, once) ^ to_bits(fmt, raw)
    assert (changed == np.uint64(1 << bit)).all()
    assert ((once >= fmt.raw_min) & (once <= fmt.raw_max)).all()


@settings(max_examples=200, deadline=None)
@given(format_and_raw(), st.data())
def test_stuck_at_is_idempotent_and_sets_the_bit(case, data):
    fmt, raw = case
    bits = np.array(data.draw(st.lists(st.integers(0, fmt.word_bits - 1), min_size=len(raw), max_size=len(raw))))
    for op, value in ((stuck_at_0, 0), (stuck_at_1, 1)):
        once = op(fmt, raw, bits)
        np.testing.assert_array_equal(op(fmt, once, bits), once)
        assert (((to_bits(fmt, once) >> bits.astype(np.uint64)) & np.uint64(1)) == value).all()


@settings(max_examples=200, deadline=None)
@given(fixed_formats(), st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=20))
def test_saturate_stays_in_range_and_wrap_is_modular(fmt, values):
    v = np.array(values, dtype=np.int64)
    sat = saturate(fmt, v)
    assert ((sat >= fmt.raw_min) & (sat <= fmt.raw_max)).all()
    assert sat.tolist() == [min(max(x, fmt.raw_min), fmt.raw_max) for x in values]
    modulus = 1 << fmt.word_bits
    offset = (1 << (fmt.word_bits - 1)) if fmt.signed else 0
    assert wrap(fmt, v).tolist() == [((x + offset) % modulus) - offset for x in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=20), st.integers(0, 31))
def test_float32_bits_round_trip_and_double_flip(values, bit):
    fmt = Float32()
    raw = quantize(fmt, np.array(values, dtype=np.float32))
    np.testing.assert_array_equal(from_bits(fmt, to_bits(fmt, raw)).view(np.uint32), raw.view(np.uint32))
    np.testing.assert_array_equal(flip(fmt, flip(fmt, raw, bit), bit).view(np.uint32), raw.view(np.uint32))


def test_float32_exponent_flip_makes_huge_or_nonfinite_values():
    one = np.array([1.0], dtype=np.float32)
    assert flip(Float32(), one, 30)[0] == np.inf  # 1.0 = 0x3F800000; bit 30 set gives 0x7F800000
    assert np.isnan(stuck_at_1(Float32(), np.array([np.inf], np.float32), 0))[0]
    assert flip(Float32(), np.array([0.5], np.float32), 30)[0] == np.float32(2.0**127)


def test_quantize_refuses_nan_and_infinite_wrap():
    with pytest.raises(ValueError, match="NaN"):
        quantize(Fixed(8, 4), np.array([np.nan]))
    with pytest.raises(ValueError, match="infinite"):
        quantize(Fixed(8, 4, overflow="wrap"), np.array([np.inf]))
    assert quantize(Fixed(8, 4), np.array([np.inf, -np.inf])).tolist() == [127, -128]


@pytest.mark.parametrize("kwargs, match", [
    (dict(word_bits=1, frac_bits=0), "word_bits"), (dict(word_bits=33, frac_bits=0), "word_bits"),
    (dict(word_bits=0, frac_bits=0), "word_bits"), (dict(word_bits=8, frac_bits=65), "frac_bits"),
    (dict(word_bits=8, frac_bits=4, rounding="up"), "rounding"), (dict(word_bits=8, frac_bits=4, overflow="clip"), "overflow"),
])
def test_format_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Fixed(**kwargs)
    with pytest.raises(TypeError, match="word_bits"):
        Fixed(8.0, 4)


@given(fixed_formats())
def test_text_form_round_trips(fmt):
    assert parse_format(fmt.name) == fmt


def test_text_forms_and_bad_text():
    assert parse_format("fixed16.12") == Fixed(16, 12)
    assert parse_format("ufixed8.8") == Fixed(8, 8, signed=False)
    assert parse_format("fp32") == Float32()
    assert str(Fixed(8, 4, rounding="floor", overflow="wrap")) == "fixed8.4/floor/wrap"
    for bad in ("fixed", "fixed16", "float16", "fixed16.12/up/wrap", "fixed40.3"):
        with pytest.raises(ValueError):
            parse_format(bad)


def test_bit_positions_are_checked():
    with pytest.raises(ValueError, match="bit positions must lie in 0..7"):
        flip(Fixed(8, 4), np.array([1]), 8)
    with pytest.raises(TypeError):
        flip(Fixed(8, 4), np.array([1]), np.array([1.0]))


def test_storage_dtype_is_smallest_signed_fit():
    assert Fixed(8, 4).storage_dtype() == np.int8
    assert Fixed(8, 4, signed=False).storage_dtype() == np.int16
    assert Fixed(16, 4).storage_dtype() == np.int16
    assert Fixed(17, 4).storage_dtype() == np.int32
    assert Fixed(32, 4, signed=False).storage_dtype() == np.int64


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 1e6), st.integers(2, 32))
def test_frac_bits_for_is_the_largest_that_does_not_saturate(max_abs, bits):
    f = frac_bits_for(max_abs, bits)
    fmt, finer = Fixed(bits, f), Fixed(bits, f + 1)
    assert quantize(fmt, np.array([max_abs]))[0] == plain_round(Fraction(max_abs) * Fraction(2) ** f, "nearest_even")
    assert plain_round(Fraction(max_abs) * Fraction(2) ** f, "nearest_even") <= fmt.raw_max
    assert plain_round(Fraction(max_abs) * Fraction(2) ** (f + 1), "nearest_even") > finer.raw_max


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=10), st.integers(-20, 70), rounding)
@example([2**62, 2**62 + 1, -(2**62), -(2**62) - 1, 2**63 - 1, -(2**63)], 63, "nearest_even")
@example([2**62, 2**62 + 1, -(2**62), -(2**62) - 1, 2**63 - 1, -(2**63)], 63, "nearest_up")
@example([2**63 - 1, -(2**63)], 64, "floor")
def test_shift_round_matches_exact_rational_rounding(values, shift, mode):
    got = shift_round(np.array(values, dtype=np.int64), shift, mode)
    if shift <= 0:
        limit = 1 << max(0, 62 + shift)
        expected = [min(max(v, -limit), limit) << -shift for v in values]
    else:
        expected = [plain_round(Fraction(v, 1 << shift), mode) for v in values]
    assert got.tolist() == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=10), st.integers(1, 70), rounding, st.booleans())
@example([2**62, 2**62 + 1, -(2**62), 2**63 - 1, -(2**63)], 63, "nearest_even", False)
def test_fused_epilogue_rounding_matches_shift_round(values, shift, mode, ties):
    """The int8 path's inline rounding (branch-free) against :func:`shift_round`, ties included."""
    if ties and shift < 63:  # exactly halfway between two multiples of 2**shift
        values = [max(-(2**63), min(2**63 - 1, (v >> shift << shift) + (1 << (shift - 1)))) for v in values]
    got = _fused_rounding(np.array(values, dtype=np.int64), shift, ROUNDING_CODES[mode])
    assert got.tolist() == shift_round(np.array(values, dtype=np.int64), shift, mode).tolist()


@njit
def _fused_rounding(values, shift, code):
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = _shift_round(values[i], shift, code)
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=10), st.integers(0, 30), fixed_formats(signed=True))
def test_requantize_saturates_into_the_output_word(values, acc_frac, out):
    got = requantize(np.array(values, dtype=np.int64), acc_frac, out, "nearest_even")
    assert ((got >= out.raw_min) & (got <= out.raw_max)).all()


def test_activation_unit_in_accumulator_domain():
    acc = np.array([-5, 0, 3, 10, 11, 1000])
    assert apply_activation(acc, "relu", None).tolist() == [0, 0, 3, 10, 11, 1000]
    assert apply_activation(acc, "clipact", 10).tolist() == [0, 0, 3, 10, 0, 0]
    assert apply_activation(acc, "clamp", 10).tolist() == [0, 0, 3, 10, 10, 10]
    assert apply_activation(acc, "none", None).tolist() == acc.tolist()
    assert threshold_to_acc(1.5, 4) == 24 and threshold_to_acc(1.49, 4) == 23


@settings(max_examples=100, deadline=None)
@given(st.integers(8, 64), overflow, st.data())
def test_accumulate_matches_sequential_python(acc_bits, mode, data):
    dp = Datapath(acc_bits, mode)
    m, k, n = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 4))
    lim = 1 << min(31, acc_bits // 2)
    a = np.array(data.draw(st.lists(st.integers(-lim, lim - 1), min_size=m * k, max_size=m * k))).reshape(m, k)
    b = np.array(data.draw(st.lists(st.integers(-lim, lim - 1), min_size=k * n, max_size=k * n))).reshape(k, n)
    got = accumulate(a, b, dp)
    for i in range(m):
        for j in range(n):
            acc = 0
            for t in range(k):
                acc += int(a[i, t]) * int(b[t, j])
                if mode == "saturate":
                    acc = min(max(acc, dp.acc_min), dp.acc_max)
                else:
                    acc = ((acc - dp.acc_min) % (1 << acc_bits)) + dp.acc_min
            assert got[i, j] == acc


def test_datapath_validation():
    with pytest.raises(ValueError, match="acc_bits"):
        Datapath(65)
    with pytest.raises(ValueError, match="overflow"):
        Datapath(32, "clip")
    with pytest.raises(ValueError, match="narrower than a product"):
        Datapath(16).check_operands(8, 9, 16, "layer x")
    with pytest.raises(ValueError, match="bias at the accumulator's scale"):
        Datapath(40).check_operands(16, 16, 48, "layer x")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=8),
       st.integers(4, 64), st.sampled_from(["saturate", "wrap"]))
def test_accumulator_addition_is_exact_at_every_width(pairs, bits, overflow):
    dp = Datapath(bits, overflow)
    acc = [min(max(a, dp.acc_min), dp.acc_max) for a, _ in pairs]
    values = [min(max(b, dp.acc_min), dp.acc_max) for _, b in pairs]
    got = dp.add(np.array(acc, np.int64), np.array(values, np.int64)).tolist()
    if overflow == "saturate":
        expected = [min(max(a + b, dp.acc_min), dp.acc_max) for a, b in zip(acc, values)]
    else:
        expected = [(a + b - dp.acc_min) % 2**bits + dp.acc_min for a, b in zip(acc, values)]
    assert got == expected


def test_huge_threshold_clips_nothing_instead_of_overflowing():
    from accel_sim.numerics import threshold_to_acc

    top = np.iinfo(np.int64).max
    assert threshold_to_acc(1e308, 20) == top and threshold_to_acc(2.0**70, 0) == top
    assert threshold_to_acc(1.5, 4) == 24


def test_floor_of_a_negative_value_that_underflows_is_minus_one():
    fmt = Fixed(2, -1, rounding="floor")  # found by hypothesis: ldexp(-5e-324, -1) is -0.0
    assert quantize(fmt, np.array([-5e-324, 5e-324, -0.0])).tolist() == [-1, 0, 0]
