"""PE faults as the kernels read them (a CSR table per PE) and as the fast strategies plan them
(one group per faulty WS column or OS PE, with its registers' composed bit masks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from accel_sim.hardware import kernels
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow

IDENTITY = (-1, 0, 0)  # (and, or, xor) masks of a register without faults


@dataclass(frozen=True)
class PeFaults:
    """PE faults in the CSR layout the faithful kernel reads (see :mod:`accel_sim.hardware.kernels`).

    ``pe_start`` has ``rows·cols + 1`` entries; the other arrays one entry per fault, sorted by PE.
    ``mac`` is -1 for a fault present at every MAC, or the one MAC (batch numbering) it hits.
    """

    pe_start: np.ndarray
    register: np.ndarray
    bit: np.ndarray
    model: np.ndarray
    mac: np.ndarray
    # faulty_column_blocks' per-layer analysis of these faults, made on the first batch
    _groups: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _masks: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # array_masks, by width

    @staticmethod
    def none(rows: int, cols: int) -> "PeFaults":
        empty = np.zeros(0, dtype=np.int64)
        return PeFaults(np.zeros(rows * cols + 1, dtype=np.int64), empty, empty, empty, empty)

    @staticmethod
    def build(rows: int, cols: int, pe_row, pe_col, register, bit, model, mac) -> "PeFaults":
        """CSR table from per-fault arrays (any order)."""
        pe = np.asarray(pe_row, np.int64) * cols + np.asarray(pe_col, np.int64)
        order = np.argsort(pe, kind="stable")
        start = np.zeros(rows * cols + 1, dtype=np.int64)
        np.add.at(start, pe + 1, 1)
        return PeFaults(np.cumsum(start), *(np.asarray(v, np.int64)[order] for v in (register, bit, model, mac)))

    @property
    def count(self) -> int:
        return int(self.register.size)

    def faulty_pes(self, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the PEs holding at least one fault."""
        pe = np.nonzero(np.diff(self.pe_start))[0]
        return pe // cols, pe % cols


    def transient_outputs(self, depth: int, filters: int) -> tuple[np.ndarray, np.ndarray]:
        """(im2col row, filter) of the one output each transient fault hits (may repeat)."""
        mac = self.mac[self.mac >= 0]
        return mac // (depth * filters), mac % filters


def register_masks(faults: PeFaults, pe: int, registers: int = 3) -> np.ndarray:
    """(registers, 3) int64: per register code, the (and, or, xor) masks of the PE's permanent
    faults applied in table order (a composition of bit operations is again of that form)."""
    masks = np.array([IDENTITY] * registers, dtype=np.int64)
    for f in range(faults.pe_start[pe], faults.pe_start[pe + 1]):
        if faults.mac[f] >= 0:
            continue
        and_, or_, xor = masks[faults.register[f]]
        bit = np.int64(1) << np.int64(faults.bit[f])
        if faults.model[f] == kernels.MODEL_FLIP:
            xor ^= bit
        else:  # stuck-at: the bit no longer depends on the value or earlier faults
            and_, or_, xor = and_ & ~bit, (or_ | bit) if faults.model[f] == kernels.MODEL_STUCK_AT_1 else or_ & ~bit, xor & ~bit
        masks[faults.register[f]] = (and_, or_, xor)
    return masks


def array_masks(faults: PeFaults, registers: int) -> tuple[np.ndarray, np.ndarray]:
    """The permanent faults of every PE as masks: bool (PEs,) whether a PE has any, and int64
    (PEs, registers, 3) its :func:`register_masks` (identity for the others); made once per
    table (every batch and block of a layer reads the same)."""
    if registers in faults._masks:
        return faults._masks[registers]
    n_pes = faults.pe_start.size - 1
    faulty = np.diff(faults.pe_start) > 0
    masks = np.tile(np.array(IDENTITY, dtype=np.int64), (n_pes, registers, 1))
    for pe in np.flatnonzero(faulty):
        masks[pe] = register_masks(faults, int(pe), registers)
    faults._masks[registers] = faulty, masks
    return faulty, masks


class FaultGroup(NamedTuple):
    """A faulty WS column or OS PE of one layer: what :func:`faulty_column_blocks` needs on every
    batch. ``rows`` are the im2col rows it touches (shared by every batch: not to be written);
    ``masks`` (period, 3, 3) the composed register masks per fault row (``has_fault``,
    ``fault_rows``); ``points`` fault points per output; ``psum_bits`` the partial-sum bits the
    faults may change (None: the sign bit too)."""

    col: int
    pe_row: int | None  # OS: the PE's row; WS: None (every row of the column)
    filters: np.ndarray
    rows: np.ndarray
    period: int
    has_fault: np.ndarray
    masks: np.ndarray
    fault_rows: np.ndarray
    psum_bits: int | None
    points: int
    memo: dict  # what the lane paths derive from the group (no weights, no activations), made on first use


def fault_groups(faults: PeFaults, hw: HardwareConfig, weight_shape: tuple[int, int], batch: int,
                  pixels: int) -> list[FaultGroup]:
    """The groups of :func:`faulty_column_blocks` for a layer of (N, K) weights on ``batch`` images
    of ``pixels`` output pixels: WS, one per faulty column (every row, fault points k ≡ its faulty
    rows); OS, one per faulty PE (its pixels, every MAC a fault point). Groups that touch no output
    are left out."""
    n_filters, depth = weight_shape
    permanent_pes = np.unique(np.repeat(np.arange(hw.rows * hw.cols), np.diff(faults.pe_start))[faults.mac < 0])
    if get_dataflow(hw.dataflow).row_axis == "k":  # the whole window passes every column
        members = [(c, None, np.unique(permanent_pes[permanent_pes % hw.cols == c] // hw.cols))
                   for c in np.unique(permanent_pes % hw.cols)]
    else:
        members = [(pe % hw.cols, pe // hw.cols, None) for pe in permanent_pes]
    groups = []
    for col, pe_row, fault_rows in members:
        filters = np.arange(col, n_filters, hw.cols, dtype=np.int64)
        if pe_row is None:
            rows, period = np.arange(batch * pixels, dtype=np.int64), hw.rows
            has_fault = np.zeros(hw.rows, dtype=np.bool_)
            has_fault[fault_rows] = True
            masks = np.tile(np.array(IDENTITY, dtype=np.int64), (hw.rows, 3, 1))
            for r in fault_rows:  # the other rows' registers are clean
                masks[r] = register_masks(faults, r * hw.cols + col)
        else:
            # the pixels pe_row, pe_row + rows, … of every image
            rows = (np.arange(batch)[:, None] * pixels + np.arange(pe_row, pixels, hw.rows)).ravel()
            period = 1
            has_fault = np.ones(1, dtype=np.bool_)
            masks = register_masks(faults, pe_row * hw.cols + col)[None]
        if not filters.size or not rows.size:
            continue
        fault_rows = np.flatnonzero(has_fault)
        points = sum(len(range(r, depth, period)) for r in fault_rows)
        groups.append(FaultGroup(int(col), None if pe_row is None else int(pe_row), filters, rows, period, has_fault,
                                  masks, fault_rows, touched_bits(masks, 2, hw.datapath.acc_bits), points, {}))
    return groups


def lowest_bit(bits: int) -> int:
    """Index of the lowest set bit of ``bits`` (> 0): the unit 2**low in which lanes count changes."""
    return (bits & -bits).bit_length() - 1


def narrow_units(bits: int, points: int) -> bool:
    """Whether faults on the bits ``bits`` (below 31) of a partial-sum or product register at
    ``points`` fault points per output can be followed in int32 lanes: each changes a value by
    less than 2**(top + 1), counted in units of 2**low, and the count must stay below 2**31."""
    low, top = lowest_bit(bits), bits.bit_length() - 1
    return top < 31 and points * 2.0 ** (top + 1 - low) < 2.0**31


def changed_bits(masks: np.ndarray, register: int, width: int) -> int:
    """The value of the bits of a ``width``-bit register (0 weight, 1 product, 2 partial sum)
    that the (…, 3, 3) masks' faults may change (0: none)."""
    and_, or_, xor = (np.bitwise_or.reduce(v.ravel()) for v in
                      (~masks[..., register, 0], masks[..., register, 1], masks[..., register, 2]))
    return int(and_ | or_ | xor) & ((1 << width) - 1)


def touched_bits(masks: np.ndarray, register: int, width: int) -> int | None:
    """:func:`changed_bits`, or None when they include the register's sign bit (a change that
    is not bounded by the other bits)."""
    touched = changed_bits(masks, register, width)
    return None if touched >> (width - 1) else touched
