"""Strategy: an OS PE whose faults are all in its weight register, where the image lanes cannot
follow them (a 16-bit weight's sign bit). Every MAC of the PE's outputs reads its weight through
that register, so the outputs are an int8 GEMM of the PE's im2col rows (taken from the clean
path's digits) with the faulty words of the column's filters."""

from __future__ import annotations

import numpy as np
import torch

from accel_sim.hardware import int8_gemm
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.pe_faults import register_lanes
from accel_sim.hardware.pe_faults.batch import LayerBatch
from accel_sim.hardware.pe_faults.table import IDENTITY, FaultGroup

CORRECTION = False  # the values are the outputs' accumulators


def applies(group: FaultGroup, batch: LayerBatch) -> bool:
    return (group.pe_row is not None and batch.input_digits is not None and group.psum_bits == 0
            and weight_register_only(group.masks[0]) and register_lanes.unit(group, batch) is None)


def run(group: FaultGroup, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray]:
    return group.rows, faulty_weight_accumulators(batch.input_digits(), group.rows, batch.column_weights(group),
                                                  group.masks[0, 0], batch.weight_bits, batch.hw)


def weight_register_only(masks: np.ndarray) -> bool:
    """Whether (3, 3) register masks leave the product and partial-sum registers alone."""
    return bool((masks[1:] == np.array(IDENTITY)).all())


def faulty_weight_accumulators(a: int8_gemm.Digits, rows: np.ndarray, weights: np.ndarray, masks: np.ndarray,
                                weight_bits: int, hw: HardwareConfig) -> np.ndarray:
    """int64 (I, J): the accumulators of im2col rows ``rows`` whose every MAC reads its weight
    through one faulty weight register (OS), exact while no partial sum saturates: the int8
    GEMM of those rows' digits (from ``a``) with the faulty words of ``weights`` (int64 (J, K))
    under the register's (and, or, xor) ``masks``, wrapped if the accumulator wraps."""
    faulty = ((weights & masks[0]) | masks[1]) ^ masks[2]
    faulty = (faulty << (64 - weight_bits)) >> (64 - weight_bits)  # the register's word, sign-extended
    b = int8_gemm.prepare_weights(torch.from_numpy(np.ascontiguousarray(faulty.T)), weight_bits)
    values = int8_gemm.digit_products(a.take_rows(rows), b).column_sums(np.arange(weights.shape[0]))
    values = values.astype(np.int64)  # exact integers below 2**53
    dp = hw.datapath
    if dp.overflow == "wrap" and dp.acc_bits < 64:
        half = np.int64(1) << (dp.acc_bits - 1)
        values = ((values + half) & ((half << 1) - 1)) - half
    return values
