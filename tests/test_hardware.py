"""The emulated array against the golden reference; configs; mapping; cycle model."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from accel_sim.cli import main
from accel_sim.data import load_bundled_sample
from accel_sim.hardware import (
    Accelerator,
    HardwareConfig,
    PeFaults,
    hardware_from_dict,
    load_hardware,
    load_preset,
    preset_names,
)
from accel_sim.hardware import wide_gemm
from accel_sim.hardware.compute import WeightPatch, prepare_layer, run_layer, weighted_accumulators
from accel_sim.hardware.cycles import layer_cycles
from accel_sim.faults import draw_fault_map, run_with_faults
from accel_sim.faults.draw import DrawSpec
from accel_sim.hardware.dataflows import Dataflow, get_dataflow, register_dataflow
from accel_sim.hardware.memory import activation_stream
from accel_sim.hardware.redundancy import replicas
from accel_sim.hardware.lowering import GemmShape, gemm_shape
from accel_sim.image import Conv2d, Linear
from accel_sim.numerics import Fixed, Float32
from accel_sim.image.hdf5 import write_image
from accel_sim.image.records import conv_output_hw
from accel_sim.image.reference import reference_layer, run_reference
from pathlib import Path

from tests import pe_reference

PRESETS = Path(__file__).resolve().parents[1] / "accel_sim" / "hardware" / "presets"
ARRAYS = [(16, 16), (3, 5), (7, 2), (1, 1), (32, 8)]


@st.composite
def random_layer(draw, max_bits=16, unsigned=False):
    """A random conv2d or linear layer with random formats (words of 4..``max_bits`` bits, unsigned
    activations when ``unsigned``), activation, bias shift and raw words."""
    w_bits, a_bits = draw(st.integers(4, max_bits)), draw(st.integers(4, max_bits))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w_fmt = Fixed(w_bits, draw(st.integers(0, w_bits)))
    signed = not (unsigned and draw(st.booleans()))
    in_fmt = Fixed(a_bits, draw(st.integers(0, a_bits)), signed=signed)
    acc_frac = w_fmt.frac_bits + in_fmt.frac_bits
    last = draw(st.booleans())
    out_fmt = None if last else Fixed(a_bits, draw(st.integers(0, a_bits + 4)), signed=signed)
    activation = "none" if last else draw(st.sampled_from(["none", "relu", "clipact", "clamp"]))
    threshold = draw(st.floats(0, 8)) if activation in ("clipact", "clamp") else None
    bias_fmt = Fixed(min(32, w_bits + a_bits), acc_frac - draw(st.sampled_from([0, 0, 1, 5])))
    out_ch = draw(st.integers(1, 9))
    extremes = draw(st.booleans())
    if draw(st.booleans()):
        features = draw(st.integers(1, 40))
        weight = _words(rng, w_fmt, (out_ch, features), extremes)
        bias = rng.integers(bias_fmt.raw_min // 4, bias_fmt.raw_max // 4, out_ch)
        layer = Linear("fc", (features,), (out_ch,), weight, bias, w_fmt, bias_fmt, in_fmt, out_fmt, activation, threshold)
    else:
        c, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        oh, ow = conv_output_hw(h, w, (kh, kw), stride, padding)
        if oh < 1 or ow < 1:
            padding = (kh, kw)
            oh, ow = conv_output_hw(h, w, (kh, kw), stride, padding)
        weight = _words(rng, w_fmt, (out_ch, c, kh, kw), extremes)
        bias = rng.integers(bias_fmt.raw_min // 4, bias_fmt.raw_max // 4, out_ch)
        layer = Conv2d("conv", (c, h, w), (out_ch, oh, ow), weight, bias, w_fmt, bias_fmt, in_fmt, out_fmt,
                       activation, threshold, stride=stride, padding=padding)
    x = _words(rng, in_fmt, (draw(st.integers(1, 3)), *layer.in_shape), extremes)
    return layer, x


def _words(rng, fmt, shape, extremes):
    """Random raw words of ``fmt``; with ``extremes``, mostly its largest and smallest words (sums
    that saturate, products past 2**53)."""
    words = rng.integers(fmt.raw_min, fmt.raw_max + 1, shape, dtype=np.int64)
    if extremes:
        pick = rng.integers(0, 3, shape)
        words = np.where(pick == 0, fmt.raw_min, np.where(pick == 1, fmt.raw_max, words))
    return words


def _layer_hardware(layer, dataflow, array, overflow, acc_bits, rounding):
    """A hardware config whose multipliers take the layer's words and whose accumulator has at
    least ``acc_bits`` bits (more where a product or the shifted bias needs them)."""
    w_bits, a_bits = layer.weight_format.word_bits, layer.in_format.word_bits
    acc_bits = max(acc_bits, w_bits + a_bits, layer.bias_acc_bits)
    return HardwareConfig("t", *array, dataflow=dataflow, weight_bits=w_bits, act_bits=a_bits, acc_bits=acc_bits,
                          overflow=overflow, rounding=rounding, weight_buffer_kib=2048, activation_buffer_kib=2048)


@settings(max_examples=250, deadline=None)
@given(random_layer(), st.sampled_from(["ws", "os"]), st.sampled_from(ARRAYS), st.sampled_from(["saturate", "wrap"]),
       st.sampled_from([32, 40, 64]), st.sampled_from(["nearest_even", "nearest_up", "floor"]))
def test_random_layers_equal_reference(case, dataflow, array, overflow, acc_bits, rounding):
    layer, x = case
    hw = _layer_hardware(layer, dataflow, array, overflow, acc_bits, rounding)
    expected = reference_layer(layer, x, hw.datapath)
    prepared = prepare_layer(layer)
    for engine in ("fast", "faithful"):
        got = run_layer(layer, prepared, torch.from_numpy(x).double(), hw, engine)
        np.testing.assert_array_equal(got.numpy().astype(np.int64), expected, err_msg=engine)


@settings(max_examples=200, deadline=None)
@given(random_layer(max_bits=32, unsigned=True), st.sampled_from(["ws", "os"]), st.sampled_from(ARRAYS),
       st.sampled_from(["saturate", "wrap"]), st.sampled_from([48, 53, 54, 64]),
       st.sampled_from(["nearest_even", "nearest_up", "floor"]))
def test_wide_and_unsigned_words_equal_reference(case, dataflow, array, overflow, acc_bits, rounding):
    """Words of up to 32 bits (products past 2**53, 64-bit accumulators that saturate or wrap) and
    unsigned activations: fast == faithful == golden, bit for bit."""
    layer, x = case
    hw = _layer_hardware(layer, dataflow, array, overflow, acc_bits, rounding)
    expected = reference_layer(layer, x, hw.datapath)
    prepared = prepare_layer(layer)
    wide_logits = hw.acc_bits > 53 and layer.out_format is None
    for engine in ("fast", "faithful"):
        got = run_layer(layer, prepared, torch.from_numpy(x).double(), hw, engine)
        assert got.dtype == (torch.int64 if wide_logits else torch.float64), engine
        np.testing.assert_array_equal(got.numpy().astype(np.int64), expected, err_msg=engine)


def test_unsigned_word_times_one_is_the_word():
    """An unsigned 8-bit input word 200 times weight 1 is 200 (not -56 as an int8 digit)."""
    layer = Linear("fc", (1,), (1,), np.array([[1]]), np.array([0]), Fixed(8, 0), Fixed(16, 0),
                   Fixed(8, 0, signed=False), None)
    hw = HardwareConfig("t", 4, 4, weight_bits=8, act_bits=8, acc_bits=32)
    for engine in ("fast", "faithful"):
        got = run_layer(layer, prepare_layer(layer), torch.tensor([[200.0]], dtype=torch.float64), hw, engine)
        assert got.tolist() == [[200.0]], engine


def test_largest_32_bit_product_is_exact():
    """(2**31 - 1)**2 = 2**62 - 2**32 + 1 lies past float64's integers and 2·(-2**31)**2 past
    int64: they come out exactly, the second saturated at the top of a 64-bit accumulator."""
    word, top = Fixed(32, 0), 2**31
    weight = np.array([[top - 1, 0], [-top, -top]])
    layer = Linear("fc", (2,), (2,), weight, np.array([0, 0]), word, word, word, None)
    hw = HardwareConfig("t", 2, 2, weight_bits=32, act_bits=32, acc_bits=64)
    x = np.array([[top - 1, 7], [-top, -top]])
    exact = [[sum(int(w) * int(a) for w, a in zip(row, image)) for row in weight] for image in x]
    expected = [[min(max(v, -(2**63)), 2**63 - 1) for v in row] for row in exact]
    assert expected[0][0] == (top - 1) ** 2 and expected[1][1] == 2**63 - 1 != exact[1][1]
    assert reference_layer(layer, x, hw.datapath).tolist() == expected
    for engine in ("fast", "faithful"):
        got = run_layer(layer, prepare_layer(layer), torch.from_numpy(x).double(), hw, engine)
        assert got.tolist() == expected, engine


@st.composite
def pe_fault_table(draw, hw, layer, batch):
    """1–4 PE faults on random PEs, registers, bits and models; some transient (one MAC)."""
    depth, filters = gemm_shape(layer).k, layer.out_channels
    pixels = 1 if isinstance(layer, Linear) else layer.out_shape[1] * layer.out_shape[2]
    widths = (layer.weight_format.word_bits, layer.weight_format.word_bits + layer.in_format.word_bits,
              hw.datapath.acc_bits)
    faults = []
    for _ in range(draw(st.integers(1, 4))):
        register = draw(st.integers(0, 2))
        mac = -1 if draw(st.booleans()) else draw(st.integers(0, batch * pixels * depth * filters - 1))
        faults.append((draw(st.integers(0, hw.rows - 1)), draw(st.integers(0, hw.cols - 1)), register,
                       draw(st.integers(0, widths[register] - 1)), draw(st.integers(0, 2)), mac))
    return PeFaults.build(hw.rows, hw.cols, *(np.array(v) for v in zip(*faults)))


@settings(max_examples=150, deadline=None)
@given(random_layer(), st.sampled_from(["ws", "os"]), st.sampled_from(ARRAYS), st.sampled_from(["saturate", "wrap"]),
       st.sampled_from([32, 40, 48, 64]), st.data())
def test_pe_faults_on_fast_path_equal_faithful_kernel(case, dataflow, array, overflow, acc_bits, data):
    """The fast path's faulty-column kernel (and its fallbacks) against the faithful kernel."""
    layer, x = case
    hw = HardwareConfig("t", *array, dataflow=dataflow, acc_bits=acc_bits, overflow=overflow,
                        weight_buffer_kib=2048, activation_buffer_kib=2048)
    faults = data.draw(pe_fault_table(hw, layer, x.shape[0]))
    prepared = prepare_layer(layer)
    fast, faithful = (run_layer(layer, prepared, torch.from_numpy(x).double(), hw, engine, faults)
                      for engine in ("fast", "faithful"))
    np.testing.assert_array_equal(fast.numpy(), faithful.numpy())


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_register_faults_use_the_correction_and_equal_faithful_kernel(dataflow, overflow, monkeypatch):
    """Weight- and product-register faults only: the fast path adds corrections to the clean sums
    (OS weight registers: computes the PE's outputs with its faulty weights; product faults
    below the sign bit: int32 lanes)."""
    from accel_sim.hardware import column_kernels, product_lanes
    from accel_sim.hardware.pe_faults import os_weight_gemm

    rng = np.random.default_rng(5)
    layer = Conv2d("conv", (20, 6, 6), (24, 6, 6), rng.integers(-2**15, 2**15, (24, 20, 3, 3)), np.zeros(24, np.int64),
                   Fixed(16, 12), Fixed(32, 20), Fixed(16, 8), None, "none", None, padding=(1, 1))
    x = rng.integers(-2**15, 2**15, (2, 20, 6, 6))
    x[0, :, :3] = 0  # zero activations take the constant-term shortcut
    hw = HardwareConfig("t", 8, 5, dataflow=dataflow, acc_bits=48, overflow=overflow)
    register = [1, 1, 1] if dataflow == "ws" else [1, 0, 1]  # a WS weight register is folded into the weights
    faults = PeFaults.build(8, 5, [3, 6, 6], [2, 2, 4], register, [31, 4, 14], [0, 2, 1], [-1, -1, -1])
    calls = []
    for module, name in ((column_kernels, "register_fault_corrections"), (os_weight_gemm, "faulty_weight_accumulators"),
                         (product_lanes, "product_fault_corrections")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, original=original, name=name: calls.append(name) or original(*a))
    prepared = prepare_layer(layer)
    fast, faithful = (run_layer(layer, prepared, torch.from_numpy(x).double(), hw, engine, faults)
                      for engine in ("fast", "faithful"))
    np.testing.assert_array_equal(fast.numpy(), faithful.numpy())
    # the product's sign bit (PE (3, 2)) needs int64; the weight's bit 4 and the product's bit 14 run
    # in int32 lanes (under WS the two faults of column 2 share one int64 pass)
    assert sorted(calls) == (["product_fault_corrections", "register_fault_corrections"] if dataflow == "ws" else
                             ["product_fault_corrections"] * 2 + ["register_fault_corrections"])
    assert not np.array_equal(fast.numpy(), run_layer(layer, prepared, torch.from_numpy(x).double(), hw, "fast").numpy())


def _calls_while_fast_equals_faithful(layer, x, hw, faults, module, name) -> int:
    """:func:`_calls_recorded_while_fast_equals_faithful`, also checking that the faults change
    the output; returns how often the fast path called ``module.name``."""
    calls, fast = _calls_recorded_while_fast_equals_faithful(layer, x, hw, faults, module, name)
    clean = run_layer(layer, prepare_layer(layer), torch.from_numpy(x).double(), hw, "fast")
    assert not np.array_equal(fast.numpy(), clean.numpy())
    return len(calls)


@pytest.mark.parametrize("overflow, acc_bits", [("wrap", 32), ("saturate", 48)])
@pytest.mark.parametrize("model", [0, 1, 2])
def test_os_weight_register_faults_run_as_int8_gemm_and_equal_faithful_kernel(overflow, acc_bits, model):
    """OS faults in weight registers alone that int32 lanes cannot follow (a 16-bit weight's sign
    bit: a change per MAC up to 2**31): the PE's outputs from an int8 GEMM of its rows with its
    faulty weights, also with sums that wrap a 32-bit accumulator."""
    from accel_sim.hardware.pe_faults import os_weight_gemm

    rng = np.random.default_rng(7)
    layer = Conv2d("conv", (20, 6, 6), (24, 6, 6), rng.integers(-2**15, 2**15, (24, 20, 3, 3)), np.zeros(24, np.int64),
                   Fixed(16, 12), Fixed(32, 20), Fixed(16, 8), None, "none", None, padding=(1, 1))
    x = rng.integers(-2**15, 2**15, (2, 20, 6, 6))
    hw = HardwareConfig("t", 8, 5, dataflow="os", acc_bits=acc_bits, overflow=overflow)
    faults = PeFaults.build(8, 5, [3, 6, 6], [2, 4, 4], [0, 0, 0], [15, 15, 3], [model, model, 0], [-1, -1, -1])
    assert _calls_while_fast_equals_faithful(layer, x, hw, faults, os_weight_gemm, "faulty_weight_accumulators") == 2


def _conv_3x3_on_7x7(rng, stride):
    """A 20 → 9 channel 3×3 conv (padding 1) of full-range 16-bit words and three 7×7 inputs."""
    layer = Conv2d("conv", (20, 7, 7), (9, *conv_output_hw(7, 7, (3, 3), (stride, stride), (1, 1))),
                   rng.integers(-2**15, 2**15, (9, 20, 3, 3)), np.zeros(9, np.int64), Fixed(16, 12), Fixed(32, 20),
                   Fixed(16, 8), None, "none", None, stride=(stride, stride), padding=(1, 1))
    return layer, rng.integers(-2**15, 2**15, (3, 20, 7, 7))


@pytest.mark.parametrize("overflow, acc_bits, stride, bits, registers", [
    ("saturate", 48, 1, [30, 30], [2, 2]),  # int32 lanes, psum faults only
    ("saturate", 48, 2, [40, 3], [2, 1]),  # float64 lanes, strided, a product fault beside
    ("wrap", 32, 1, [29, 15], [2, 0]),  # a wrapping 32-bit accumulator, a weight fault beside
])
def test_ws_partial_sum_faults_use_the_correction_and_equal_faithful_kernel(overflow, acc_bits, stride, bits,
                                                                            registers, monkeypatch):
    """WS partial-sum faults below the sign bit: the fast path follows the faulty running sums in
    int32 or float64 lanes and adds the difference to the clean sums."""
    from accel_sim.hardware import lane_kernels

    layer, x = _conv_3x3_on_7x7(np.random.default_rng(6), stride)
    hw = HardwareConfig("t", 8, 5, dataflow="ws", acc_bits=acc_bits, overflow=overflow)
    faults = PeFaults.build(8, 5, [3, 6], [2, 2], registers, bits, [0, 2], [-1, -1])
    calls = []
    original = lane_kernels.partial_sum_corrections
    monkeypatch.setattr(lane_kernels, "partial_sum_corrections",
                        lambda x, images, channels, offset, wp, lane_type, *a:
                        calls.append(lane_type.dtype) or original(x, images, channels, offset, wp, lane_type, *a))
    prepared = prepare_layer(layer)
    fast, faithful = (run_layer(layer, prepared, torch.from_numpy(x).double(), hw, engine, faults)
                      for engine in ("fast", "faithful"))
    np.testing.assert_array_equal(fast.numpy(), faithful.numpy())
    assert calls == [np.int32 if max(bits) < 31 else np.float64]
    assert not np.array_equal(fast.numpy(), run_layer(layer, prepared, torch.from_numpy(x).double(), hw, "fast").numpy())


@pytest.mark.parametrize("overflow, acc_bits, stride, bits, models, lanes", [
    ("saturate", 48, 1, [30, 30], [0, 0], True),  # two faulty PEs, both in int32 lanes
    ("saturate", 48, 2, [0, 12], [1, 2], True),  # strided, stuck-at on low bits
    ("wrap", 32, 1, [29, 5], [0, 1], True),  # a wrapping 32-bit accumulator
    ("saturate", 48, 1, [31, 30], [0, 0], False),  # bit 31 is beyond int32 lanes: the int64 kernel
])
def test_os_partial_sum_faults_use_the_correction_and_equal_faithful_kernel(overflow, acc_bits, stride, bits, models,
                                                                            lanes):
    """OS faults in partial-sum registers alone, below bit 31: the fast path follows the PE's
    faulty running sums in int32 lanes and adds the difference to the clean sums."""
    from accel_sim.hardware import product_lanes

    layer, x = _conv_3x3_on_7x7(np.random.default_rng(8), stride)
    hw = HardwareConfig("t", 4, 5, dataflow="os", acc_bits=acc_bits, overflow=overflow)
    faults = PeFaults.build(4, 5, [1, 2], [2, 3], [2, 2], bits, models, [-1, -1])
    assert _calls_while_fast_equals_faithful(layer, x, hw, faults, product_lanes,
                                             "partial_sum_fault_corrections") == (2 if lanes else 1)


def test_product_lanes_with_every_row_of_a_column_faulty_equal_faithful_kernel():
    """WS product faults in every row of a column: the fault points are every MAC, but grouped by
    row (k ≡ 0 first, then k ≡ 1, …), so their weights must be taken in that order."""
    from accel_sim.hardware import product_lanes

    layer, x = _conv_3x3_on_7x7(np.random.default_rng(9), 1)
    hw = HardwareConfig("t", 2, 3, dataflow="ws", acc_bits=48)
    faults = PeFaults.build(2, 3, [0, 1], [1, 1], [1, 1], [14, 22], [0, 0], [-1, -1])
    calls, _ = _calls_recorded_while_fast_equals_faithful(layer, x, hw, faults, product_lanes,
                                                          "product_fault_corrections")
    assert len(calls) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 6), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
       st.integers(1, 40), st.integers(2, 7), st.sampled_from(["ws", "os"]), st.sampled_from([8, 16]), st.data())
def test_product_lanes_equal_faithful_kernel(channels, size, kernel, stride, pad, images, rows, dataflow, word_bits,
                                             data):
    """Weight- and product-register faults (below the product's sign bit) in int32 lanes over the
    images: both dataflows, one or two faulty PEs in a column (WS) or two faults in one PE (OS),
    padding, zero activations, batches that fill part of a vector, 16-bit products (sign-extended
    in int32): equal to the faithful kernel, and really used."""
    from accel_sim.hardware import product_lanes

    assume(size + 2 * pad >= kernel)  # a window must fit the padded image
    oh = conv_output_hw(size, size, (kernel, kernel), (stride, stride), (pad, pad))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    filters = data.draw(st.integers(2, 40))  # up to 20 in the faulty column: tasks of 8 filters and the rest
    half = 2 ** (word_bits - 1)
    weights = rng.integers(-half, half, (filters, channels, kernel, kernel))
    layer = Conv2d("conv", (channels, size, size), (filters, *oh), weights, np.zeros(filters, np.int64),
                   Fixed(word_bits, word_bits // 2), Fixed(32, 2 * (word_bits // 2)), Fixed(word_bits, word_bits // 2), None, "none", None,
                   stride=(stride, stride), padding=(pad, pad))
    x = rng.integers(-half, half, (images, channels, size, size)) * (rng.random((images, channels, size, size)) < 0.7)
    hw = HardwareConfig("t", rows, 2, dataflow=dataflow, acc_bits=48, overflow=data.draw(st.sampled_from(["saturate", "wrap"])))
    count = data.draw(st.integers(1, 2))
    pe_rows = (data.draw(st.lists(st.integers(0, rows - 1), min_size=count, max_size=count, unique=True))
               if dataflow == "ws" else [data.draw(st.integers(0, rows - 1))] * count)
    # bits within 9 of each other (their count fits int32); a change per MAC below 2**31: 16-bit
    # weights keep below bit 14, 8-bit ones may have their sign bit changed
    low = data.draw(st.integers(0, 2 * word_bits - 11))
    bits = data.draw(st.lists(st.integers(low, low + 8), min_size=count, max_size=count, unique=True))
    top_weight_bit = 13 if word_bits == 16 else word_bits - 1
    registers = [data.draw(st.integers(0, 1)) if bit <= top_weight_bit else 1 for bit in bits]
    models = data.draw(st.lists(st.integers(0, 2), min_size=count, max_size=count))
    if word_bits == 8:  # a fault beyond the 16-bit product (a wider layer's bit) must change nothing
        pe_rows, registers = [*pe_rows, pe_rows[0]], [*registers, 1]
        bits, models = [*bits, data.draw(st.integers(16, 31))], [*models, data.draw(st.integers(0, 2))]
    faults = PeFaults.build(rows, 2, pe_rows, [1] * len(bits), registers, bits, models, [-1] * len(bits))
    calls, _ = _calls_recorded_while_fast_equals_faithful(layer, x, hw, faults, product_lanes,
                                                          "product_fault_corrections")
    os_pixels = oh[0] * oh[1] > pe_rows[0]  # under OS the PE may have no pixel
    assert len(calls) == (1 if dataflow == "ws" or os_pixels else 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 6), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
       st.integers(1, 40), st.integers(2, 7), st.sampled_from([("saturate", 48), ("wrap", 32), ("wrap", 48)]),
       st.data())
def test_os_partial_sum_lanes_equal_faithful_kernel(channels, size, kernel, stride, pad, images, rows, accumulator,
                                                    data):
    """OS partial-sum faults (one or two in one PE, bits below 31) in int32 lanes over the images:
    padding (every MAC a fault point, zero activations too), batches that fill part of a vector,
    tasks of 8 filters and the rest, wrapping and saturating accumulators: equal to the faithful
    kernel, and really used."""
    from accel_sim.hardware import product_lanes

    assume(size + 2 * pad >= kernel)  # a window must fit the padded image
    oh = conv_output_hw(size, size, (kernel, kernel), (stride, stride), (pad, pad))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    filters = data.draw(st.integers(2, 40))
    layer = Conv2d("conv", (channels, size, size), (filters, *oh), rng.integers(-2**15, 2**15, (filters, channels, kernel,
                   kernel)), np.zeros(filters, np.int64), Fixed(16, 12), Fixed(32, 20), Fixed(16, 8), None, "none",
                   None, stride=(stride, stride), padding=(pad, pad))
    x = rng.integers(-2**15, 2**15, (images, channels, size, size)) * (rng.random((images, channels, size, size)) < 0.7)
    hw = HardwareConfig("t", rows, 2, dataflow="os", acc_bits=accumulator[1], overflow=accumulator[0])
    count = data.draw(st.integers(1, 2))
    low = data.draw(st.integers(0, 22))  # bits within 9 of each other: K changes fit int32 lanes
    bits = data.draw(st.lists(st.integers(low, min(low + 8, 30)), min_size=count, max_size=count, unique=True))
    models = data.draw(st.lists(st.integers(0, 2), min_size=count, max_size=count))
    pe_row = data.draw(st.integers(0, rows - 1))
    faults = PeFaults.build(rows, 2, [pe_row] * count, [1] * count, [2] * count, bits, models, [-1] * count)
    calls, _ = _calls_recorded_while_fast_equals_faithful(layer, x, hw, faults, product_lanes,
                                                          "partial_sum_fault_corrections")
    assert len(calls) == int(oh[0] * oh[1] > pe_row)  # the PE may have no pixel


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 6), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
       st.integers(1, 40), st.integers(2, 7), st.booleans(), st.data())
def test_partial_sum_lanes_equal_faithful_kernel(channels, size, kernel, stride, pad, images, rows, register_fault,
                                                 data):
    """The lane kernel on odd and even channel counts, runs that start and end inside a channel
    pair, batches that fill part of a vector step, int32 and float64 lanes, with and without a
    weight or product fault in the column, 1–6 filters in the faulty column (blocks of four and
    the filters left over): equal to the faithful kernel, and really used."""
    from accel_sim.hardware import lane_kernels

    assume(size + 2 * pad >= kernel)  # a window must fit the padded image
    oh = conv_output_hw(size, size, (kernel, kernel), (stride, stride), (pad, pad))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    filters = data.draw(st.integers(2, 13))
    weights = rng.integers(-2**15, 2**15, (filters, channels, kernel, kernel))
    layer = Conv2d("conv", (channels, size, size), (filters, *oh), weights, np.zeros(filters, np.int64), Fixed(16, 12),
                   Fixed(32, 20), Fixed(16, 8), None, "none", None, stride=(stride, stride), padding=(pad, pad))
    x = rng.integers(-2**15, 2**15, (images, channels, size, size))
    overflow = data.draw(st.sampled_from(["saturate", "wrap"]))
    hw = HardwareConfig("t", rows, 2, dataflow="ws", acc_bits=48, overflow=overflow)
    points = data.draw(st.lists(st.tuples(st.integers(0, rows - 1), st.integers(0, 40)), min_size=1, max_size=2,
                                unique=True))  # (row, bit): a repeated flip undoes itself; bit 40 cannot saturate
    fault_rows, bits = [r for r, _ in points], [b for _, b in points]
    models = data.draw(st.lists(st.integers(0, 2), min_size=len(points), max_size=len(points)))
    registers = [2] * len(points)
    if register_fault:
        fault_rows.append(data.draw(st.integers(0, rows - 1)))
        registers.append(data.draw(st.integers(0, 1)))
        bits.append(data.draw(st.integers(0, 15 if registers[-1] == 0 else 31)))
        models.append(data.draw(st.integers(0, 2)))
    faults = PeFaults.build(rows, 2, fault_rows, [1] * len(bits), registers, bits, models, [-1] * len(bits))
    calls, _ = _calls_recorded_while_fast_equals_faithful(layer, x, hw, faults, lane_kernels, "partial_sum_corrections")
    assert len(calls) == 1
    # fault rows of one parity (even channel and row counts) pair the channels from r + 1 on
    parities = {(r + 1) % 2 for r in fault_rows}
    one_parity = len(parities) == 1 and channels % 2 == 0 and rows % 2 == 0
    assert calls[0][3] == (parities.pop() if one_parity else 0)


def _calls_recorded_while_fast_equals_faithful(layer, x, hw, faults, module, name) -> tuple[list[tuple], torch.Tensor]:
    """Run the faulty layer on both engines, check they agree, and return the arguments of the
    fast path's calls to ``module.name`` (patched by hand: hypothesis tests cannot take pytest's
    function-scoped monkeypatch) and the fast output."""
    calls = []
    original = getattr(module, name)
    setattr(module, name, lambda *a: calls.append(a) or original(*a))
    try:
        prepared = prepare_layer(layer)
        fast, faithful = (run_layer(layer, prepared, torch.from_numpy(x).double(), hw, engine, faults)
                          for engine in ("fast", "faithful"))
    finally:
        setattr(module, name, original)
    np.testing.assert_array_equal(fast.numpy(), faithful.numpy())
    return calls, fast


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.integers(1, 6), st.integers(1, 7), st.integers(1, 7), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 2), st.integers(0, 2**32 - 1))
def test_im2col_digits_equal_split_of_im2col(bits, c, h, w, kh, kw, stride, pad, seed):
    """The fused im2col + digit split kernel against torch's unfold and int8_gemm.split."""
    from accel_sim.hardware import int8_gemm

    oh, ow = conv_output_hw(h, w, (kh, kw), (stride, stride), (pad, pad))
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (2, c, h, w))).double()
    cols = torch.nn.functional.unfold(x, (kh, kw), padding=pad, stride=stride)  # (N, C·kh·kw, L)
    rows = cols.reshape(2, c, kh * kw, -1).permute(0, 3, 2, 1).reshape(2 * oh * ow, kh * kw * c)
    expected = int8_gemm.split(rows, bits)
    got = int8_gemm.im2col_digits(x.permute(0, 2, 3, 1), (kh, kw), (stride, stride), (pad, pad), (oh, ow), bits)
    assert got.offset == expected.offset
    for g, e in zip(got.digits, expected.digits, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    np.testing.assert_array_equal(got.rowsums, expected.digit_rowsums())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
@pytest.mark.parametrize("bits", [16, 8])
def test_whole_networks_equal_reference(arch, bits, zoo_image):
    """Predictions and logits identical to the golden reference, both dataflows, two array sizes
    (a subset in CI; benchmarks/network_equivalence.py runs all 1,000 bundled images)."""
    image = zoo_image(arch, bits)
    images = load_bundled_sample("test").images[:12]
    expected = run_reference(image, images, HardwareConfig("x", 16, 16).datapath)
    for preset in ("edge16.toml", "edge16-os.toml", "array32.toml"):
        out = Accelerator(load_hardware(PRESETS / preset)).run(image, images)
        np.testing.assert_array_equal(out.raw_logits, expected.raw_logits, err_msg=preset)
        np.testing.assert_array_equal(out.predictions, expected.predictions)
    faithful = Accelerator(load_hardware(PRESETS / "edge16-os.toml"), engine="faithful").run(image, images[:2])
    np.testing.assert_array_equal(faithful.raw_logits, expected.raw_logits[:2])


def test_fp32_emulation_matches_reference(zoo_image):
    image = zoo_image("alexnet", None)
    images = load_bundled_sample("test").images[:50]
    ref = run_reference(image, images, HardwareConfig("x", 16, 16).datapath)
    out = Accelerator(HardwareConfig("x", 16, 16)).run(image, images)
    np.testing.assert_allclose(out.logits, ref.logits, atol=1e-4)
    np.testing.assert_array_equal(out.predictions, ref.predictions)


def test_narrow_saturating_accumulator_uses_faithful_fallback(zoo_image):
    """With a 32-bit accumulator, fixed16 sums saturate: the fast path must still equal the
    reference (it hands the outputs its bounds cannot clear to the faithful kernel)."""
    image = zoo_image("alexnet", 16)
    images = load_bundled_sample("test").images[:3]
    hw = HardwareConfig("acc32", 16, 16, acc_bits=32)
    expected = run_reference(image, images, hw.datapath)
    np.testing.assert_array_equal(Accelerator(hw).run(image, images).raw_logits, expected.raw_logits)


def test_presets_load_and_edge16_is_the_default():
    presets = {p.stem: load_hardware(p) for p in PRESETS.glob("*.toml")}
    assert {"edge16", "edge16-os", "array32", "tpu128", "edge16-int8"} <= set(presets)
    default = HardwareConfig("edge16", 16, 16)
    assert presets["edge16"].config_hash() == default.config_hash()
    assert presets["tpu128"].rows == 128 and presets["edge16-os"].dataflow == "os"
    # the same presets by name, as package data (what an installed wheel reads)
    assert set(preset_names()) == set(presets)
    for name, config in presets.items():
        assert load_hardware(name) == config == load_preset(name)
    with pytest.raises(ValueError, match="names no built-in preset.*edge16"):
        load_hardware("edge17")
    with pytest.raises(ValueError, match="unknown hardware preset 'edge17'"):
        load_preset("edge17")


@pytest.mark.parametrize("table, match", [
    ({"rows": 0, "cols": 16}, "rows must lie in 1..4096"),
    ({"rows": 16, "cols": 16, "dataflow": "is"}, "dataflow must be one of ws, os"),
    ({"rows": 16, "cols": 16, "acc_bits": 24}, "narrower than a product"),
    ({"rows": 16, "cols": 16, "weight_buffer_kib": 0.25}, "smaller than one 16x16 array tile"),
    ({"rows": 16, "cols": 16, "activation_buffer_kib": -1}, "activation_buffer_kib"),
    ({"rows": 16, "cols": 16, "colour": "red"}, "unknown key 'colour'"),
    ({"rows": 16, "cols": 16, "overflow": "clip"}, "overflow must be one of"),
    ({"cols": 16}, "lacks a required key"),
])
def test_bad_hardware_configs_are_refused(table, match):
    with pytest.raises(ValueError, match=match):
        hardware_from_dict({"hardware": dict(table, name="bad")}, "bad.toml")


def test_wrong_types_and_bad_files(tmp_path):
    with pytest.raises(TypeError, match="rows must be int"):
        hardware_from_dict({"hardware": {"name": "x", "rows": "16", "cols": 16}}, "x.toml")
    (tmp_path / "broken.toml").write_text("[hardware\nrows = 1")
    with pytest.raises(ValueError, match="broken.toml.*not valid TOML"):
        load_hardware(tmp_path / "broken.toml")
    with pytest.raises(ValueError, match="does not exist"):
        load_hardware(tmp_path / "none.toml")
    with pytest.raises(ValueError, match="single \\[hardware\\] table"):
        hardware_from_dict({"hardware": {"rows": 1, "cols": 1}, "extra": {}}, "x.toml")


def test_image_wider_than_multipliers_is_refused(zoo_image):
    image = zoo_image("alexnet", 16)
    with pytest.raises(ValueError, match="16-bit weights.*at most 8-bit"):
        Accelerator(load_hardware(PRESETS / "edge16-int8.toml")).run(image, load_bundled_sample().images[:1])


def test_pe_mapping_of_each_dataflow():
    ws, os_ = get_dataflow("ws"), get_dataflow("os")
    m, k, n = np.array([0, 5, 17]), np.array([3, 9, 40]), np.array([2, 7, 33])
    assert [a.tolist() for a in ws.pe_of(m, k, n, 8, 4)] == [[3, 1, 0], [2, 3, 1]]
    assert [a.tolist() for a in ws.fold_of(m, k, n, 8, 4)] == [[0, 1, 5], [0, 1, 8]]
    assert [a.tolist() for a in os_.pe_of(m, k, n, 8, 4)] == [[0, 5, 1], [2, 3, 1]]
    assert [a.tolist() for a in os_.fold_of(m, k, n, 8, 4)] == [[0, 0, 2], [0, 1, 8]]
    with pytest.raises(ValueError, match="unknown dataflow"):
        get_dataflow("is")


@pytest.mark.parametrize("name", ["ws", "os"])
def test_weight_stream_is_a_permutation_in_fold_order(name):
    shape = GemmShape(m=10, k=7, n=5)
    k, n = get_dataflow(name).weight_stream(shape, 3, 2)
    assert sorted(zip(k.tolist(), n.tolist())) == [(a, b) for a in range(7) for b in range(5)]
    if name == "ws":  # first tile: k 0..2 × n 0..1, row-major; the next tile continues down k
        assert list(zip(k[:8].tolist(), n[:8].tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    else:  # filter fold 0: k-major over its two filters
        assert list(zip(k[:4].tolist(), n[:4].tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_activation_stream_is_row_column_channel_order():
    order = activation_stream((2, 2, 3))  # C=2, H=2, W=3
    assert order.tolist() == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]
    assert activation_stream((5,)).tolist() == [0, 1, 2, 3, 4]


def test_cycle_model_by_hand():
    """conv 3→4, 3×3, pad 1 on 4×4: M = 16 pixels, K = 27, N = 4, on an 8×4 array."""
    f = Fixed(8, 4)
    layer = Conv2d("c", (3, 4, 4), (4, 4, 4), np.zeros((4, 3, 3, 3)), np.zeros(4), f, Fixed(16, 8), f, f,
                   padding=(1, 1))
    assert gemm_shape(layer) == GemmShape(16, 27, 4)
    ws = layer_cycles(layer, HardwareConfig("a", 8, 4, dataflow="ws"))
    # WS: ceil(27/8) = 4 row folds × ceil(4/4) = 1 col fold, each 2·8 + 4 + 16 − 2 = 34 cycles
    assert (ws.fold_rows, ws.fold_cols, ws.cycles_per_fold, ws.cycles) == (4, 1, 34, 136)
    assert ws.macs == 16 * 27 * 4 and ws.utilisation == pytest.approx(1728 / (136 * 32))
    assert ws.mapping_efficiency == pytest.approx(1728 / (4 * 32 * 16))
    assert (ws.weight_reads, ws.activation_reads, ws.output_writes, ws.psum_reads) == (108, 432, 256, 192)
    os_ = layer_cycles(layer, HardwareConfig("a", 8, 4, dataflow="os"))
    # OS: ceil(16/8) = 2 × ceil(4/4) = 1 folds of 27 + 8 + 4 − 2 = 37 cycles (SCALE-Sim's T + R + C − 2)
    assert (os_.fold_rows, os_.fold_cols, os_.cycles_per_fold, os_.cycles) == (2, 1, 37, 74)
    assert (os_.weight_reads, os_.activation_reads, os_.output_writes) == (216, 432, 64)


def test_cli_eval_image_with_hardware_and_report(tmp_path, capsys, zoo_image):
    image = zoo_image("alexnet", 8)
    path = write_image(image, tmp_path / "a8.h5")
    csv = tmp_path / "cycles.csv"
    assert main(["eval", "--image", str(path), "--hw", str(PRESETS / "edge16-os.toml"), "--subset", "20",
                 "--report", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "edge16-os: 16x16 os" in out and "top-1:" in out and "cycles per image" in out
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("name,op,m,k,n,fold_rows") and len(lines) == 1 + len(image.weighted_layers)
    only = tmp_path / "only.csv"  # the same table without inference
    assert main(["cycles", "--image", str(path), "--hw", "edge16-os", "--csv", str(only)]) == 0
    assert "cycles per image" in capsys.readouterr().out and only.read_text() == csv.read_text()
    for engine in ("reference", "faithful"):
        assert main(["eval", "--image", str(path), "--subset", "4", "--engine", engine]) == 0
    assert "engine faithful" in capsys.readouterr().out
    assert main(["eval", "--image", str(path), "--hw", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fp32_faulty_weight_changes_only_its_own_filter():
    """fp32 layers run through torch's convolution: a weight flipped to ~3e38 must leave every
    other filter's outputs bit-identical (a Winograd-style algorithm would spread it)."""
    rng = np.random.default_rng(3)
    fp32 = Float32()
    weight = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    layer = Conv2d("c", (64, 16, 16), (64, 16, 16), weight, np.zeros(64, np.float32), fp32, fp32, fp32, fp32,
                   padding=(1, 1))
    x = torch.from_numpy(rng.standard_normal((8, 64, 16, 16)).astype(np.float32))
    hw = load_preset("edge16")
    flat = 5 * 64 * 9 + 1 * 9 + 4  # filter 5, channel 1, the kernel's centre
    clean = run_layer(layer, prepare_layer(layer), x, hw, "fast")
    faulty = run_layer(layer, prepare_layer(layer, WeightPatch(np.array([flat]), np.array([3e38], np.float32))),
                       x, hw, "fast")
    others = np.arange(64) != 5
    assert torch.equal(clean[:, others], faulty[:, others])
    assert not torch.isfinite(faulty[:, 5]).all()


def test_53_bit_wrapping_accumulator_wraps_the_bias_sum():
    """A 53-bit wrapping accumulator near its top plus a bias passes 2**52 yet stays below 2**53
    (exact in float64): it must still wrap (hypothesis found the float64 path leaving it)."""
    word = Fixed(32, 0)
    weight = np.array([[-(2**20), -(2**20)]])
    layer = Linear("fc", (2,), (1,), weight, np.array([2**31 - 1]), Fixed(21, 0), word, word, None)
    hw = HardwareConfig("t", 2, 2, weight_bits=21, act_bits=32, acc_bits=53, overflow="wrap")
    x = np.array([[-(2**31), -(2**31) + 2**10]])
    expected = reference_layer(layer, x, hw.datapath)
    products = 2**20 * 2**31 + 2**20 * (2**31 - 2**10)
    total = products + 2**31 - 1
    assert products < 2**52 <= total and expected.tolist() == [[total - 2**53]]
    for engine in ("fast", "faithful"):
        got = run_layer(layer, prepare_layer(layer), torch.from_numpy(x).double(), hw, engine)
        assert got.numpy().astype(np.int64).tolist() == expected.tolist(), engine


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from(["saturate", "wrap"]),
       st.sampled_from([(32, 64), (27, 54), (27, 60)]), st.integers(1, 12), st.sampled_from([0, 4, 20, 31]),
       st.sampled_from([12, 22]))
def test_patched_wide_weights_equal_reference(seed, conv, overflow, widths, faults, x_bits, w_bits):
    """Q15.16-like layers (27- or 32-bit words, small stored weights, activations up to the word's
    range) with a few faulty weight words anywhere in that range: the stored words' GEMM plus the patched
    words' products (split activation digits past 2**53, MAC by MAC where a sum may saturate)
    equal the golden reference on the faulty layer, bit for bit."""
    rng = np.random.default_rng(seed)
    bits, acc_bits = widths
    word = Fixed(bits, 16)
    x_bits = min(x_bits, bits - 1)
    if conv:
        c, k = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        stride, padding = (int(rng.integers(1, 3)), int(rng.integers(1, 3))), (int(rng.integers(0, 3)), 1)
        weight = rng.integers(-(2**w_bits), 2**w_bits, (int(rng.integers(1, 6)), c, k, k))
        layer = Conv2d("conv", (c, 6, 5), (weight.shape[0], *conv_output_hw(6, 5, (k, k), stride, padding)), weight,
                       rng.integers(-(2**20), 2**20, weight.shape[0]), word, word, word, word, "relu", None,
                       stride=stride, padding=padding)
    else:
        weight = rng.integers(-(2**w_bits), 2**w_bits, (int(rng.integers(1, 6)), int(rng.integers(1, 30))))
        layer = Linear("fc", weight.shape[1:], weight.shape[:1], weight, rng.integers(-(2**20), 2**20, weight.shape[0]),
                       word, word, word, None)
    index = np.unique(rng.integers(0, weight.size, faults))
    values = np.where(rng.random(index.size) < 0.5, rng.choice([word.raw_min, word.raw_max], index.size),
                      rng.integers(word.raw_min, word.raw_max + 1, index.size))
    x = rng.integers(-(2**x_bits), 2**x_bits, (2, *layer.in_shape))  # raw_max below: 2**(bits-1) - 1
    x = np.where(rng.random(x.shape) < 0.2, word.raw_max, x)
    hw = HardwareConfig("t", 4, 4, weight_bits=bits, act_bits=bits, acc_bits=acc_bits, overflow=overflow)
    faulty_words = weight.reshape(-1).copy()
    faulty_words[index] = values
    faulty = dataclasses.replace(layer, weight=faulty_words.reshape(weight.shape))
    expected = reference_layer(faulty, x, hw.datapath)
    prepared = prepare_layer(layer, WeightPatch(index, values), base=prepare_layer(layer))
    words = torch.from_numpy(x).double()
    if conv and rng.random() < 0.5:  # the layout the maps between layers may have
        words = words.contiguous(memory_format=torch.channels_last)
    got = run_layer(layer, prepared, words, hw, "fast")
    np.testing.assert_array_equal(got.numpy().astype(np.int64), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 70))
def test_wide_gemm_products_equal_python_integers(seed, depth):
    """The split GEMMs of :mod:`accel_sim.hardware.wide_gemm` against Python's integers, modulo 2**64
    (32-bit words, mostly extreme): four products when both operands are wide, two when the
    weights are small."""
    rng = np.random.default_rng(seed)
    word = Fixed(32, 0)
    a = _words(rng, word, (depth, 3), True)
    wide, small = _words(rng, word, (4, depth), True), rng.integers(-(2**20), 2**20, (4, depth))

    def exact(w):
        return [[(sum(int(p) * int(q) for p, q in zip(row, col)) + 2**63) % 2**64 - 2**63 for col in a.T] for row in w]

    got = wide_gemm.matmul_int64(torch.from_numpy(wide).double(), torch.from_numpy(a).double())
    assert got.tolist() == exact(wide)
    assert wide_gemm.split_matmul_is_exact(float(np.abs(small).sum(axis=1).max()))
    hi, lo = wide_gemm.balanced_digits(torch.from_numpy(a).double())
    assert float(lo.abs().max()) <= 2**15 and float(hi.abs().max()) <= 2**16
    w = torch.from_numpy(small).double()
    assert wide_gemm.join_split(torch.matmul(w, hi), torch.matmul(w, lo)).tolist() == exact(small)


class _InputStationary(Dataflow):
    """A toy third dataflow for the tests: window elements × output pixels on rows × cols, the
    filters stream (SCALE-Sim's IS). It exists only here: adding it touches no library file."""

    name = "is-toy"
    row_axis = "k"
    col_axis = "m"
    description = "input stationary (test only)"

    def weight_stream(self, shape, rows, cols):
        kk, nn = np.meshgrid(np.arange(shape.k), np.arange(shape.n), indexing="ij")
        order = np.lexsort((kk.ravel(), nn.ravel()))
        return kk.ravel()[order], nn.ravel()[order]

    def fold_cycles(self, rows, cols, steps):
        return 2 * rows + cols + steps - 2

    def traffic(self, shape, fold_rows, fold_cols):
        return shape.k * shape.n * fold_cols, shape.m * shape.k, shape.m * shape.n * fold_rows, 0


register_dataflow(_InputStationary())


def _reference_pe_sums(layer, x, hw, faults, mismatched=None):
    """:func:`tests.pe_reference.faulty_sums` on a layer and a batch (Python integers); the im2col
    rows a DMR comparator flags go into the set ``mismatched``."""
    w = layer.weight.tolist() if isinstance(layer, Linear) else layer.weight.transpose(2, 3, 1, 0).reshape(
        -1, layer.out_channels).tolist()
    if isinstance(layer, Linear):
        a, pixels, w = x.tolist(), 1, np.array(w).T.tolist()
    else:
        a = [row for image in x.tolist() for row in pe_reference.im2col(image, layer.kernel, layer.stride, layer.padding)]
        pixels = layer.out_shape[1] * layer.out_shape[2]
    widths = (layer.weight_format.word_bits, layer.weight_format.word_bits + layer.in_format.word_bits,
              hw.datapath.acc_bits)
    return pe_reference.faulty_sums(a, w, pixels, get_dataflow(hw.dataflow), hw.rows, hw.cols, faults, widths,
                                    hw.overflow, replicas(hw.pe_redundancy), mismatched)


@settings(max_examples=60, deadline=None)
@given(random_layer(max_bits=12), st.sampled_from(["ws", "os", "is-toy"]), st.sampled_from([(3, 5), (2, 2), (4, 1)]),
       st.sampled_from(["saturate", "wrap"]), st.sampled_from([24, 32, 48]), st.data())
def test_pe_faults_equal_the_plain_python_reference(case, dataflow, array, overflow, acc_bits, data):
    """PE faults MAC by MAC in plain Python against the faithful kernel and the fast path (its
    strategies for WS and OS; a dataflow without filters along the columns is recomputed by the
    faithful kernel), on every dataflow including a toy one registered by this test file."""
    layer, x = case
    assume(layer.weight_format.word_bits + layer.in_format.word_bits <= acc_bits)
    assume(layer.weight.size * x.shape[0] <= 2000)  # the reference is plain Python
    hw = HardwareConfig("t", *array, dataflow=dataflow, weight_bits=12, act_bits=12, acc_bits=acc_bits,
                        overflow=overflow)
    faults = data.draw(pe_fault_table(hw, layer, x.shape[0]))
    table = [(int(pe // hw.cols), int(pe % hw.cols), int(faults.register[f]), int(faults.bit[f]), int(faults.model[f]),
              int(faults.mac[f])) for pe in range(hw.rows * hw.cols) for f in range(faults.pe_start[pe], faults.pe_start[pe + 1])]
    expected = np.array(_reference_pe_sums(layer, x, hw, table), dtype=np.int64)
    prepared = prepare_layer(layer)
    for engine in ("faithful", "fast"):
        got = weighted_accumulators(prepared, torch.from_numpy(x).double(), hw, engine, faults)
        by_row = (got.permute(0, 2, 3, 1) if got.dim() == 4 else got).reshape(-1, layer.out_channels)
        np.testing.assert_array_equal(by_row.numpy().astype(np.int64), expected, err_msg=engine)


def test_a_registered_dataflow_runs_faults_cycles_and_buffers(zoo_image):
    """The toy dataflow through the public paths: PE faults drawn and run on a zoo image, its cycle
    model, its weight-buffer order; an unknown or clashing name is refused."""
    hw = HardwareConfig("t", 8, 8, dataflow="is-toy", weight_buffer_kib=1)
    image = zoo_image("alexnet", 16)
    x = load_bundled_sample().images[:2]
    cycles = layer_cycles(image.weighted_layers[1], hw)
    shape = gemm_shape(image.weighted_layers[1])
    assert (cycles.fold_rows, cycles.fold_cols) == (-(-shape.k // 8), -(-shape.m // 8))
    assert cycles.cycles_per_fold == 2 * 8 + 8 + shape.n - 2
    for site in ("pe", "weight_buffer"):
        fmap = draw_fault_map(image, hw, DrawSpec(site=site, rate=5e-4, count_mode="exact"), np.random.default_rng(1),
                              len(x))
        assert len(fmap) >= 2
        fast = run_with_faults(Accelerator(hw), image, x, fmap)
        faithful = run_with_faults(Accelerator(hw, engine="faithful"), image, x, fmap)
        np.testing.assert_array_equal(fast.raw_logits, faithful.raw_logits)
    with pytest.raises(ValueError, match="hardware field dataflow must be one of ws, os, is-toy"):
        HardwareConfig("t", 8, 8, dataflow="xx")
    with pytest.raises(ValueError, match="dataflow name 'ws' is taken"):
        register_dataflow(type("Other", (_InputStationary,), {"name": "ws"})())
