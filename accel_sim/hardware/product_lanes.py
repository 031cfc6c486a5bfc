"""Numba kernels for product-register faults of PEs, computed as corrections in int32 lanes.

A fault in a PE's product register changes each product the PE forms, by an amount that depends
on the product's bits, so every product through the PE is formed once: 1/(rows·cols) of a layer's
MACs. With no other register of the PE faulty and no partial sum saturating, an output's faulty
accumulator is its clean one plus ``Σ (faulty product − product)`` over its MACs through the PE.

Lanes are the images of the batch: the input is copied batch-last, int32, and only the channels
and positions the faulty PEs read. Products of words whose widths add up to at most 32 bits are
exact in int32; a fault below the product's sign bit changes it by less than 2**31, a multiple
of 2**low (``low``: the lowest bit it touches), so the changes are counted in int32 in units of
2**low (the caller checks that the count cannot overflow). The Python that checks inputs and
picks this path is :func:`accel_sim.hardware.pe_faults.faulty_column_blocks`.
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


@njit(cache=True, parallel=True)
def product_fault_corrections(x, images, pixel_list, row_offset, col_offset, channel, weights, p_and, p_or, p_xor, sh,
                              sw, ow, low, group):
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
    p_and, p_or, p_xor : int32 (P,)
        The product register's (and, or, xor) masks at each fault point; they touch bits
        ``low`` … product_bits − 2 only, so a faulty product keeps the product's sign bit and
        the copies of it above (its sign extension).
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
    n_pixels = pixel_list.shape[0]
    out = np.empty((n_pixels * images, n_filters), dtype=np.int64)
    groups = (n_filters + group - 1) // group
    unit = np.int32(low)
    for task in prange(n_pixels * groups):
        i, j0 = task // groups, task % groups * group
        jn = min(n_filters - j0, group)
        oy, ox = pixel_list[i] // ow, pixel_list[i] % ow
        units = np.zeros((jn, nb), dtype=np.int32)
        for q in range(n_points):
            y, xx = oy * sh + row_offset[q], ox * sw + col_offset[q]
            m_and, m_or, m_xor = p_and[q], p_or[q], p_xor[q]
            if 0 <= y < h and 0 <= xx < wd:
                a = x[y, xx, channel[q]]
                for j in range(jn):
                    weight, total = weights[q, j0 + j], units[j]
                    for b in range(nb):  # int32 throughout: the loop vectorises over the lanes
                        product = np.int32(a[b] * weight)
                        faulty = np.int32(np.int32(np.int32(product & m_and) | m_or) ^ m_xor)
                        total[b] = np.int32(total[b] + _shift_right(np.int32(faulty - product), unit))
            else:  # padding: a zero activation, whose product the faults still change
                zero = _shift_right(np.int32(m_or ^ m_xor), unit)
                for j in range(jn):
                    for b in range(nb):
                        units[j, b] = np.int32(units[j, b] + zero)
        for b in range(images):
            for j in range(jn):
                out[i * images + b, j0 + j] = np.int64(units[j, b]) << low
    return out
