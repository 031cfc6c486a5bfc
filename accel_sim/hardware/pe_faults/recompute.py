"""The fallback when no correction applies or a partial sum might saturate: the outputs the
faulty PEs touch are recomputed exactly from the feature map. OS: every MAC of those outputs
runs on the faulty PE, all in int64 (:func:`accel_sim.hardware.column_kernels.gemm_faulty_pe`). WS: the
MACs through the faulty PEs in int64 with the faults, the MACs between them as float64
multiply-adds (:func:`accel_sim.hardware.column_kernels.gemm_faulty_column`; exact below 2**53,
saturation a clamp per addition, wrapping applied at each fault point)."""

from __future__ import annotations

import numpy as np

from accel_sim.hardware import column_kernels
from accel_sim.hardware.pe_faults.batch import LayerBatch
from accel_sim.hardware.pe_faults.table import FaultGroup

CORRECTION = False  # the values are the outputs' accumulators


def applies(group: FaultGroup, batch: LayerBatch) -> bool:
    return True


def run(group: FaultGroup, batch: LayerBatch) -> tuple[np.ndarray, np.ndarray]:
    dp = batch.hw.datapath
    wrap = int(dp.overflow == "wrap")
    weights = batch.column_weights(group)
    if group.pe_row is not None:
        values = column_kernels.gemm_faulty_pe(batch.x_hwc, np.ascontiguousarray(weights.T), group.rows, batch.pixels,
                                        *batch.geometry, group.masks[0], batch.weight_bits, batch.product_bits,
                                        dp.acc_min, dp.acc_max, dp.acc_bits, wrap, 32)
    else:
        values = column_kernels.gemm_faulty_column(batch.x_hwc, np.ascontiguousarray(weights.T, dtype=np.float64), group.rows,
                                            batch.pixels, *batch.geometry, group.period, group.has_fault, group.masks,
                                            batch.weight_bits, batch.product_bits, dp.acc_min, dp.acc_max, dp.acc_bits,
                                            wrap, 64)
    return group.rows, values
