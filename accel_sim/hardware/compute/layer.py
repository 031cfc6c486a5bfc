"""One layer on the emulated array: which path computes it, and the activation unit after it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from accel_sim.hardware import int8_gemm
from accel_sim.hardware.activation_unit import activate, add_bias, int64_accumulators
from accel_sim.hardware.compute.faithful import faithful_accumulators
from accel_sim.hardware.compute.gemm_forms import abs_max, from_rows, largest_word
from accel_sim.hardware.compute.int8_path import fuses, gathered_corrections, input_digits, recombine
from accel_sim.hardware.compute.pe_fault_path import faulty_blocks, pe_faults_on_fast_path, with_pe_faults
from accel_sim.hardware.compute.prepared import PreparedLayer
from accel_sim.hardware.compute.sums import fast_accumulators, float_accumulators, wide_accumulators
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.pe_faults import PeFaults
from accel_sim.image import Flatten, Layer, MaxPool2d
from accel_sim.numerics import MARGIN


def run_layer(layer: Layer, prepared: PreparedLayer | None, x: torch.Tensor, hw: HardwareConfig,
              engine: str, pe_faults: PeFaults | None = None, flagged: np.ndarray | None = None) -> torch.Tensor:
    """One layer on a batch ``x`` (N, C, H, W) or (N, F); returns the next feature map or, for
    the last layer, the logits' accumulators. Fixed-point maps may be channels-last in memory.
    ``flagged`` (bool (N,)) is set for the images a DMR comparator flags."""
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)  # channel-major order, whatever the memory layout
    if isinstance(layer, MaxPool2d):
        return F.max_pool2d(x, layer.kernel, layer.stride, layer.padding)
    faulty = pe_faults is not None and pe_faults.count
    if engine == "fast" and fuses(prepared, hw) and (not faulty or pe_faults_on_fast_path(layer, hw)):
        fused = fused_int8_layer(prepared, x, hw, pe_faults if faulty else None)
        if fused is not None:
            return fused
    # the biased accumulators are a fresh tensor: the fp32 activation may overwrite it
    return activate(layer, biased_accumulators(prepared, x, hw, engine, pe_faults, flagged), hw,
                    prepared.threshold_acc, overwrite=True)


def biased_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, engine: str,
                        pe_faults: PeFaults | None = None, flagged: np.ndarray | None = None) -> torch.Tensor:
    """What the activation unit sees: the exact accumulators plus the bias, after the
    accumulator's overflow mode (fixed point), or the float32 sums with the bias added last (fp32:
    torch's convolution adds it, on the fast path without PE faults)."""
    layer = prepared.layer
    if layer.weight_format.is_float and engine == "fast" and not (pe_faults is not None and pe_faults.count):
        return float_accumulators(prepared, x, prepared.bias)
    return add_bias(prepared, weighted_accumulators(prepared, x, hw, engine, pe_faults, flagged), hw)


def weighted_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, engine: str,
                          pe_faults: PeFaults | None = None, flagged: np.ndarray | None = None) -> torch.Tensor:
    """Accumulator values ``Σ w·a`` (bias not added), exact, in the layer's logical output shape."""
    layer = prepared.layer
    if engine == "faithful" and not layer.weight_format.is_float:
        return faithful_accumulators(prepared, x, hw, pe_faults, flagged=flagged)
    acc = wide_accumulators(prepared, x, hw) if int64_accumulators(layer, hw) else fast_accumulators(prepared, x, hw)
    if pe_faults is not None and pe_faults.count:
        acc = with_pe_faults(prepared, x, hw, pe_faults, acc, flagged)
    return acc


def fused_int8_layer(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig,
                      pe_faults: PeFaults | None = None) -> torch.Tensor | None:
    """The int8 digit products and the activation unit in one pass over the outputs (no float64
    accumulator map), when no partial sum can saturate; None otherwise (the caller takes the
    general path). Register-fault corrections of faulty PEs are added in the same pass; the
    other outputs faulty PEs touch are recomputed and activated on their own afterwards."""
    layer = prepared.layer
    dp = hw.datapath
    if dp.overflow == "saturate":
        limit = float(dp.acc_max) * MARGIN
        col_max = prepared.abs_col_sum_max
        if not (largest_word(layer) * col_max < limit or abs_max(x) * col_max < limit):
            return None
    digits = input_digits(layer, x)
    products = int8_gemm.digit_products(digits, prepared.weight_digits)
    out = np.empty((products.rows, layer.out_channels), dtype=np.float64)
    blocks = list(faulty_blocks(prepared, x, hw, pe_faults, None, lambda: digits)) if pe_faults is not None else []
    recombine(prepared, hw, products, out, *gathered_corrections([b for b in blocks if b[3]], products.rows))
    for rows, filters, values, _ in (b for b in blocks if not b[3]):
        words = output_words(prepared, values, hw, filters).numpy()
        if rows.size == out.shape[0]:  # every row (WS): a column slice is much cheaper
            out[:, filters] = words
        else:
            out[rows[:, None], filters[None, :]] = words
    return from_rows(layer, torch.from_numpy(out), x.shape[0])


def output_words(prepared: PreparedLayer, acc: torch.Tensor, hw: HardwareConfig,
                    filters: np.ndarray | None = None) -> torch.Tensor:
    """Bias (the accumulator's last addition), activation in the accumulator domain, rescaling
    with rounding, saturation to the next activation word; shapes as ``acc`` (channels in
    dimension 1; only the channels ``filters`` when given)."""
    return activate(prepared.layer, add_bias(prepared, acc, hw, filters), hw, prepared.threshold_acc)
