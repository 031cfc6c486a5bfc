"""The faithful path: :func:`accel_sim.hardware.kernels.gemm_faithful`, MAC by MAC in window order,
with the accumulator's overflow after every addition and PE faults where the dataflow places
each MAC.
"""

from __future__ import annotations

import numpy as np
import torch

from accel_sim.hardware import kernels
from accel_sim.hardware.activation_unit import int64_accumulators
from accel_sim.hardware.compute.gemm_forms import from_rows
from accel_sim.hardware.compute.prepared import PreparedLayer
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.redundancy import register_codes, replicas
from accel_sim.hardware.pe_faults import PeFaults
from accel_sim.hardware.pe_faults.table import array_masks
from accel_sim.image import Conv2d, Linear


def faithful_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig,
                          pe_faults: PeFaults | None, rows: np.ndarray | None = None,
                          cols: np.ndarray | None = None, flagged: np.ndarray | None = None):
    """The faithful kernel on all outputs (returns the logical output shape, float64 or float32),
    or on the im2col rows ``rows`` × filters ``cols`` only (returns an array of that shape).

    ``flagged`` (bool (N,), one per image of the batch ``x``) is set where a DMR comparator saw
    its replicas differ on one of the computed outputs; never cleared."""
    layer = prepared.layer
    is_float = layer.weight_format.is_float
    xi = (x.to(torch.float32) if is_float else x.to(torch.int64)).contiguous().numpy()
    pixels = 1 if isinstance(layer, Linear) else layer.out_shape[1] * layer.out_shape[2]
    row_idx = np.arange(x.shape[0] * pixels, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    if isinstance(layer, Conv2d):
        _, oh, ow = layer.out_shape
        a = kernels.im2col_hwc(xi, row_idx, *layer.kernel, *layer.stride, *layer.padding, oh, ow)
    else:
        a = np.ascontiguousarray(xi[row_idx])
    faults = pe_faults if pe_faults is not None else PeFaults.none(hw.rows, hw.cols)
    col_idx = np.arange(layer.out_channels, dtype=np.int64) if cols is None else np.asarray(cols, np.int64)
    fault_args = (faults.pe_start, faults.register, faults.bit, faults.model, faults.mac)
    copies = replicas(hw.pe_redundancy)
    mismatch = np.zeros(row_idx.size, dtype=np.bool_)
    if is_float:
        out = kernels.gemm_faithful_f32(a, prepared.weight_t_hwc, row_idx, col_idx, pixels,
                                        *get_dataflow(hw.dataflow).axis_codes, hw.rows, hw.cols, *fault_args,
                                        copies, mismatch)
    elif copies > 1 and faults.count and (faults.mac < 0).all():  # DMR/TMR, permanent faults: no table reads per MAC
        dp = hw.datapath
        out = kernels.gemm_permanent_masks(
            a, prepared.weight_t_hwc, row_idx, col_idx, pixels, dp.acc_min, dp.acc_max, dp.acc_bits,
            int(dp.overflow == "wrap"), *get_dataflow(hw.dataflow).axis_codes, hw.rows, hw.cols,
            *array_masks(faults, len(register_codes(hw.pe_redundancy))), layer.weight_format.word_bits,
            layer.weight_format.word_bits + layer.in_format.word_bits, copies, mismatch,
        )
    else:
        dp = hw.datapath
        out = kernels.gemm_faithful(
            a, prepared.weight_t_hwc, row_idx, col_idx, pixels, dp.acc_min, dp.acc_max, dp.acc_bits,
            int(dp.overflow == "wrap"), *get_dataflow(hw.dataflow).axis_codes, hw.rows, hw.cols, *fault_args,
            layer.weight_format.word_bits, layer.weight_format.word_bits + layer.in_format.word_bits, copies, mismatch,
        )
    if flagged is not None and mismatch.any():
        flagged[np.unique(row_idx[mismatch] // pixels)] = True
    if rows is not None or cols is not None:
        return out
    dtype = np.float32 if is_float else np.int64 if int64_accumulators(layer, hw) else np.float64
    return from_rows(layer, torch.from_numpy(out.astype(dtype)), x.shape[0])
