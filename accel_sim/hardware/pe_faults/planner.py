"""Which strategy computes the outputs a faulty WS column or OS PE touches.

Each strategy is a module with ``applies(group, batch)``, ``run(group, batch) -> (im2col rows,
values)`` and ``CORRECTION`` (whether the values are added to the clean accumulators or replace
them). The corrections hold only where no partial sum, clean or faulty, can saturate; the
planner checks that, takes the first strategy of :data:`STRATEGIES` that applies, and falls back
to :mod:`.recompute`. A new strategy is one module and one entry here, tested against the
faithful kernel and the plain-Python reference (``tests/pe_reference.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from accel_sim.hardware import int8_gemm
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.pe_faults import (
    os_psum_lanes,
    os_weight_gemm,
    recompute,
    register_corrections,
    register_lanes,
    ws_psum_lanes,
)
from accel_sim.hardware.pe_faults.batch import LayerBatch
from accel_sim.hardware.pe_faults.table import FaultGroup, PeFaults, fault_groups
from accel_sim.numerics import EXACT_LIMIT, MARGIN

STRATEGIES = (os_weight_gemm, os_psum_lanes, register_lanes, register_corrections, ws_psum_lanes)


def fast_strategies_apply(hw: HardwareConfig) -> bool:
    """Whether the hardware's dataflow puts filters along the array columns, which every strategy
    assumes (a faulty PE's column owns the filters ≡ col mod cols); the rows hold window elements
    (WS: one group per faulty column) or output pixels (OS: one group per faulty PE)."""
    return get_dataflow(hw.dataflow).col_axis == "n"


def fits_float64(hw: HardwareConfig, product_bits: int) -> bool:
    """Whether :func:`faulty_column_blocks` is exact on this hardware: between two fault points
    (at most ``rows`` MACs apart under WS) a partial sum grows from an accumulator value by at
    most ``rows`` products, and must stay below 2**53."""
    return 2.0 ** (hw.datapath.acc_bits - 1) + hw.rows * 2.0 ** (product_bits - 1) < EXACT_LIMIT


def faulty_column_blocks(x_hwc: np.ndarray, weight_t_hwc: np.ndarray, column_words: Callable[[int], np.ndarray],
                         column_pairs: Callable[[int, int], np.ndarray], geometry: tuple[int, ...],
                         pixels: int, hw: HardwareConfig, faults: PeFaults, weight_bits: int, product_bits: int,
                         x_bounds: Sequence[Callable[[], float]],
                         abs_col_sums: np.ndarray, input_digits: Callable[[], int8_gemm.Digits] | None = None,
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """Exact accumulators of the outputs touched by permanent PE faults, in blocks (one per faulty
    WS column or OS PE).

    Parameters
    ----------
    x_hwc, weight_t_hwc, column_words, column_pairs, geometry, pixels, weight_bits, product_bits, input_digits
        As the fields of :class:`accel_sim.hardware.pe_faults.batch.LayerBatch`.
    x_bounds : sequence of callables
        Bounds of max |x|, cheapest first (the input format's largest word, then the measured
        maximum); a bound is evaluated only when the ones before it are too loose.
    abs_col_sums : float64 (N,)
        Per filter, Σ_k |w[k, n]|: times max |x|, it bounds every clean partial sum.

    Yields
    ------
    (rows int64 (I,), filters int64 (J,), int64 (I, J), correction bool)
        Im2col rows, filters and either their accumulators (bias not added) or, when
        ``correction``, what to add to the clean accumulators; blocks do not overlap. The caller
        checks :func:`fits_float64` first.
    """
    batch = LayerBatch(x_hwc, weight_t_hwc, column_words, column_pairs, geometry, pixels, hw, weight_bits,
                       product_bits, input_digits)
    key = (hw, weight_t_hwc.shape, x_hwc.shape[0], pixels)
    if key not in faults._groups:  # the per-layer analysis of the faults, made on the first batch
        faults._groups[key] = fault_groups(faults, hw, weight_t_hwc.shape, x_hwc.shape[0], pixels)
    for group in faults._groups[key]:
        strategy = next((s for s in STRATEGIES if s.applies(group, batch)), None)
        if strategy is None or not _cannot_saturate(group, batch, x_bounds, abs_col_sums):
            strategy = recompute
        rows, values = strategy.run(group, batch)
        yield rows, group.filters, values, strategy.CORRECTION


def _cannot_saturate(group: FaultGroup, batch: LayerBatch, x_bounds: Sequence[Callable[[], float]],
                     abs_col_sums: np.ndarray) -> bool:
    """Whether no partial sum of the group's outputs, clean or faulty, can leave the accumulator's
    range (a wrapping one: 2**53 less its half range), for one of the bounds of max |x|."""
    dp = batch.hw.datapath
    limit = EXACT_LIMIT - 2.0 ** (dp.acc_bits - 1) if dp.overflow == "wrap" else float(dp.acc_max) * MARGIN
    col_max = float(abs_col_sums[group.filters].max())
    # each fault point changes a partial sum by at most |a|·|w' − w| + |p' − p| + the partial-sum
    # bits it may change: < max|x|·2**weight_bits + 2**product_bits + psum_bits
    per_point = (2.0**batch.weight_bits, 2.0**batch.product_bits + group.psum_bits)
    for bound in x_bounds:
        x_max = bound()
        if x_max * col_max + group.points * (x_max * per_point[0] + per_point[1]) < limit:
            return True
    return False
