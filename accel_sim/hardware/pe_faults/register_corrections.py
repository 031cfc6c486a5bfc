"""Strategy: weight- and product-register faults the int32 lanes cannot follow (sign bits, wider
words): :func:`accel_sim.hardware.column_kernels.register_fault_corrections` sums what they change over
the faulty PEs' MACs in int64."""

from __future__ import annotations

import numpy as np

from accel_sim.hardware import column_kernels
from accel_sim.hardware.pe_faults.batch import LayerBatch
from accel_sim.hardware.pe_faults.table import FaultGroup

CORRECTION = True  # the values are added to the clean accumulators


def applies(group: FaultGroup, batch: LayerBatch) -> bool:
    return group.psum_bits == 0


def run(group: FaultGroup, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray]:
    values = column_kernels.register_fault_corrections(
        batch.x_hwc, np.ascontiguousarray(batch.column_weights(group).T), group.rows, batch.pixels, *batch.geometry,
        group.period, group.fault_rows, group.masks, batch.weight_bits, batch.product_bits)
    return group.rows, values
