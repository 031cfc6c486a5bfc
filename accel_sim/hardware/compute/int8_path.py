"""The int8 digit path for words of up to 16 bits: im2col into int8 digits, int8 GEMMs
(:mod:`accel_sim.hardware.int8_gemm`) and one numba pass that recombines the digit products and
applies the activation unit.
"""

from __future__ import annotations

import numpy as np
import torch

from accel_sim.hardware import int8_gemm, int8_kernels
from accel_sim.hardware.activation_unit import int64_accumulators
from accel_sim.hardware.compute.gemm_forms import from_rows
from accel_sim.hardware.compute.prepared import PreparedLayer
from accel_sim.hardware.config import HardwareConfig
from accel_sim.image import Conv2d, WeightedLayer
from accel_sim.numerics import threshold_to_acc


def uses_int8(prepared: PreparedLayer) -> bool:
    layer = prepared.layer
    return (prepared.weight_digits is not None and layer.in_format.signed_width <= int8_gemm.MAX_WORD_BITS
            and prepared.weight_digits.depth <= int8_gemm.MAX_DEPTH and int8_gemm.int8_matmul_is_exact())


def fuses(prepared: PreparedLayer, hw: HardwareConfig) -> bool:
    """Whether the fused int8 pass can run the layer: its int64 sums plus the bias cannot leave
    int64 (int8 sums stay below 2**48), and its float64 output holds the result exactly (words,
    or the accumulators of a last layer when they fit float64)."""
    layer = prepared.layer
    return (uses_int8(prepared) and layer.bias_acc_bits <= 62
            and (layer.out_format is not None or not int64_accumulators(layer, hw)))


def input_digits(layer: WeightedLayer, x: torch.Tensor) -> int8_gemm.Digits:
    """The GEMM's A (im2col rows of the input words) as int8 digits."""
    bits = layer.in_format.signed_width  # unsigned words take one bit more as int8 digits
    if isinstance(layer, Conv2d):
        return int8_gemm.im2col_digits(x.permute(0, 2, 3, 1), layer.kernel, layer.stride, layer.padding,
                                       layer.out_shape[1:], bits)
    return int8_gemm.split(x, bits)


def int8_accumulators(prepared: PreparedLayer, x: torch.Tensor) -> torch.Tensor:
    """Exact Σ w·a through int8 digit products, float64, logical output shape."""
    layer = prepared.layer
    return from_rows(layer, int8_gemm.matmul(input_digits(layer, x), prepared.weight_digits), x.shape[0])


def gathered_corrections(blocks: list, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correction blocks (im2col rows, filters, int64 values, True) as one C-contiguous int64
    (R, C) matrix over the R rows they touch, the slot of each of the ``rows`` im2col rows in it
    (int64 (rows,), -1 where untouched) and the C filters its columns belong to (blocks do not
    overlap)."""
    if len(blocks) == 1:  # one faulty column (WS) or PE (OS): no copy
        block_rows, filters, values, _ = blocks[0]
        slot = np.full(rows, -1, dtype=np.int64)
        slot[block_rows] = np.arange(block_rows.size)
        return np.ascontiguousarray(values.numpy()), slot, filters.astype(np.int64)
    touched = np.unique(np.concatenate([r for r, _, _, _ in blocks] or [[]])).astype(np.int64)
    corrected = np.unique(np.concatenate([f for _, f, _, _ in blocks] or [[]])).astype(np.int64)
    correction = np.zeros((touched.size, corrected.size), dtype=np.int64)
    for block_rows, filters, values, _ in blocks:
        at_rows, at_columns = np.searchsorted(touched, block_rows), np.searchsorted(corrected, filters)
        correction[at_rows[:, None], at_columns[None, :]] = values.numpy()
    slot = np.full(rows if touched.size else 0, -1, dtype=np.int64)
    slot[touched] = np.arange(touched.size)
    return correction, slot, corrected


def recombine(prepared: PreparedLayer, hw: HardwareConfig, products: int8_gemm.DigitProducts,
               out: np.ndarray, correction: np.ndarray, correction_row: np.ndarray, corrected: np.ndarray) -> None:
    """:func:`accel_sim.hardware.int8_kernels.recombine_digits` into ``out``: the activation unit's output words (the
    accumulators plus bias for a last layer), with ``correction[correction_row[m], c]`` (int64
    (R, C)) added to the sum of row m and filter ``corrected[c]`` where ``correction_row[m] ≥ 0``."""
    layer, dp = prepared.layer, hw.datapath
    fmt = layer.out_format
    mode = int8_kernels.EPILOGUE_FULL if fmt is not None else int8_kernels.EPILOGUE_BIAS
    threshold = threshold_to_acc(layer.threshold, layer.acc_frac_bits) if layer.threshold is not None else 0
    int8_kernels.recombine_digits(
        *products.recombine_args(), mode, prepared.bias.numpy().astype(np.int64), dp.acc_min, dp.acc_max,
        dp.acc_bits, int(dp.overflow == "wrap"), int8_kernels.ACTIVATION_CODES[layer.activation], threshold,
        layer.acc_frac_bits - (fmt.frac_bits if fmt is not None else 0), int8_kernels.ROUNDING_CODES[dp.rounding],
        fmt.raw_min if fmt is not None else 0, fmt.raw_max if fmt is not None else 0, correction, correction_row,
        corrected, out)
