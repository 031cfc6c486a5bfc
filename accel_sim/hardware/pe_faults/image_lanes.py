"""The image lanes' plan for a group (pixels, fault points, channels and input positions read)
and the batch-last int32 copy of what they read: shared by the product-lane and OS
partial-sum-lane strategies (:mod:`accel_sim.hardware.product_lanes`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from accel_sim.hardware import lane_kernels, product_lanes

GROUP_FILTERS = 8  # filters per task of the lane kernels: work for every core when the pixels are few


class LanePlan(NamedTuple):
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


def lane_plan(x_shape: tuple[int, ...], geometry: tuple[int, ...], pixel_list: np.ndarray, pixels: int, period: int,
               fault_rows: np.ndarray, masks: np.ndarray | None, product_bits: int) -> LanePlan:
    """The :class:`LanePlan` of a group whose outputs are the pixels ``pixel_list`` (int64 (I,))
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
    rows = pixel_major_rows(pixel_list, nb, pixels)
    every_mac = bool(np.array_equal(points, np.arange(depth)))  # in order: the weights need no gather
    return LanePlan(pixel_list, rows, points, every_mac, point_masks, np.flatnonzero(read),
                     (np.cumsum(read) - 1)[points % ch], position // kw - ph, position % kw - pw, needed)


def pixel_major_rows(pixel_list: np.ndarray, batch: int, pixels: int) -> np.ndarray:
    """im2col rows (image · pixels + pixel) of the pixels ``pixel_list`` of ``batch`` images,
    pixel-major: the order in which the lane kernels write their results."""
    return (pixel_list[:, None] + np.arange(batch) * pixels).ravel()


def batch_last_points(x_hwc: np.ndarray, plan: LanePlan) -> np.ndarray:
    """What the lanes of :mod:`accel_sim.hardware.product_lanes` read: an int32 batch-last copy
    (H, W, S, B') of the float64 (B, H, W, C) words of only the S channels and the input
    positions the ``plan``'s fault points read."""
    nb, h, wd, _ = x_hwc.shape
    step = lane_kernels.LANE_STEP
    x = np.empty((h, wd, plan.channels.size, -(-nb // step) * step), dtype=np.int32)
    product_lanes.batch_last_words(x_hwc, plan.channels, plan.needed, x)
    return x


def group_plan(group, batch, masks: np.ndarray | None) -> LanePlan:
    """The :class:`LanePlan` of a group on this batch shape (kept in the group's memo): its
    pixels (OS: those of the PE's row; WS: all) with, for product lanes, the register ``masks``
    (None: partial-sum lanes)."""
    key = ("lane plan", masks is None)
    if key not in group.memo:
        pixel_list = np.arange(0 if group.pe_row is None else group.pe_row, batch.pixels,
                               1 if group.pe_row is None else batch.hw.rows)
        group.memo[key] = lane_plan(batch.x_hwc.shape, batch.geometry, pixel_list, batch.pixels, group.period,
                                    group.fault_rows, masks, batch.product_bits)
    return group.memo[key]
