"""Output-stationary dataflow (SCALE-Sim's OS).

Output pixels × filters map to rows × cols: in fold ``(i, j)`` PE ``(r, c)`` accumulates output
``(i·rows + r, j·cols + c)`` while the window streams through, element ``k`` at step ``k``.
Output pixels are numbered within one image, so the mapping does not depend on the batch.
"""

from __future__ import annotations

import numpy as np

from accel_sim.hardware.lowering import GemmShape

NAME = "os"


def spatial(shape: GemmShape) -> tuple[int, int, int]:
    """(rows needed, cols needed, streamed steps) = (output pixels, filters, window)."""
    return shape.m, shape.n, shape.k


def pe_of(m, k, n, rows: int, cols: int):
    return np.asarray(m) % rows, np.asarray(n) % cols


def fold_of(m, k, n, rows: int, cols: int):
    return np.asarray(m) // rows, np.asarray(n) // cols


def weight_stream(shape: GemmShape, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, n) of each weight in load order: filter folds outer, then window order, then the
    filters of the fold."""
    kk, nn = np.meshgrid(np.arange(shape.k), np.arange(shape.n), indexing="ij")
    order = np.lexsort(((nn % cols).ravel(), kk.ravel(), (nn // cols).ravel()))
    return kk.ravel()[order], nn.ravel()[order]


def fold_cycles(rows: int, cols: int, steps: int) -> int:
    """Cycles of one fold (a count): no stationary operand to preload; the window streams in
    ``steps`` steps with ``rows + cols - 2`` cycles of skew for the wavefront to cross the array."""
    return steps + rows + cols - 2


def traffic(shape: GemmShape, fold_rows: int, fold_cols: int) -> tuple[int, int, int, int]:
    """Buffer words per image: (weight reads, activation reads, output writes, partial-sum reads).
    Each filter fold re-reads the window of every pixel fold; outputs leave the array once."""
    return shape.k * shape.n * fold_rows, shape.m * shape.k * fold_cols, shape.m * shape.n, 0
