"""The protocol every dataflow follows: which GEMM axes lie along the array's rows and columns.

A layer on one image is a GEMM over three axes (:mod:`accel_sim.hardware.lowering`): ``m``
output pixels, ``k`` window elements, ``n`` filters. A dataflow lays two of them out on the
array, ``row_axis`` along its rows and ``col_axis`` along its columns, and streams the third
through it; in fold ``(i, j)`` PE ``(r, c)`` works on row-axis index ``i·rows + r`` and col-axis
index ``j·cols + c``. Every output accumulates in window order. The mapping (which PE performs
a MAC, which fold) follows from the two axes alone; a dataflow adds its cycle count per fold,
its buffer traffic and the order in which its weights enter the weight buffer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from accel_sim.hardware.lowering import GemmShape

GEMM_AXES = ("m", "k", "n")  # output pixel, window element, filter: the codes the kernels take


class Dataflow(ABC):
    """One dataflow. Subclasses set ``name``, ``row_axis``, ``col_axis`` and ``description`` and
    implement :meth:`fold_cycles`, :meth:`traffic` and :meth:`weight_stream`."""

    name: str
    row_axis: str
    col_axis: str
    description: str

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        axes = (cls.row_axis, cls.col_axis)
        if len(set(axes)) != 2 or not set(axes) <= set(GEMM_AXES):
            raise TypeError(f"dataflow {cls.name!r}: row_axis and col_axis must be two of {GEMM_AXES}, got {axes}")

    @property
    def stream_axis(self) -> str:
        """The GEMM axis that streams through the array."""
        return next(a for a in GEMM_AXES if a not in (self.row_axis, self.col_axis))

    @property
    def axis_codes(self) -> tuple[int, int]:
        """(row axis, col axis) as indices into :data:`GEMM_AXES` (the numba kernels' arguments)."""
        return GEMM_AXES.index(self.row_axis), GEMM_AXES.index(self.col_axis)

    @property
    def holds_weights(self) -> bool:
        """Whether each PE holds one weight for a whole fold (window × filters on the array): a
        permanent fault of its weight register is then a fault of the weights it holds."""
        return (self.row_axis, self.col_axis) == ("k", "n")

    def spatial(self, shape: GemmShape) -> tuple[int, int, int]:
        """(rows needed, cols needed, streamed steps) of a GEMM."""
        size = {"m": shape.m, "k": shape.k, "n": shape.n}
        return size[self.row_axis], size[self.col_axis], size[self.stream_axis]

    def pe_of(self, m, k, n, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """The PE (row, col) that performs the MAC of pixel ``m``, window element ``k`` and filter
        ``n`` (numpy arrays, broadcast)."""
        at = {"m": np.asarray(m), "k": np.asarray(k), "n": np.asarray(n)}
        return at[self.row_axis] % rows, at[self.col_axis] % cols

    def fold_of(self, m, k, n, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """The fold (row fold, col fold) in which that MAC happens."""
        at = {"m": np.asarray(m), "k": np.asarray(k), "n": np.asarray(n)}
        return at[self.row_axis] // rows, at[self.col_axis] // cols

    def pe_macs(self, shape: GemmShape, row: int, col: int, rows: int, cols: int) -> tuple[np.ndarray, ...]:
        """Pixels, window elements and filters whose MACs PE (row, col) performs on one image;
        every combination of the three is one MAC of that PE."""
        axes = {"m": np.arange(shape.m), "k": np.arange(shape.k), "n": np.arange(shape.n)}
        axes[self.row_axis] = axes[self.row_axis][axes[self.row_axis] % rows == row]
        axes[self.col_axis] = axes[self.col_axis][axes[self.col_axis] % cols == col]
        return axes["m"], axes["k"], axes["n"]

    def touched_outputs(self, pe_rows: np.ndarray, pe_cols: np.ndarray, rows: int, cols: int, batch: int,
                        pixels: int, filters: int) -> tuple[np.ndarray, np.ndarray]:
        """(im2col rows, filters) covering every output that a MAC of the PEs in rows ``pe_rows``
        or columns ``pe_cols`` contributes to, on ``batch`` images of ``pixels`` output pixels
        (a superset where a window axis lies on the array: every output then passes them)."""
        m = np.arange(batch * pixels, dtype=np.int64)
        n = np.arange(filters, dtype=np.int64)
        for axis, held, side in ((self.row_axis, pe_rows, rows), (self.col_axis, pe_cols, cols)):
            if axis == "m":
                m = m[np.isin((m % pixels) % side, held)]
            elif axis == "n":
                n = n[np.isin(n % side, held)]
        return m, n

    @abstractmethod
    def fold_cycles(self, rows: int, cols: int, steps: int) -> int:
        """Cycles of one fold (a count; SCALE-Sim reports the index of the last cycle, one less)."""

    @abstractmethod
    def traffic(self, shape: GemmShape, fold_rows: int, fold_cols: int) -> tuple[int, int, int, int]:
        """Buffer words per image: (weight reads, activation reads, output writes, partial-sum reads)."""

    @abstractmethod
    def weight_stream(self, shape: GemmShape, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """(k, n) of the layer's weights in the order they enter the weight buffer (word ``j`` of
        the stream sits at buffer address ``j mod capacity``); each weight is loaded once per
        image batch."""
