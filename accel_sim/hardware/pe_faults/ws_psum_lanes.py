"""Strategy: WS partial-sum faults below the accumulator's sign bit on words of at most 16 bits:
:func:`accel_sim.hardware.lane_kernels.partial_sum_corrections` forms the faulty column's running
sums in lanes of (output column, image) pairs, two channels' words multiplied and added in one
step, and counts what each fault point changes; int32 lanes when the faults stay below bit 31 and
their count cannot overflow, otherwise float64 lanes (exact: the planner checked
:func:`accel_sim.hardware.pe_faults.fits_float64`)."""

from __future__ import annotations

import numpy as np

from accel_sim.hardware import lane_kernels
from accel_sim.hardware.pe_faults.batch import LayerBatch
from accel_sim.hardware.pe_faults.image_lanes import GROUP_FILTERS, pixel_major_rows
from accel_sim.hardware.pe_faults.table import FaultGroup, lowest_bit, narrow_units

CORRECTION = True  # the values are added to the clean accumulators
BLOCK_LANES = 512  # (output column, image) lanes per task of the lane kernel: its sums stay in L1


def applies(group: FaultGroup, batch: LayerBatch) -> bool:
    return (group.pe_row is None and group.psum_bits is not None and group.psum_bits != 0
            and max(batch.weight_bits, batch.in_bits) <= 16)


def run(group: FaultGroup, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray]:
    if "pixel_major" not in group.memo:  # the lanes write a task's rows as one block
        group.memo["pixel_major"] = pixel_major_rows(np.arange(batch.pixels), batch.x_hwc.shape[0], batch.pixels)
    offset = pair_offset(group.fault_rows, batch.x_hwc.shape[3], group.period)
    x_pairs = batch.x_pairs(offset)
    kh, kw, sh, sw, ph, pw, ow = batch.geometry
    narrow = narrow_units(group.psum_bits, group.points)
    values = lane_kernels.partial_sum_corrections(
        x_pairs, batch.x_hwc.shape[0], batch.x_hwc.shape[3], offset, batch.column_pairs(group.col, offset),
        np.empty(0, dtype=np.int32 if narrow else np.float64), batch.pixels // ow, ow,
        max(1, BLOCK_LANES // x_pairs.shape[3]), GROUP_FILTERS, kh, kw, sh, sw, ph, pw, group.period,
        group.has_fault, group.masks, batch.weight_bits, batch.product_bits, lowest_bit(group.psum_bits))
    return group.memo["pixel_major"], values


def pair_offset(fault_rows: np.ndarray, channels: int, period: int) -> int:
    """How :mod:`lane_kernels` should pair the channels (0: pairs from even channels, 1: from
    odd ones) for WS partial-sum faults at MACs k ≡ r (mod ``period``), r in ``fault_rows``: a
    run of MACs ends at such a k, so with an even channel count and period, fault rows of one
    parity put every run boundary (channel r + 1 + multiples of 2) between two pairs."""
    parities = set((np.asarray(fault_rows) + 1) % 2)
    return int(parities.pop()) if len(parities) == 1 and channels % 2 == 0 and period % 2 == 0 else 0
