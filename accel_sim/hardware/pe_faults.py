"""PE faults: the table the kernels read, and the fast exact path for the outputs they touch.

A permanent fault of PE (r, c) touches, under WS, every output of the filters n ≡ c (mod cols)
(the PE works on MACs k ≡ r of each); under OS, the outputs of pixels ≡ r (mod rows) of those
filters (every MAC of them). Where no partial sum can saturate, :func:`faulty_column_blocks`
computes what the faults add to these outputs' clean accumulators: for weight- and
product-register faults with :func:`accel_sim.hardware.product_lanes.product_fault_corrections`
(int32 lanes) or, on sign bits, :func:`accel_sim.hardware.kernels.register_fault_corrections`;
for WS partial-sum faults below the accumulator's sign bit with
:func:`accel_sim.hardware.lane_kernels.partial_sum_corrections`; for OS partial-sum faults alone
below bit 31 with :func:`accel_sim.hardware.product_lanes.partial_sum_fault_corrections`. OS
faults on a 16-bit weight's sign bit alone make the PE's outputs an int8 GEMM with its faulty
weights. Otherwise it recomputes the outputs with
:func:`accel_sim.hardware.kernels.gemm_faulty_column` (WS: the MACs through faulty PEs in int64
with the faults, the rest as float64 multiply-adds) or :func:`accel_sim.hardware.kernels.gemm_faulty_pe`
(OS, all in int64). A transient fault hits one MAC, hence one output."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

import torch

from accel_sim.hardware import int8_gemm, kernels, lane_kernels, product_lanes
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow

_IDENTITY = (-1, 0, 0)  # (and, or, xor) masks of a register without faults
_MARGIN = 1 - 2.0**-40  # float64 bounds are computed with rounding; stay clear of the edge
_BLOCK_LANES = 512  # (output column, image) lanes per task of the lane kernel: its sums stay in L1
_GROUP_FILTERS = 8  # filters per task of the lane kernel: work for every core when the pixels are few


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


def fast_strategies_apply(hw: HardwareConfig) -> bool:
    """Whether the hardware's dataflow puts filters along the array columns, which every strategy
    of :func:`faulty_column_blocks` assumes (a faulty PE's column owns the filters ≡ col mod
    cols); the rows hold window elements (WS: one group per faulty column) or output pixels (OS:
    one group per faulty PE)."""
    return get_dataflow(hw.dataflow).col_axis == "n"


def fits_float64(hw: HardwareConfig, product_bits: int) -> bool:
    """Whether :func:`faulty_column_blocks` is exact on this hardware: between two fault points
    (at most ``rows`` MACs apart under WS) a partial sum grows from an accumulator value by at
    most ``rows`` products, and must stay below 2**53."""
    return 2.0 ** (hw.datapath.acc_bits - 1) + hw.rows * 2.0 ** (product_bits - 1) < 2.0**53


def _register_masks(faults: PeFaults, pe: int) -> np.ndarray:
    """(3, 3) int64: per register, the (and, or, xor) masks of the PE's permanent faults
    applied in table order (a composition of bit operations is again of that form)."""
    masks = np.array([_IDENTITY] * 3, dtype=np.int64)
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


class _FaultGroup(NamedTuple):
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


class _LanePlan(NamedTuple):
    """What the image lanes of :mod:`product_lanes` read for a group, the same on every batch: the
    output pixels (``pixel_list``) and their im2col ``rows`` (pixel-major, then image), the fault
    ``points`` (MACs k, int64 (P,); ``all_points`` when they are every MAC in order) with their
    (P, 2, 3) weight and product register masks (``point_masks``, product lanes only), the S
    ``channels`` they read, and per point its channel's index among them and its kernel row and
    column less the padding; ``needed`` (bool (H, W)): the input positions read."""

    pixel_list: np.ndarray
    rows: np.ndarray
    points: np.ndarray
    all_points: bool
    point_masks: np.ndarray | None
    channels: np.ndarray
    channel: np.ndarray
    row_offset: np.ndarray
    col_offset: np.ndarray
    needed: np.ndarray


def _fault_groups(faults: PeFaults, hw: HardwareConfig, weight_shape: tuple[int, int], batch: int,
                  pixels: int) -> list[_FaultGroup]:
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
            masks = np.tile(np.array(_IDENTITY, dtype=np.int64), (hw.rows, 3, 1))
            for r in fault_rows:  # the other rows' registers are clean
                masks[r] = _register_masks(faults, r * hw.cols + col)
        else:
            # the pixels pe_row, pe_row + rows, … of every image
            rows = (np.arange(batch)[:, None] * pixels + np.arange(pe_row, pixels, hw.rows)).ravel()
            period = 1
            has_fault = np.ones(1, dtype=np.bool_)
            masks = _register_masks(faults, pe_row * hw.cols + col)[None]
        if not filters.size or not rows.size:
            continue
        fault_rows = np.flatnonzero(has_fault)
        points = sum(len(range(r, depth, period)) for r in fault_rows)
        groups.append(_FaultGroup(int(col), None if pe_row is None else int(pe_row), filters, rows, period, has_fault,
                                  masks, fault_rows, _touched_bits(masks, 2, hw.datapath.acc_bits), points, {}))
    return groups


def faulty_column_blocks(x_hwc: np.ndarray, weight_t_hwc: np.ndarray, column_words: Callable[[int], np.ndarray],
                         column_pairs: Callable[[int, int], np.ndarray], geometry: tuple[int, ...],
                         pixels: int, hw: HardwareConfig, faults: PeFaults, weight_bits: int, product_bits: int,
                         x_bounds: Sequence[Callable[[], float]],
                         abs_col_sums: np.ndarray, input_digits: Callable[[], int8_gemm.Digits] | None = None,
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """Exact accumulators of the outputs touched by permanent PE faults, in blocks.

    Parameters
    ----------
    x_hwc : float64 (B, H, W, C)
        The layer's input feature maps (words), channels last; (B, 1, 1, F) for a linear layer.
    weight_t_hwc : int64 (N, K)
        Weights, one row per filter, K in im2col order.
    column_words : callable
        ``column_words(col)`` gives the rows of ``weight_t_hwc`` of the filters col, col + cols, …
        transposed, int32 (K, J) (made once per run by the caller; asked for by the int32 lanes
        of product and OS partial-sum faults).
    column_pairs : callable
        ``column_pairs(col, offset)`` gives :func:`lane_kernels.column_pairs` of the filters col,
        col + cols, … (their rows of ``weight_t_hwc``) with that pairing offset (made once per run
        by the caller; asked for only for WS partial-sum faults on words of ≤ 16 bits).
    geometry : (kh, kw, sh, sw, ph, pw, ow)
        Kernel, stride, padding and output width of the layer (1×1, stride 1, no padding, width 1
        for a linear layer).
    pixels : int
        Output pixels per image.
    x_bounds : sequence of callables
        Bounds of max |x|, cheapest first (the input format's largest word, then the measured
        maximum); a bound is evaluated only when the ones before it are too loose.
    abs_col_sums : float64 (N,)
        Per filter, Σ_k |w[k, n]|: times max |x|, it bounds every clean partial sum.
    input_digits : callable, optional
        Gives the int8 digits of the layer's im2col matrix (:mod:`accel_sim.hardware.int8_gemm`;
        the clean path's, so no new pass over x), where that path is exact here. OS faults in a
        PE's weight register alone then cost an int8 GEMM of the PE's rows with its faulty weights.

    Yields
    ------
    (rows int64 (I,), filters int64 (J,), int64 (I, J), correction bool)
        Im2col rows, filters and either their accumulators (bias not added) or, when
        ``correction``, what to add to the clean accumulators (where no partial sum can
        saturate); blocks do not overlap. The caller checks :func:`fits_float64` first.
    """
    dp = hw.datapath
    in_bits = product_bits - weight_bits  # the activations' word width (bits)
    x_pairs = functools.cache(lambda offset: _batch_last_pairs(x_hwc, offset))  # for partial-sum faults, made once
    key = (hw, weight_t_hwc.shape, x_hwc.shape[0], pixels)
    if key not in faults._groups:
        faults._groups[key] = _fault_groups(faults, hw, weight_t_hwc.shape, x_hwc.shape[0], pixels)
    for col, pe_row, filters, rows, period, has_fault, masks, fault_rows, psum_bits, points, memo in faults._groups[key]:
        column_weights = weight_t_hwc[col::hw.cols]  # (J, K), a view: the filters' weights
        # corrections: register faults alone (a sum over the fault points), WS partial-sum faults
        # (running sums in lanes, which multiply 16-bit words), OS partial-sum faults alone on
        # bits below 31 (running sums in int32 lanes)
        ws_lanes = pe_row is None and max(weight_bits, in_bits) <= 16
        os_lanes = (pe_row is not None and psum_bits is not None and 0 < psum_bits < 2**31 and product_bits <= 32
                    and (masks[0, :2] == np.array(_IDENTITY)).all() and _narrow_units(psum_bits, points))
        if psum_bits is not None and (psum_bits == 0 or ws_lanes or os_lanes):
            limit = 2.0**53 - 2.0 ** (dp.acc_bits - 1) if dp.overflow == "wrap" else float(dp.acc_max) * _MARGIN
            col_max = float(abs_col_sums[filters].max())

            def fits(x_max: float) -> bool:  # no partial sum, clean or faulty, can saturate
                # each fault point changes a partial sum by at most |a|·|w' − w| + |p' − p| + the
                # partial-sum bits it may change: < max|x|·2**weight_bits + 2**product_bits + psum_bits
                return x_max * col_max + points * (x_max * 2.0**weight_bits + 2.0**product_bits + psum_bits) < limit

            if any(fits(bound()) for bound in x_bounds):
                unit = _product_lanes(masks, fault_rows, weight_bits, product_bits, points) if psum_bits == 0 else None
                if (unit is None and pe_row is not None and input_digits is not None
                        and _weight_register_only(masks[0])):
                    yield rows, filters, _faulty_weight_accumulators(
                        input_digits(), rows, column_weights, masks[0, 0], weight_bits, hw), False
                    continue
                if os_lanes or unit is not None:  # lanes over the images of each pixel
                    if "lanes" not in memo:
                        pixel_list = np.arange(0 if pe_row is None else pe_row, pixels,
                                               1 if pe_row is None else hw.rows)
                        memo["lanes"] = _lane_plan(x_hwc.shape, geometry, pixel_list, pixels, period, fault_rows,
                                                   None if os_lanes else masks, product_bits)
                    plan = memo["lanes"]
                    rows = plan.rows
                    values = (_os_partial_sum_corrections(x_hwc, column_words(col), plan, geometry, masks[0, 2],
                                                          _lowest_bit(psum_bits)) if os_lanes else
                              _product_corrections(x_hwc, column_words(col), plan, geometry, weight_bits, unit))
                elif psum_bits == 0:
                    values = kernels.register_fault_corrections(
                        x_hwc, np.ascontiguousarray(column_weights.T), rows, pixels, *geometry, period,
                        fault_rows, masks, weight_bits, product_bits)
                else:
                    if "pixel_major" not in memo:  # the lanes write a task's rows as one block
                        memo["pixel_major"] = _pixel_major_rows(np.arange(pixels), x_hwc.shape[0], pixels)
                    rows = memo["pixel_major"]
                    offset = _pair_offset(fault_rows, x_hwc.shape[3], period)
                    values = _partial_sum_corrections(x_pairs(offset), x_hwc.shape, offset, column_pairs(col, offset),
                                                      geometry, pixels, period, has_fault, masks, weight_bits,
                                                      product_bits, psum_bits, points)
                yield rows, filters, values, True
                continue
        wrap = int(dp.overflow == "wrap")
        if pe_row is not None:  # OS: every MAC of these outputs runs on the faulty PE
            w = np.ascontiguousarray(column_weights.T)
            values = kernels.gemm_faulty_pe(x_hwc, w, rows, pixels, *geometry, masks[0], weight_bits, product_bits,
                                            dp.acc_min, dp.acc_max, dp.acc_bits, wrap, 32)
        else:
            w = np.ascontiguousarray(column_weights.T, dtype=np.float64)
            values = kernels.gemm_faulty_column(x_hwc, w, rows, pixels, *geometry, period, has_fault, masks,
                                                weight_bits, product_bits, dp.acc_min, dp.acc_max, dp.acc_bits,
                                                wrap, 64)
        yield rows, filters, values, False


def _weight_register_only(masks: np.ndarray) -> bool:
    """Whether (3, 3) register masks leave the product and partial-sum registers alone."""
    return bool((masks[1:] == np.array(_IDENTITY)).all())


def _faulty_weight_accumulators(a: int8_gemm.Digits, rows: np.ndarray, weights: np.ndarray, masks: np.ndarray,
                                weight_bits: int, hw: HardwareConfig) -> np.ndarray:
    """int64 (I, J): the accumulators of im2col rows ``rows`` whose every MAC reads its weight
    through one faulty weight register (OS), exact while no partial sum saturates: the int8
    GEMM of those rows' digits (from ``a``) with the faulty words of ``weights`` (int64 (J, K))
    under the register's (and, or, xor) ``masks``, wrapped if the accumulator wraps."""
    faulty = ((weights & masks[0]) | masks[1]) ^ masks[2]
    faulty = (faulty << (64 - weight_bits)) >> (64 - weight_bits)  # the register's word, sign-extended
    b = int8_gemm.prepare_weights(torch.from_numpy(np.ascontiguousarray(faulty.T)), weight_bits)
    values = int8_gemm.digit_products(a.take_rows(rows), b).column_sums(np.arange(weights.shape[0]))
    values = values.astype(np.int64)  # exact integers below 2**53
    dp = hw.datapath
    if dp.overflow == "wrap" and dp.acc_bits < 64:
        half = np.int64(1) << (dp.acc_bits - 1)
        values = ((values + half) & ((half << 1) - 1)) - half
    return values


def _partial_sum_corrections(x_pairs: np.ndarray, x_shape: tuple[int, ...], offset: int, weight_pairs: np.ndarray,
                             geometry: tuple[int, ...], pixels: int, period: int, has_fault: np.ndarray,
                             masks: np.ndarray, weight_bits: int, product_bits: int, psum_bits: int,
                             points: int) -> np.ndarray:
    """:func:`lane_kernels.partial_sum_corrections` for a faulty WS column (the filters whose
    ``weight_pairs`` it gets, paired with ``offset`` as ``x_pairs`` is), in tasks of column blocks
    of each output row and filter groups (result rows pixel-major, then image); int32 lanes when
    the partial-sum faults stay below bit 31 and their changes' count (``points`` per output,
    each below 2**(top + 1) in units of 2**low) cannot overflow, otherwise float64 lanes (exact:
    the caller has checked :func:`fits_float64`; three times faster than int64, which has no
    fast vector multiply)."""
    kh, kw, sh, sw, ph, pw, ow = geometry
    low = _lowest_bit(psum_bits)
    narrow = _narrow_units(psum_bits, points)
    return lane_kernels.partial_sum_corrections(
        x_pairs, x_shape[0], x_shape[3], offset, weight_pairs, np.empty(0, dtype=np.int32 if narrow else np.float64),
        pixels // ow, ow, max(1, _BLOCK_LANES // x_pairs.shape[3]), _GROUP_FILTERS, kh, kw, sh, sw, ph, pw, period,
        has_fault, masks, weight_bits, product_bits, low)


def _product_lanes(masks: np.ndarray, fault_rows: np.ndarray, weight_bits: int, product_bits: int,
                   points: int) -> int | None:
    """The unit (a power of two, in bits) in which :func:`product_lanes.product_fault_corrections`
    can count what weight- and product-register faults (the partial-sum registers clean) change,
    or None when they cannot be followed in int32: products wider than 32 bits, a product fault
    on the sign bit, a change per MAC of 2**31 or more, or ``points`` changes per output that
    could overflow the count."""
    product = _touched_bits(masks[fault_rows], 1, product_bits)
    weight = _changed_bits(masks[fault_rows], 0, weight_bits)
    if product_bits > 32 or product is None or not product | weight:
        return None
    # a change a·(w' − w) + (the product's faulty bits) is below |a|·|w' − w| + 2**(top + 1), and
    # |w' − w| < 2**(top + 1) (the sign bit too: the sign-extended word moves by less than 2**width)
    largest = 2.0 ** (product_bits - weight_bits - 1) * 2.0 ** weight.bit_length() + 2.0 ** product.bit_length()
    low = _lowest_bit(product | weight)
    return low if largest < 2.0**31 and points * largest / 2.0**low < 2.0**31 else None


def _lane_plan(x_shape: tuple[int, ...], geometry: tuple[int, ...], pixel_list: np.ndarray, pixels: int, period: int,
               fault_rows: np.ndarray, masks: np.ndarray | None, product_bits: int) -> _LanePlan:
    """The :class:`_LanePlan` of a group whose outputs are the pixels ``pixel_list`` (int64 (I,))
    of every image of float64 (B, H, W, C) input words, with fault points k ≡ r (mod
    ``period``) for r in ``fault_rows``, and, for product lanes, the (rows, 3, 3) register
    ``masks`` (None: partial-sum lanes)."""
    kh, kw, sh, sw, ph, pw, ow = geometry
    nb, h, wd, ch = x_shape
    depth = kh * kw * ch
    per_row = [np.arange(r, depth, period) for r in fault_rows]
    points = np.concatenate(per_row)
    point_masks = None
    if masks is not None:
        width = (1 << product_bits) - 1  # faults beyond the product's width have no bit to act on
        point_masks = np.repeat(masks[fault_rows, :2], [p.size for p in per_row], axis=0)  # (P, 2, 3)
        point_masks[:, 1] &= np.array([-1, width, width])
        point_masks[:, 1, 0] |= ~width
    read = np.zeros(ch, dtype=np.bool_)  # the channels the points read, and their index among them
    read[points % ch] = True
    position = points // ch
    ki, kj = np.divmod(np.flatnonzero(np.bincount(position, minlength=kh * kw)), kw)  # the kernel positions read
    ys = pixel_list[:, None] // ow * sh + ki[None, :] - ph
    xs = pixel_list[:, None] % ow * sw + kj[None, :] - pw
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < wd)
    needed = np.zeros((h, wd), dtype=np.bool_)
    needed[ys[inside], xs[inside]] = True
    rows = _pixel_major_rows(pixel_list, nb, pixels)
    every_mac = bool(np.array_equal(points, np.arange(depth)))  # in order: the weights need no gather
    return _LanePlan(pixel_list, rows, points, every_mac, point_masks, np.flatnonzero(read),
                     (np.cumsum(read) - 1)[points % ch], position // kw - ph, position % kw - pw, needed)


def _pixel_major_rows(pixel_list: np.ndarray, batch: int, pixels: int) -> np.ndarray:
    """im2col rows (image · pixels + pixel) of the pixels ``pixel_list`` of ``batch`` images,
    pixel-major: the order in which the lane kernels write their results."""
    return (pixel_list[:, None] + np.arange(batch) * pixels).ravel()


def _product_corrections(x_hwc: np.ndarray, words: np.ndarray, plan: _LanePlan, geometry: tuple[int, ...],
                         weight_bits: int, low: int) -> np.ndarray:
    """:func:`product_lanes.product_fault_corrections` for a group's outputs (``plan``) and the
    filters whose weights are ``words`` (int32 (K, J)), changes counted in units of 2**``low``;
    rows of the result pixel-major, then image."""
    sh, sw, ow = geometry[2], geometry[3], geometry[6]
    return product_lanes.product_fault_corrections(
        _batch_last_points(x_hwc, plan), x_hwc.shape[0], plan.pixel_list, plan.row_offset, plan.col_offset,
        plan.channel, words if plan.all_points else words[plan.points], plan.point_masks, weight_bits, sh, sw, ow, low,
        _GROUP_FILTERS)


def _os_partial_sum_corrections(x_hwc: np.ndarray, words: np.ndarray, plan: _LanePlan, geometry: tuple[int, ...],
                                masks: np.ndarray, low: int) -> np.ndarray:
    """:func:`product_lanes.partial_sum_fault_corrections` for an OS PE's outputs (``plan``, every
    MAC a point) and the filters whose weights are ``words`` (int32 (K, J)), under the
    partial-sum register's (and, or, xor) ``masks``; rows of the result pixel-major, then image."""
    sh, sw, ow = geometry[2], geometry[3], geometry[6]
    return product_lanes.partial_sum_fault_corrections(
        _batch_last_points(x_hwc, plan), x_hwc.shape[0], plan.pixel_list, plan.row_offset, plan.col_offset,
        plan.channel, words, *masks, sh, sw, ow, low, _GROUP_FILTERS)


def _batch_last_points(x_hwc: np.ndarray, plan: _LanePlan) -> np.ndarray:
    """What the lanes of :mod:`accel_sim.hardware.product_lanes` read: an int32 batch-last copy
    (H, W, S, B') of the float64 (B, H, W, C) words of only the S channels and the input
    positions the ``plan``'s fault points read."""
    nb, h, wd, _ = x_hwc.shape
    step = lane_kernels.LANE_STEP
    x = np.empty((h, wd, plan.channels.size, -(-nb // step) * step), dtype=np.int32)
    product_lanes.batch_last_words(x_hwc, plan.channels, plan.needed, x)
    return x


def _lowest_bit(bits: int) -> int:
    """Index of the lowest set bit of ``bits`` (> 0): the unit 2**low in which lanes count changes."""
    return (bits & -bits).bit_length() - 1


def _narrow_units(bits: int, points: int) -> bool:
    """Whether faults on the bits ``bits`` (below 31) of a partial-sum or product register at
    ``points`` fault points per output can be followed in int32 lanes: each changes a value by
    less than 2**(top + 1), counted in units of 2**low, and the count must stay below 2**31."""
    low, top = _lowest_bit(bits), bits.bit_length() - 1
    return top < 31 and points * 2.0 ** (top + 1 - low) < 2.0**31


def _pair_offset(fault_rows: np.ndarray, channels: int, period: int) -> int:
    """How :mod:`lane_kernels` should pair the channels (0: pairs from even channels, 1: from
    odd ones) for WS partial-sum faults at MACs k ≡ r (mod ``period``), r in ``fault_rows``: a
    run of MACs ends at such a k, so with an even channel count and period, fault rows of one
    parity put every run boundary (channel r + 1 + multiples of 2) between two pairs."""
    parities = set((np.asarray(fault_rows) + 1) % 2)
    return int(parities.pop()) if len(parities) == 1 and channels % 2 == 0 and period % 2 == 0 else 0


def _batch_last_pairs(x_hwc: np.ndarray, offset: int) -> np.ndarray:
    """float64 (B, H, W, C) words of at most 16 bits as int32 (H, ⌈(C + offset)/2⌉, W, B') channel
    pairs (:func:`lane_kernels.batch_last_pairs`), B' = B rounded up to a whole vector step of lanes."""
    step = lane_kernels.LANE_STEP
    b, h, w, c = x_hwc.shape
    out = np.empty((h, (c + offset + 1) // 2, w, -(-b // step) * step), dtype=np.int32)
    lane_kernels.batch_last_pairs(x_hwc, offset, out)
    return out


def _changed_bits(masks: np.ndarray, register: int, width: int) -> int:
    """The value of the bits of a ``width``-bit register (0 weight, 1 product, 2 partial sum)
    that the (…, 3, 3) masks' faults may change (0: none)."""
    and_, or_, xor = (np.bitwise_or.reduce(v.ravel()) for v in
                      (~masks[..., register, 0], masks[..., register, 1], masks[..., register, 2]))
    return int(and_ | or_ | xor) & ((1 << width) - 1)


def _touched_bits(masks: np.ndarray, register: int, width: int) -> int | None:
    """:func:`_changed_bits`, or None when they include the register's sign bit (a change that
    is not bounded by the other bits)."""
    touched = _changed_bits(masks, register, width)
    return None if touched >> (width - 1) else touched


