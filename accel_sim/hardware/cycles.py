"""Cycle and utilisation model per layer, after SCALE-Sim's analytical model.

For an array of ``R × C`` PEs and a layer whose dataflow lays ``S_r × S_c`` elements on the
array while ``T`` steps stream through (WS: window × filters, T = output pixels; OS: output
pixels × filters, T = window), the layer takes ``⌈S_r/R⌉ · ⌈S_c/C⌉`` folds; a WS fold takes
``2R + C + T − 2`` cycles (``R`` to preload the weights, ``R + C − 2`` of skew, ``T`` streaming
steps), an OS fold ``T + R + C − 2`` (nothing stationary to preload). Cycles are counts: SCALE-Sim
reports the index of a layer's last cycle, one less. Buffer traffic counts words per image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.image import Image, WeightedLayer


@dataclass(frozen=True)
class LayerCycles:
    """The model's figures for one weighted layer and one image."""

    name: str
    op: str
    m: int
    k: int
    n: int
    fold_rows: int
    fold_cols: int
    cycles_per_fold: int
    cycles: int
    macs: int
    utilisation: float  # MACs / (cycles · R · C)
    mapping_efficiency: float  # MACs / (folds · R · C · T): PEs holding work while streaming
    weight_reads: int
    activation_reads: int
    output_writes: int
    psum_reads: int

    def as_row(self) -> dict:
        return asdict(self)


def layer_cycles(layer: WeightedLayer, hw: HardwareConfig) -> LayerCycles:
    shape = gemm_shape(layer)
    dataflow = get_dataflow(hw.dataflow)
    s_r, s_c, t = dataflow.spatial(shape)
    fold_rows, fold_cols = -(-s_r // hw.rows), -(-s_c // hw.cols)
    folds = fold_rows * fold_cols
    per_fold = dataflow.fold_cycles(hw.rows, hw.cols, t)
    cycles = folds * per_fold
    pes = hw.rows * hw.cols
    weight_reads, activation_reads, output_writes, psum_reads = dataflow.traffic(shape, fold_rows, fold_cols)
    return LayerCycles(
        name=layer.name, op=layer.op, m=shape.m, k=shape.k, n=shape.n, fold_rows=fold_rows,
        fold_cols=fold_cols, cycles_per_fold=per_fold, cycles=cycles, macs=shape.macs,
        utilisation=shape.macs / (cycles * pes), mapping_efficiency=shape.macs / (folds * pes * t),
        weight_reads=weight_reads, activation_reads=activation_reads, output_writes=output_writes,
        psum_reads=psum_reads,
    )


def image_cycles(image: Image, hw: HardwareConfig) -> list[LayerCycles]:
    """One :class:`LayerCycles` per weighted layer of ``image``."""
    return [layer_cycles(layer, hw) for layer in image.weighted_layers]
