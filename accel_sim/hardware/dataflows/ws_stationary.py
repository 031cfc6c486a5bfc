"""Weight-stationary dataflow (SCALE-Sim's WS).

Window elements × filters map to rows × cols: in fold ``(i, j)`` PE ``(r, c)`` holds weight
``B[i·rows + r, j·cols + c]``; the output pixels stream through, each row ``r`` receiving
``A[m, i·rows + r]``. Partial sums flow down each column; the running sum of an output from the
previous window fold enters at the top, so an output accumulates in window order.
"""

from __future__ import annotations

import numpy as np

from accel_sim.hardware.dataflows.base import Dataflow
from accel_sim.hardware.lowering import GemmShape


class WeightStationary(Dataflow):
    name = "ws"
    row_axis = "k"
    col_axis = "n"
    description = "weight stationary: window x filters on the array, output pixels stream"

    def weight_stream(self, shape: GemmShape, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Filter folds outer, window folds inner, each tile row-major over the PEs it occupies."""
        kk, nn = np.meshgrid(np.arange(shape.k), np.arange(shape.n), indexing="ij")
        # sort key: (n fold, k fold, k within fold, n within fold)
        order = np.lexsort(((nn % cols).ravel(), (kk % rows).ravel(), (kk // rows).ravel(), (nn // cols).ravel()))
        return kk.ravel()[order], nn.ravel()[order]

    def fold_cycles(self, rows: int, cols: int, steps: int) -> int:
        """``rows`` to preload the stationary weights, ``rows + cols - 2`` of skew for the diagonal
        wavefront, ``steps`` streaming steps."""
        return 2 * rows + cols + steps - 2

    def traffic(self, shape: GemmShape, fold_rows: int, fold_cols: int) -> tuple[int, int, int, int]:
        """Weights are read once; every filter fold re-reads the activations; each row fold writes
        partial sums that the next one reads back."""
        return (shape.k * shape.n, shape.m * shape.k * fold_cols, shape.m * shape.n * fold_rows,
                shape.m * shape.n * (fold_rows - 1))


DATAFLOW = WeightStationary()
