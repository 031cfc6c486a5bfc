"""Exact sums Σ w·a of a layer without PE faults: float64 GEMMs under the 2**53 bound (with
per-output bounds and the faithful kernel where they fail), ``int64`` sums for accumulators
wider than 53 bits, float32 sums through torch for fp32 images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from accel_sim.hardware import wide_gemm
from accel_sim.hardware.activation_unit import wrap_float
from accel_sim.hardware.compute.faithful import faithful_accumulators
from accel_sim.hardware.compute.gemm_forms import abs_max, from_columns, from_rows, unfold, window_sums
from accel_sim.hardware.compute.int8_path import int8_accumulators, uses_int8
from accel_sim.hardware.compute.prepared import PreparedLayer
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.patched_sums import add_patch_products
from accel_sim.image import Conv2d
from accel_sim.numerics import EXACT_LIMIT, MARGIN


def fast_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig) -> torch.Tensor:
    """Exact sums of an accumulator of at most 53 bits (float64, logical output shape): the int8
    path, or a float64 GEMM checked against the 2**53 and saturation bounds."""
    layer = prepared.layer
    if layer.weight_format.is_float:
        return float_accumulators(prepared, x)
    dp = hw.datapath
    if uses_int8(prepared):
        acc, exact_limit = int8_accumulators(prepared, x), math.inf  # exact whatever the size
    else:
        acc = window_sums(layer, prepared.weight_2d, x)
        exact_limit = EXACT_LIMIT
    limit = min(exact_limit, float(dp.acc_max)) if dp.overflow == "saturate" else exact_limit
    if abs_max(x) * prepared.abs_col_sum_max < limit * MARGIN:
        return acc if dp.overflow == "saturate" else wrap_float(acc, dp.acc_bits)
    # Per-output bounds; im2col rows (image, pixel) holding an output that might round or
    # saturate are recomputed by the faithful kernel.
    bound = window_sums(layer, prepared.weight_2d.abs(), x.abs())  # logical output shape
    risky_rows = (bound >= limit * MARGIN).any(dim=1).reshape(-1)  # (N·pixels,), pixel-major
    if dp.overflow == "wrap":
        acc = wrap_float(torch.where(bound >= limit * MARGIN, 0.0, acc), dp.acc_bits)
    if risky_rows.any():
        rows = torch.nonzero(risky_rows).reshape(-1).numpy()
        exact = faithful_accumulators(prepared, x, hw, None, rows, np.arange(layer.out_channels))
        by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous()
        by_row.view(-1, layer.out_channels)[torch.from_numpy(rows)] = torch.from_numpy(exact).to(acc.dtype)
        acc = from_rows(layer, by_row, x.shape[0])
    return acc


def wide_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig) -> torch.Tensor:
    """Exact ``int64`` accumulators of an accumulator wider than 53 bits (logical output shape)."""
    layer, dp = prepared.layer, hw.datapath
    x_max = abs_max(x)
    if uses_int8(prepared):  # int8 sums of words ≤ 16 bits are exact in float64
        acc = int8_accumulators(prepared, x).to(torch.int64)
    else:
        acc = wide_sums(prepared, x, x_max)
        if acc is None:
            return faithful_accumulators(prepared, x, hw, None)
    if dp.overflow == "wrap":  # the wrapped sum is the sum modulo 2**acc_bits
        return torch.from_numpy(dp.overflow_acc(acc.numpy()))
    limit = float(dp.acc_max) * MARGIN
    filters = np.flatnonzero(x_max * prepared.abs_col_sums >= limit)  # only their sums might saturate
    if not filters.size:
        return acc
    # im2col rows holding an output of those filters whose partial sums might saturate: added
    # MAC by MAC
    weights = torch.from_numpy(np.abs(prepared.weight.reshape(layer.out_channels, -1)[filters]).astype(np.float64))
    risky = window_sums(layer, weights, x.abs()) >= limit
    rows = torch.nonzero(risky.any(dim=1).reshape(-1)).reshape(-1).numpy()
    if rows.size:
        exact = faithful_accumulators(prepared, x, hw, None, rows, filters)
        by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous()
        by_row.view(-1, layer.out_channels)[torch.from_numpy(rows)[:, None], torch.from_numpy(filters)[None, :]] = \
            torch.from_numpy(exact)
        acc = from_rows(layer, by_row, x.shape[0])
    return acc


def wide_sums(prepared: PreparedLayer, x: torch.Tensor, x_max: float) -> torch.Tensor | None:
    """Σ w·a as ``int64`` (logical output shape), exact modulo 2**64: the stored words' GEMM (one
    float64 product while every partial sum stays below 2**53, two with the activations split
    into 16-bit digits, four with the weights split too), plus the products of the patched words
    (:mod:`accel_sim.hardware.patched_sums`). None when the window is too deep for the GEMMs."""
    layer, stored = prepared.layer, prepared.stored
    w, col_max = stored.weight_2d, stored.abs_col_sum_max
    if x_max * col_max < EXACT_LIMIT * MARGIN:
        sums = window_sums(layer, w, x).to(torch.int64)
    elif wide_gemm.split_matmul_is_exact(col_max):
        hi, lo = wide_gemm.balanced_digits(x)
        sums = wide_gemm.join_split(window_sums(layer, w, hi), window_sums(layer, w, lo))
    elif w.shape[1] <= wide_gemm.MAX_DEPTH:
        sums = from_columns(layer, wide_gemm.matmul_int64(w, unfold(layer, x)))
    else:
        return None
    if prepared.patch is not None:
        sums = sums.contiguous()  # (N, O, pixels) below is a view of it
        add_patch_products(sums.numpy().reshape(sums.shape[0], sums.shape[1], -1), layer, prepared.patch.index,
                           prepared.patch.values, x)
    return sums


def float_accumulators(prepared: PreparedLayer, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """float32 sums through torch's own convolution or matrix product on the (possibly faulty)
    weights, plus ``bias`` if given: IEEE fp32 arithmetic in the library's summation order, which
    the fp32 setting leaves open (the faithful kernel sums in window order; the two differ in the
    last bits)."""
    layer = prepared.layer
    if isinstance(layer, Conv2d):
        return F.conv2d(x, prepared.weight_tensor, bias, stride=layer.stride, padding=layer.padding)
    return F.linear(x, prepared.weight_tensor, bias)
