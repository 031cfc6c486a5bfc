"""Numba kernel for WS partial-sum register faults, computed as corrections to the clean sums.

A partial-sum fault of PE (r, c) acts on the running sum after every MAC k ≡ r (mod rows) of the
filters n ≡ c, and what it does depends on that sum's bits, so the running sums must be formed:
1/cols of the layer's MACs. Where the faults touch bits below 31 this happens in int32 lanes: a
lane holds the true running sum modulo 2**32, which has the same bits there, so the lanes
follow the faulty running sums bit-exactly while what the faults change is counted beside them.
Faults on higher bits use float64 lanes, exact below 2**53. The result is the whole answer while
no partial sum saturates (the caller bounds them) or when the accumulator wraps (the difference
then wraps with the sum).

Lanes are the (output column, image) pairs of one output row: with the input batch-last
(H, C, W, B), a kernel position of a stride-1 layer reads one contiguous run of lanes, so the
multiply-adds vectorise without gathers. The Python that checks inputs, picks the lane type and
splits the work is :func:`accel_sim.hardware.pe_faults.faulty_column_blocks`."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def batch_last(x, out):
    """Copy float64 (B, H, W, C) words, exact integers, into integer ``out`` (H, C, W, B)."""
    nb, h, wd, ch = x.shape
    for t in prange(h * wd):
        y, xx = t // wd, t % wd
        for c in range(ch):
            for b in range(nb):  # strided reads, contiguous writes: faster than the reverse here
                out[y, c, xx, b] = np.int64(x[b, y, xx, c])


@njit(cache=True, inline="always")
def _accumulate(acc, x, y, c, count, base, w, j0, lane, src, n):
    """Clean MACs of channels c .. c + count − 1 at one kernel position into lanes
    ``lane .. lane + n − 1`` of filters j0 … (``acc`` row j: filter j0 + j); four channels per
    pass over the lanes."""
    cc, end = c, c + count
    while cc + 4 <= end:
        x0, x1 = x[y, cc, src:src + n], x[y, cc + 1, src:src + n]
        x2, x3 = x[y, cc + 2, src:src + n], x[y, cc + 3, src:src + n]
        for j in range(acc.shape[0]):
            f = j0 + j
            w0, w1, w2, w3 = w[base + cc, f], w[base + cc + 1, f], w[base + cc + 2, f], w[base + cc + 3, f]
            sums = acc[j, lane:lane + n]
            for q in range(n):
                sums[q] += x0[q] * w0 + x1[q] * w1 + x2[q] * w2 + x3[q] * w3
        cc += 4
    while cc < end:
        x0 = x[y, cc, src:src + n]
        for j in range(acc.shape[0]):
            w0 = w[base + cc, j0 + j]
            sums = acc[j, lane:lane + n]
            for q in range(n):
                sums[q] += x0[q] * w0
        cc += 1


@njit(cache=True, inline="always")
def _add_faulty_products(sums, diff, xs, weight, faulty_weight, p_and, p_or, p_xor, shift):
    """Products through faulty weight/product registers, in int32 (``shift`` = 32 − product
    bits), into lanes ``sums``; ``diff`` gains faulty − clean product."""
    for q in range(xs.shape[0]):
        a = xs[q]
        product = np.int32((np.int32(a * faulty_weight) & p_and) | p_or) ^ p_xor
        product = np.int32(product << shift) >> shift
        diff[q] += np.int64(product) - np.int64(np.int32(a * weight))
        sums[q] += product


@njit(cache=True, inline="always")
def _fault_partial_sums(sums, units, s_and, s_or, s_xor, low):
    """The partial-sum register's faults on every lane (int32, or float64 holding exact
    integers); ``units`` gains what they change, in units of 2**low (the lowest bit they touch)."""
    for q in range(sums.shape[0]):
        before = np.int64(sums[q])
        after = ((before & s_and) | s_or) ^ s_xor
        sums[q] = after
        units[q] += (after - before) >> low


@njit(cache=True, parallel=True, fastmath=True)
def partial_sum_corrections(x, w, oh, ow, block_cols, group, kh, kw, sh, sw, ph, pw, period, has_fault, masks,
                            weight_bits, product_bits, low):
    """Faulty − clean accumulators of the outputs one faulty PE column touches under WS, exact.

    Parameters
    ----------
    x : int32 (H, C, W, B)
        Input words, batch last (a linear layer: H = W = 1).
    w : int32 or float64 (K, J)
        The filters of the faulty column, K in im2col order (kernel row, kernel col, channel);
        the lane type. int32 lanes hold running sums modulo 2**32; float64 lanes hold them
        exactly (the caller guarantees every partial sum is below 2**53).
    oh, ow : int
        Output height and width (1, 1 for a linear layer).
    block_cols, group : int
        A parallel task is ``block_cols`` output columns of one output row (its lanes: their
        (column, image) pairs) and ``group`` filters.
    kh, kw, sh, sw, ph, pw : int
        Kernel, stride and padding (1, 1, 1, 1, 0, 0 for a linear layer).
    period, has_fault : int, bool (period,)
        MAC k passes a faulty PE when ``has_fault[k % period]`` (period = array rows).
    masks : int64 (period, 3, 3)
        Per residue and register (weight, product, partial sum): the (and, or, xor) masks of the
        composed faults; identity (-1, 0, 0). Partial-sum masks touch only bits below the sign
        bits of the lanes and of the accumulator (the caller checks).
    weight_bits, product_bits : int
        Widths of the weight and product registers (bits); products are formed in int32, so
        ``product_bits`` ≤ 32.
    low : int
        The lowest bit the partial-sum masks touch: their changes are counted in units of 2**low
        in lanes of ``w``'s type, which the caller checks cannot overflow.

    Returns
    -------
    int64 (B · oh · ow, J)
        What the faults add to each output's accumulator (row image · pixels + pixel); valid
        while no partial sum saturates (or, for a wrapping accumulator, before the final wrap).
    """
    h, ch, wd, nb = x.shape
    flat = x.reshape((h, ch, wd * nb))
    n_filters = w.shape[1]
    out = np.empty((nb * oh * ow, n_filters), dtype=np.int64)
    clean_run = np.zeros(period, dtype=np.int64)  # MACs from residue r up to the next fault point
    registers_clean = True  # no weight- or product-register faults: every product is the clean one
    for r in range(period):
        while clean_run[r] < period and not has_fault[(r + clean_run[r]) % period]:
            clean_run[r] += 1
        for reg in range(2):
            registers_clean &= masks[r, reg, 0] == -1 and masks[r, reg, 1] == 0 and masks[r, reg, 2] == 0
    groups = (n_filters + group - 1) // group
    col_blocks = (ow + block_cols - 1) // block_cols
    for task in prange(oh * col_blocks * groups):
        j0 = task % groups * group
        oy, oxa = task // groups // col_blocks, task // groups % col_blocks * block_cols
        oxb = min(ow, oxa + block_cols)
        lanes = (oxb - oxa) * nb  # lane (ox − oxa)·nb + image
        jn = min(n_filters - j0, group)  # row j: filter j0 + j
        acc = np.zeros((jn, lanes), dtype=w.dtype)  # the faulty running sums (int32: modulo 2**32)
        units = np.zeros((jn, lanes), dtype=w.dtype)  # partial-sum changes / 2**low
        diff = np.zeros((jn, 0 if registers_clean else lanes), dtype=np.int64)  # faulty − clean products
        r = 0
        for ki in range(kh):
            y = oy * sh + ki - ph
            for kj in range(kw):
                # output columns [ox0, ox1) of the task read input columns ox·sw + kj − pw inside the map
                ox0 = max(oxa, -((kj - pw) // sw))
                ox1 = min(oxb, (wd - 1 + pw - kj) // sw + 1)
                if y < 0 or y >= h or ox1 <= ox0:
                    ox0, ox1 = oxa, oxa
                # stride 1: one run of lanes; otherwise one run of nb lanes per output column
                segments = (1 if sw == 1 else ox1 - ox0) if ox1 > ox0 else 0
                size = (ox1 - ox0) * nb if sw == 1 else nb
                first_src = (ox0 * sw + kj - pw) * nb
                first_lane = (ox0 - oxa) * nb
                base = (ki * kw + kj) * ch
                c = 0
                while c < ch:
                    # clean registers: the MAC at a fault point is a clean one, so it joins the run
                    count = min(ch - c, clean_run[r] + (1 if registers_clean else 0))
                    for s in range(segments):
                        _accumulate(acc, flat, y, c, count, base, w, j0, first_lane + s * size,
                                    first_src + s * sw * nb, size)
                    c += count
                    r = (r + count) % period
                    if registers_clean:
                        last = (r + period - 1) % period  # residue of the run's last MAC
                        if count > 0 and has_fault[last]:
                            m = masks[last]
                            for j in range(jn):
                                _fault_partial_sums(acc[j], units[j], m[2, 0], m[2, 1], m[2, 2], low)
                        continue
                    if c == ch:
                        break
                    m = masks[r]
                    p_and, p_or, p_xor = np.int32(m[1, 0]), np.int32(m[1, 1]), np.int32(m[1, 2])
                    shift = 32 - product_bits
                    zero_product = np.int32(np.int32(p_or ^ p_xor) << shift) >> shift  # a zero activation's product
                    for j in range(jn):
                        weight = np.int64(w[base + c, j0 + j])
                        faulty_weight = ((weight & m[0, 0]) | m[0, 1]) ^ m[0, 2]
                        faulty_weight = (faulty_weight << (64 - weight_bits)) >> (64 - weight_bits)
                        for s in range(segments):
                            src, lane = first_src + s * sw * nb, first_lane + s * size
                            _add_faulty_products(acc[j, lane:lane + size], diff[j, lane:lane + size],
                                                 flat[y, c, src:src + size], np.int32(weight),
                                                 np.int32(faulty_weight), p_and, p_or, p_xor, shift)
                        if zero_product != 0:  # padding lanes: the product register's faults still act
                            for lo, hi in ((0, first_lane), (first_lane + (ox1 - ox0) * nb, lanes)):
                                for q in range(lo, hi):
                                    diff[j, q] += zero_product
                                    acc[j, q] += zero_product
                        _fault_partial_sums(acc[j], units[j], m[2, 0], m[2, 1], m[2, 2], low)
                    c += 1
                    r = (r + 1) % period
        for ox in range(oxa, oxb):
            for b in range(nb):
                row = (b * oh + oy) * ow + ox
                q = (ox - oxa) * nb + b
                for j in range(jn):
                    total = np.int64(units[j, q]) << low
                    out[row, j0 + j] = total if registers_clean else total + diff[j, q]
    return out
