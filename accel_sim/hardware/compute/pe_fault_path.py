"""Faulty PEs on the fast path: the outputs they touch are replaced by their exact faulty values
(the strategies of :mod:`accel_sim.hardware.pe_faults`, or MAC by MAC through the faithful
kernel); every other output keeps its fast-path value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from accel_sim.hardware import int8_gemm
from accel_sim.hardware.activation_unit import wrap_float
from accel_sim.hardware.compute.faithful import faithful_accumulators
from accel_sim.hardware.compute.gemm_forms import abs_max, from_rows, largest_word
from accel_sim.hardware.compute import int8_path
from accel_sim.hardware.compute.int8_path import uses_int8
from accel_sim.hardware.compute.prepared import PreparedLayer
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.pe_faults import fast_strategies_apply, faulty_column_blocks, fits_float64, PeFaults
from accel_sim.image import Conv2d, Linear, WeightedLayer


def with_pe_faults(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, pe_faults: PeFaults,
                    acc: torch.Tensor, flagged: np.ndarray | None = None) -> torch.Tensor:
    """Replace the outputs the faulty PEs touch by their exact faulty values; all other outputs
    keep their fast-path values. ``flagged`` (bool (N,)): the images a DMR comparator flags."""
    layer = prepared.layer
    if not pe_faults_on_fast_path(layer, hw):
        return recompute_touched(prepared, x, hw, pe_faults, acc, flagged)
    by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous().view(-1, layer.out_channels)
    for rows, filters, values, _ in faulty_blocks(prepared, x, hw, pe_faults, lambda r, f: by_row[r][:, f]):
        by_row[torch.from_numpy(rows)[:, None], torch.from_numpy(filters)[None, :]] = values
    return from_rows(layer, by_row, x.shape[0])


def pe_faults_on_fast_path(layer: WeightedLayer, hw: HardwareConfig) -> bool:
    """Whether PE faults of the layer take the fast strategies, which need filters along the array
    columns (:func:`accel_sim.hardware.pe_faults.fast_strategies_apply`) and whose lanes and
    bounds read words as signed (unsigned words and wide accumulators take the faithful kernel
    instead; so do DMR and TMR arrays, whose comparisons and votes the strategies do not model)."""
    weights, inputs = layer.weight_format, layer.in_format
    return (hw.pe_redundancy == "none" and not weights.is_float and weights.signed and inputs.signed
            and fast_strategies_apply(hw) and fits_float64(hw, weights.word_bits + inputs.word_bits))


def faulty_blocks(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, pe_faults: PeFaults,
                   clean: Callable[[np.ndarray, np.ndarray], torch.Tensor] | None,
                   input_digits: Callable[[], int8_gemm.Digits] | None = None):
    """The exact faulty accumulators (float64 (I, J), bias not added) of the outputs the faulty
    PEs touch, as (im2col rows (I,), filters (J,), values, is_correction) blocks that do not
    overlap.

    In WS a PE (r, c) works on every output of the filters n ≡ c (mod cols); in OS on the
    outputs of pixels ≡ r (mod rows) of those filters. ``clean(rows, filters)`` gives the
    fault-free accumulators of a block, to which register-fault corrections are added; without
    it (None) those blocks come as the corrections themselves (int64, ``is_correction`` true).
    ``input_digits`` gives the int8 digits of the im2col matrix (default: made on demand where
    the int8 path is exact)."""
    layer = prepared.layer
    batch = x.shape[0]
    product_bits = layer.weight_format.word_bits + layer.in_format.word_bits
    if isinstance(layer, Conv2d):
        # a view, not a copy, after the first layer: the fused epilogue writes feature maps channels-last
        x_hwc = x.permute(0, 2, 3, 1).contiguous().numpy()
        geometry = (*layer.kernel, *layer.stride, *layer.padding, layer.out_shape[2])
        pixels = layer.out_shape[1] * layer.out_shape[2]
    else:
        x_hwc = x.reshape(batch, 1, 1, -1).contiguous().numpy()
        geometry, pixels = (1, 1, 1, 1, 0, 0, 1), 1
    x_bounds = (lambda: largest_word(layer), functools.cache(lambda: abs_max(x)))  # measured at most once
    if input_digits is None and uses_int8(prepared):
        input_digits = functools.cache(lambda: int8_path.input_digits(layer, x))
    for rows, filters, values, correction in faulty_column_blocks(
            x_hwc, prepared.weight_t_hwc, lambda col: prepared.column_words(col, hw.cols),
            lambda col, offset: prepared.column_pairs(col, hw.cols, offset), geometry, pixels, hw, pe_faults,
            layer.weight_format.word_bits, product_bits, x_bounds, prepared.abs_col_sums, input_digits):
        if correction and clean is None:
            yield rows, filters, torch.from_numpy(values), True
            continue
        values = torch.from_numpy(values).to(torch.float64)
        if correction:
            values = clean(rows, filters) + values
            values = values if hw.datapath.overflow == "saturate" else wrap_float(values, hw.datapath.acc_bits)
        yield rows, filters, values, False
    rows, filters = pe_faults.transient_outputs(prepared.weight_t_hwc.shape[1], layer.out_channels)
    for m, n in set(zip(rows.tolist(), filters.tolist())):  # a transient fault hits a single output
        exact = faithful_accumulators(prepared, x, hw, pe_faults, np.array([m]), np.array([n]))
        yield np.array([m]), np.array([n]), torch.from_numpy(exact).to(torch.float64), False


def recompute_touched(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, pe_faults: PeFaults,
                       acc: torch.Tensor, flagged: np.ndarray | None = None) -> torch.Tensor:
    """Recompute, MAC by MAC with the faults, every output the faulty PEs touch (float32 images,
    accumulators too wide for :func:`fits_float64`, DMR and TMR arrays): one block of outputs per set
    of faulty PEs that touch the same im2col rows (their filters joined), so that PEs in
    different rows and columns do not make a block of every row with every filter."""
    layer = prepared.layer
    batch = x.shape[0]
    pixels = 1 if isinstance(layer, Linear) else layer.out_shape[1] * layer.out_shape[2]
    dataflow = get_dataflow(hw.dataflow)
    blocks: dict[bytes, tuple[np.ndarray, set]] = {}
    for r, c in zip(*pe_faults.faulty_pes(hw.cols)):
        row_idx, col_idx = dataflow.touched_outputs(np.array([r]), np.array([c]), hw.rows, hw.cols, batch, pixels,
                                                    layer.out_channels)
        if row_idx.size and col_idx.size:
            blocks.setdefault(row_idx.tobytes(), (row_idx, set()))[1].update(col_idx.tolist())
    if not blocks:
        return acc
    by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous().view(-1, layer.out_channels)
    for row_idx, filters in blocks.values():
        col_idx = np.array(sorted(filters), dtype=np.int64)
        exact = faithful_accumulators(prepared, x, hw, pe_faults, row_idx, col_idx, flagged)
        by_row[torch.from_numpy(row_idx)[:, None], torch.from_numpy(col_idx)[None, :]] = torch.from_numpy(exact).to(acc.dtype)
    return from_rows(layer, by_row, batch)
