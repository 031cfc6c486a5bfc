"""Numba kernels for register faults of PEs, as corrections in int32 lanes over the images.

A fault in a PE's product register changes each product the PE forms, by an amount that depends
on the product's bits, so every product through the PE is formed once: 1/(rows·cols) of a layer's
MACs; a weight-register fault makes it a product with the faulty weight. With the partial-sum
register clean and no partial sum saturating, an output's faulty accumulator is its clean one
plus ``Σ (faulty product − product)`` over its MACs through the PE.

Lanes are the images of the batch: the input is copied batch-last, int32, and only the channels
and positions the faulty PEs read. Products of words whose widths add up to at most 32 bits are
exact in int32; a fault below the product's sign bit changes it by less than 2**31, a multiple
of 2**low (``low``: the lowest bit it touches), and so does a weight fault's a·(w' − w), so the
changes are counted in int32 in units of 2**low (the caller checks that a change stays below
2**31 and that their count cannot overflow). The Python that checks inputs and
picks this path is :func:`accel_sim.hardware.pe_faults.faulty_column_blocks`.

Under OS every MAC of the faulty PE's outputs passes it, so faults in its partial-sum register
alone are followed the same way: the lanes hold the running sums modulo 2**32 (which have the
true sums' bits below bit 31) and count what each fault point changes
(:func:`partial_sum_fault_corrections`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _shift_right(typingctx, value, amount):
    """int32 ``value >> amount`` (0 ≤ amount < 32) as a 32-bit arithmetic shift. Numba types
    int32 >> int32 as int64, which makes the lanes below shift in 64-bit vectors."""
    if value != types.int32 or amount != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.ashr(*args)

    return types.int32(types.int32, types.int32), codegen


@njit(cache=True, parallel=True)
def batch_last_words(x, channels, needed, out):
    """Copy float64 (B, H, W, C) words (exact integers of at most 32 bits) of the channels
    ``channels`` (int64 (S,)) at the positions where ``needed`` (bool (H, W)) into int32 ``out``
    (H, W, S, B'), B' ≥ B; other positions and the lanes past B are left as they are."""
    nb, h, wd, _ = x.shape
    for t in prange(h * wd):
        y, xx = t // wd, t % wd
        if not needed[y, xx]:
            continue
        for s in range(channels.shape[0]):
            c = channels[s]
            for b in range(nb):  # strided reads, contiguous writes
                out[y, xx, s, b] = np.int32(x[b, y, xx, c])


@njit(cache=True, inline="always")
def _and_xor(m_and, m_or, m_xor):
    """A register's (and, or, xor) masks (int64) as int32 (keep, toggle) with
    ``(v & and | or) ^ xor == (v & keep) ^ toggle``: one ternary bit operation per lane."""
    return np.int32(m_and & ~m_or), np.int32(m_or ^ m_xor)


@njit(cache=True, inline="always")
def _store(out, units, first, images, j0, low):
    """A task's counts (int32 (J', B')) as int64 values into rows ``first`` … of ``out``,
    columns ``j0`` …; the lanes past ``images`` are dropped."""
    for b in range(images):
        for j in range(units.shape[0]):
            out[first + b, j0 + j] = np.int64(units[j, b]) << low


@njit(cache=True, parallel=True)
def product_fault_corrections(x, images, pixel_list, row_offset, col_offset, channel, weights, masks, weight_bits,
                              sh, sw, ow, low, group):
    """What product-register faults add to the accumulators of the outputs they touch.

    Parameters
    ----------
    x : int32 (H, W, S, B')
        The input words of the S channels the fault points read, batch last (:func:`batch_last_words`;
        a linear layer: H = W = 1); B' ≥ ``images``, and the lanes past them may hold anything.
    images : int
        B: the real images (lanes past them are ignored).
    pixel_list : int64 (I,)
        The output pixels (oy · ow + ox) whose outputs pass the faulty PEs.
    row_offset, col_offset, channel : int64 (P,)
        Per fault point (a MAC of each of those outputs through a faulty PE): its kernel row and
        column less the padding (the input position read is oy · sh + row offset, ox · sw + col
        offset) and its channel's index in ``x``.
    weights : int32 (P, J)
        The weights of each fault point's MAC, per filter.
    masks : int64 (P, 2, 3)
        The (and, or, xor) masks of the weight and of the product register at each fault point.
        The product's touch bits ``low`` … product_bits − 2 only, so a faulty product keeps the
        product's sign bit and the copies of it above (its sign extension).
    weight_bits : int
        Width of the weight register (bits; its faulty word is sign-extended from there).
    sh, sw, ow : int
        Stride and output width (1, 1, 1 for a linear layer).
    low : int
        Changes are counted in units of 2**low; the caller checks that P changes cannot overflow.
    group : int
        Filters per parallel task (a task: one pixel, one group).

    Returns
    -------
    int64 (I · B, J)
        Row i · B + b: what the faults add to output pixel ``pixel_list[i]`` of image b (pixel-
        major, so that a task writes one block of rows).
    """
    h, wd, _, nb = x.shape
    n_points, n_filters = weights.shape
    out = np.empty((pixel_list.shape[0] * images, n_filters), dtype=np.int64)
    groups = (n_filters + group - 1) // group
    shift, unit = 64 - weight_bits, np.int32(low)
    for task in prange(pixel_list.shape[0] * groups):
        i, j0 = task // groups, task % groups * group
        jn = min(n_filters - j0, group)
        oy, ox = pixel_list[i] // ow, pixel_list[i] % ow
        units = np.zeros((jn, nb), dtype=np.int32)
        for q in range(n_points):
            y, xx = oy * sh + row_offset[q], ox * sw + col_offset[q]
            keep, toggle = _and_xor(masks[q, 1, 0], masks[q, 1, 1], masks[q, 1, 2])
            if 0 <= y < h and 0 <= xx < wd:
                a = x[y, xx, channel[q]]
                for j in range(jn):
                    weight, total = weights[q, j0 + j], units[j]
                    faulty_weight = np.int32((((np.int64(weight) & masks[q, 0, 0]) | masks[q, 0, 1]) ^ masks[q, 0, 2])
                                             << shift >> shift)
                    same = weight == faulty_weight  # invariant: the loop is compiled for both cases
                    for b in range(nb):  # int32 throughout: the loop vectorises over the lanes
                        product = np.int32(a[b] * weight)
                        formed = product if same else np.int32(a[b] * faulty_weight)
                        faulty = np.int32(np.int32(formed & keep) ^ toggle)
                        total[b] = np.int32(total[b] + _shift_right(np.int32(faulty - product), unit))
            else:  # padding: a zero activation, whose product the faults still change
                zero = _shift_right(toggle, unit)  # (0 & keep) ^ toggle
                for j in range(jn):
                    for b in range(nb):
                        units[j, b] = np.int32(units[j, b] + zero)
        _store(out, units, i * images, images, j0, low)
    return out


@njit(cache=True, parallel=True)
def partial_sum_fault_corrections(x, images, pixel_list, row_offset, col_offset, channel, weights, s_and, s_or, s_xor,
                                  sh, sw, ow, low, group):
    """What faults in one PE's partial-sum register add to the accumulators of the outputs whose
    every MAC runs on it (OS), the PE's weight and product registers clean.

    Arguments as :func:`product_fault_corrections`, except: the P points are every MAC of an
    output, in order (each one a fault point); ``s_and``, ``s_or``, ``s_xor``: the register's
    masks, touching bits ``low`` … 30 only; the caller checks that P changes of less than
    2**(top + 1) counted in units of 2**low cannot overflow int32, and that no partial sum
    saturates.
    """
    h, wd, _, nb = x.shape
    n_points, n_filters = weights.shape
    out = np.empty((pixel_list.shape[0] * images, n_filters), dtype=np.int64)
    groups, unit = (n_filters + group - 1) // group, np.int32(low)
    keep, toggle = _and_xor(s_and, s_or, s_xor)
    zero = np.zeros(nb, dtype=np.int32)  # the activations of a padding position
    for task in prange(pixel_list.shape[0] * groups):
        i, j0 = task // groups, task % groups * group
        jn = min(n_filters - j0, group)
        oy, ox = pixel_list[i] // ow, pixel_list[i] % ow
        sums = np.zeros((jn, nb), dtype=np.int32)  # the faulty running sums modulo 2**32
        units = np.zeros((jn, nb), dtype=np.int32)
        for q in range(n_points):
            y, xx = oy * sh + row_offset[q], ox * sw + col_offset[q]
            a = x[y, xx, channel[q]] if 0 <= y < h and 0 <= xx < wd else zero
            for j in range(jn):
                weight, total, change = weights[q, j0 + j], sums[j], units[j]
                for b in range(nb):  # int32 arithmetic wraps like the lanes' modulus
                    before = np.int32(total[b] + a[b] * weight)
                    after = np.int32(np.int32(before & keep) ^ toggle)
                    change[b] = np.int32(change[b] + _shift_right(np.int32(after - before), unit))
                    total[b] = after
        _store(out, units, i * images, images, j0, low)
    return out
