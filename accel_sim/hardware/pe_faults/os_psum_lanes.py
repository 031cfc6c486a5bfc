"""Strategy: OS partial-sum faults alone (weight and product registers clean) below bit 31:
:func:`accel_sim.hardware.product_lanes.partial_sum_fault_corrections` runs the faulty PE's
running sums modulo 2**32 in int32 lanes over the images and counts what each fault point
changes."""

from __future__ import annotations

import numpy as np

from accel_sim.hardware import product_lanes
from accel_sim.hardware.pe_faults.batch import LayerBatch
from accel_sim.hardware.pe_faults.image_lanes import GROUP_FILTERS, batch_last_points, group_plan
from accel_sim.hardware.pe_faults.table import IDENTITY, FaultGroup, lowest_bit, narrow_units

CORRECTION = True  # the values are added to the clean accumulators


def applies(group: FaultGroup, batch: LayerBatch) -> bool:
    bits = group.psum_bits
    return (group.pe_row is not None and bits is not None and 0 < bits < 2**31 and batch.product_bits <= 32
            and bool((group.masks[0, :2] == np.array(IDENTITY)).all()) and narrow_units(bits, group.points))


def run(group: FaultGroup, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray]:
    plan = group_plan(group, batch, None)
    sh, sw, ow = batch.geometry[2], batch.geometry[3], batch.geometry[6]
    values = product_lanes.partial_sum_fault_corrections(
        batch_last_points(batch.x_hwc, plan), batch.x_hwc.shape[0], plan.pixel_list, plan.row_offset,
        plan.col_offset, plan.channel, batch.column_words(group.col), *group.masks[0, 2], sh, sw, ow,
        lowest_bit(group.psum_bits), GROUP_FILTERS)
    return plan.rows, values
