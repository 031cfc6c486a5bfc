"""Output-stationary dataflow (SCALE-Sim's OS).

Output pixels × filters map to rows × cols: in fold ``(i, j)`` PE ``(r, c)`` accumulates output
``(i·rows + r, j·cols + c)`` while the window streams through, element ``k`` at step ``k``.
Output pixels are numbered within one image, so the mapping does not depend on the batch.
"""

from __future__ import annotations

import numpy as np

from accel_sim.hardware.dataflows.base import Dataflow
from accel_sim.hardware.lowering import GemmShape


class OutputStationary(Dataflow):
    name = "os"
    row_axis = "m"
    col_axis = "n"
    description = "output stationary: output pixels x filters on the array, the window streams"

    def weight_stream(self, shape: GemmShape, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Filter folds outer, then window order, then the filters of the fold."""
        kk, nn = np.meshgrid(np.arange(shape.k), np.arange(shape.n), indexing="ij")
        order = np.lexsort(((nn % cols).ravel(), kk.ravel(), (nn // cols).ravel()))
        return kk.ravel()[order], nn.ravel()[order]

    def fold_cycles(self, rows: int, cols: int, steps: int) -> int:
        """No stationary operand to preload; the window streams in ``steps`` steps with
        ``rows + cols - 2`` cycles of skew for the wavefront to cross the array."""
        return steps + rows + cols - 2

    def traffic(self, shape: GemmShape, fold_rows: int, fold_cols: int) -> tuple[int, int, int, int]:
        """Each filter fold re-reads the window of every pixel fold; outputs leave the array once."""
        return shape.k * shape.n * fold_rows, shape.m * shape.k * fold_cols, shape.m * shape.n, 0


DATAFLOW = OutputStationary()
