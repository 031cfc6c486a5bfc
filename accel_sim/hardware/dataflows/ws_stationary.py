"""Weight-stationary dataflow (SCALE-Sim's WS).

Window elements × filters map to rows × cols: in fold ``(i, j)`` PE ``(r, c)`` holds weight
``B[i·rows + r, j·cols + c]``; the output pixels stream through, each row ``r`` receiving
``A[m, i·rows + r]``. Partial sums flow down each column; the running sum of an output from the
previous window fold enters at the top, so an output accumulates in window order.
"""

from __future__ import annotations

import numpy as np

from accel_sim.hardware.lowering import GemmShape

NAME = "ws"


def spatial(shape: GemmShape) -> tuple[int, int, int]:
    """(rows needed, cols needed, streamed steps) = (window, filters, output pixels)."""
    return shape.k, shape.n, shape.m


def pe_of(m, k, n, rows: int, cols: int):
    return np.asarray(k) % rows, np.asarray(n) % cols


def fold_of(m, k, n, rows: int, cols: int):
    return np.asarray(k) // rows, np.asarray(n) // cols


def weight_stream(shape: GemmShape, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, n) of each weight in load order: filter folds outer, window folds inner, each tile
    row-major over the PEs it occupies."""
    k = np.arange(shape.k)
    n = np.arange(shape.n)
    # sort key: (n fold, k fold, k within fold, n within fold)
    kk, nn = np.meshgrid(k, n, indexing="ij")
    order = np.lexsort(((nn % cols).ravel(), (kk % rows).ravel(), (kk // rows).ravel(), (nn // cols).ravel()))
    return kk.ravel()[order], nn.ravel()[order]


def fold_cycles(rows: int, cols: int, steps: int) -> int:
    """Cycles of one fold (a count): ``rows`` to preload the stationary weights, ``rows + cols - 2``
    of skew for the diagonal wavefront, ``steps`` streaming steps."""
    return 2 * rows + cols + steps - 2


def traffic(shape: GemmShape, fold_rows: int, fold_cols: int) -> tuple[int, int, int, int]:
    """Buffer words per image: (weight reads, activation reads, output writes, partial-sum reads).
    Weights are read once; every filter fold re-reads the activations; each row fold writes
    partial sums that the next one reads back."""
    return (shape.k * shape.n, shape.m * shape.k * fold_cols, shape.m * shape.n * fold_rows,
            shape.m * shape.n * (fold_rows - 1))
