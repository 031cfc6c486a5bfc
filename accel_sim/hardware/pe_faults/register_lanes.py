"""Strategy: weight- and product-register faults (partial-sum registers clean) whose changes fit
int32: :func:`accel_sim.hardware.product_lanes.product_fault_corrections` forms what they add to
the clean sums in int32 lanes over the batch's images, from a batch-last copy of only the
channels and input positions the faulty PEs read."""

from __future__ import annotations

import numpy as np

from accel_sim.hardware import product_lanes
from accel_sim.hardware.pe_faults.batch import LayerBatch
from accel_sim.hardware.pe_faults.image_lanes import GROUP_FILTERS, batch_last_points, group_plan
from accel_sim.hardware.pe_faults.table import FaultGroup, changed_bits, lowest_bit, touched_bits

CORRECTION = True  # the values are added to the clean accumulators


def applies(group: FaultGroup, batch: LayerBatch) -> bool:
    return group.psum_bits == 0 and unit(group, batch) is not None


def run(group: FaultGroup, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray]:
    plan = group_plan(group, batch, group.masks)
    sh, sw, ow = batch.geometry[2], batch.geometry[3], batch.geometry[6]
    words = batch.column_words(group.col)
    values = product_lanes.product_fault_corrections(
        batch_last_points(batch.x_hwc, plan), batch.x_hwc.shape[0], plan.pixel_list, plan.row_offset,
        plan.col_offset, plan.channel, words if plan.all_points else words[plan.points], plan.point_masks,
        batch.weight_bits, sh, sw, ow, unit(group, batch), GROUP_FILTERS)
    return plan.rows, values


def unit(group: FaultGroup, batch: LayerBatch) -> int | None:
    """The unit (a power of two, in bits) in which the lanes can count what the group's weight-
    and product-register faults change, or None when they cannot be followed in int32: products
    wider than 32 bits, a product fault on the sign bit, a change per MAC of 2**31 or more, or
    ``points`` changes per output that could overflow the count (kept in the group's memo)."""
    if "unit" not in group.memo:
        group.memo["unit"] = _unit(group.masks, group.fault_rows, batch.weight_bits, batch.product_bits, group.points)
    return group.memo["unit"]


def _unit(masks: np.ndarray, fault_rows: np.ndarray, weight_bits: int, product_bits: int, points: int) -> int | None:
    product = touched_bits(masks[fault_rows], 1, product_bits)
    weight = changed_bits(masks[fault_rows], 0, weight_bits)
    if product_bits > 32 or product is None or not product | weight:
        return None
    # a change a·(w' − w) + (the product's faulty bits) is below |a|·|w' − w| + 2**(top + 1), and
    # |w' − w| < 2**(top + 1) (the sign bit too: the sign-extended word moves by less than 2**width)
    largest = 2.0 ** (product_bits - weight_bits - 1) * 2.0 ** weight.bit_length() + 2.0 ** product.bit_length()
    low = lowest_bit(product | weight)
    return low if largest < 2.0**31 and points * largest / 2.0**low < 2.0**31 else None
