"""Numba kernels for WS partial-sum register faults, computed as corrections to the clean sums.

A partial-sum fault of PE (r, c) acts after every MAC k ≡ r (mod rows) of the filters n ≡ c, and
what it does depends on the bits of the running sum there, so those running sums must be
formed: 1/cols of the layer's MACs. These kernels form them in integer lanes of 32 (or 64) bits.
A fault on bits below the lane's sign bit sees the same bits in a lane as in the true running
sum (both are the same integer modulo 2**lane_bits), so the lanes follow the faulty running sums
bit-exactly while the exact difference faulty − clean is summed beside them in int64. That
difference is the whole answer while no partial sum saturates (the caller bounds them) or when
the accumulator wraps (the difference then wraps with the sum).

Lanes are the (output column, image) pairs of one output row: with the input batch-last
(H, C, W, B), a kernel position of a stride-1 layer reads one contiguous run of lanes, so the
multiply-adds vectorise without gathers. The Python that checks inputs and picks lane widths is
:func:`accel_sim.hardware.pe_faults.faulty_column_blocks`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def batch_last(x, out):
    """Copy float64 (B, C, H, W) words, exact integers, into integer ``out`` (H, C, W, B)."""
    nb, ch, h, wd = x.shape
    for t in prange(h * ch):
        y, c = t // ch, t % ch
        for xx in range(wd):
            for b in range(nb):
                out[y, c, xx, b] = np.int64(x[b, c, y, xx])


@njit(cache=True, inline="always")
def _accumulate(acc, x, y, c, count, base, w, lane, src, n):
    """Clean MACs of channels c .. c + count − 1 at one kernel position into lanes
    ``lane .. lane + n − 1`` of every filter; four channels per pass over the lanes."""
    cc, end = c, c + count
    while cc + 4 <= end:
        x0, x1 = x[y, cc, src:src + n], x[y, cc + 1, src:src + n]
        x2, x3 = x[y, cc + 2, src:src + n], x[y, cc + 3, src:src + n]
        for j in range(w.shape[1]):
            w0, w1, w2, w3 = w[base + cc, j], w[base + cc + 1, j], w[base + cc + 2, j], w[base + cc + 3, j]
            sums = acc[j, lane:lane + n]
            for q in range(n):
                sums[q] += x0[q] * w0 + x1[q] * w1 + x2[q] * w2 + x3[q] * w3
        cc += 4
    while cc < end:
        x0 = x[y, cc, src:src + n]
        for j in range(w.shape[1]):
            w0 = w[base + cc, j]
            sums = acc[j, lane:lane + n]
            for q in range(n):
                sums[q] += x0[q] * w0
        cc += 1


@njit(cache=True, inline="always")
def _add_faulty_products(sums, diff, xs, weight, faulty_weight, p_and, p_or, p_xor, product_bits):
    """Products through faulty weight/product registers into lanes ``sums``; ``diff`` gains
    faulty − clean product."""
    shift = 64 - product_bits
    for q in range(xs.shape[0]):
        a = np.int64(xs[q])
        product = ((((a * faulty_weight) & p_and) | p_or) ^ p_xor) << shift >> shift
        sums[q] += product
        diff[q] += product - a * weight


@njit(cache=True, inline="always")
def _fault_partial_sums(sums, diff, s_and, s_or, s_xor):
    """The partial-sum register's faults on every lane; ``diff`` gains what they change."""
    for q in range(sums.shape[0]):
        before = sums[q]
        sums[q] = ((before & s_and) | s_or) ^ s_xor
        diff[q] += np.int64(sums[q]) - np.int64(before)


@njit(cache=True, parallel=True)
def partial_sum_fault_corrections(x, w, oh, ow, kh, kw, sh, sw, ph, pw, period, has_fault, masks, weight_bits,
                                  product_bits):
    """Faulty − clean accumulators of every output of one PE column's filters under WS, exact.

    Parameters
    ----------
    x : int16, int32 or int64 (H, C, W, B)
        Input words, batch last (a linear layer: H = W = 1).
    w : int32 or int64 (K, J)
        The column's filters, K in im2col order (kernel row, kernel col, channel); the lane type.
    oh, ow, kh, kw, sh, sw, ph, pw : int
        Output size, kernel, stride and padding (1, 1, 1, 1, 1, 1, 0, 0 for a linear layer).
    period, has_fault : int, bool (period,)
        MAC k passes a faulty PE when ``has_fault[k % period]`` (period = array rows).
    masks : int64 (period, 3, 3)
        Per residue and register (weight, product, partial sum): the (and, or, xor) masks of the
        composed faults; identity (-1, 0, 0). Partial-sum masks touch only bits below the sign
        bits of the lanes and of the accumulator (the caller checks).
    weight_bits, product_bits : int
        Widths of the weight and product registers (bits).

    Returns
    -------
    int64 (B · oh · ow, J)
        Per output (row image · pixels + pixel), what the faults add to its accumulator, valid
        while no partial sum saturates (or, for a wrapping accumulator, before the final wrap).
    """
    h, ch, wd, nb = x.shape
    flat = x.reshape((h, ch, wd * nb))
    n_filters = w.shape[1]
    lanes = ow * nb
    out = np.empty((nb * oh * ow, n_filters), dtype=np.int64)
    clean_run = np.zeros(period, dtype=np.int64)  # MACs from residue r up to the next fault point
    registers_clean = True  # no weight- or product-register faults: products need no int64 pass
    for r in range(period):
        while clean_run[r] < period and not has_fault[(r + clean_run[r]) % period]:
            clean_run[r] += 1
        for reg in range(2):
            registers_clean &= masks[r, reg, 0] == -1 and masks[r, reg, 1] == 0 and masks[r, reg, 2] == 0
    for oy in prange(oh):
        acc = np.zeros((n_filters, lanes), dtype=w.dtype)  # low bits of the faulty running sums
        diff = np.zeros((n_filters, lanes), dtype=np.int64)  # faulty − clean running sums
        r = 0
        for ki in range(kh):
            y = oy * sh + ki - ph
            for kj in range(kw):
                # output columns [ox0, ox1) read input columns ox·sw + kj − pw inside the map
                ox0 = max(0, -((kj - pw) // sw))
                ox1 = min(ow, (wd - 1 + pw - kj) // sw + 1)
                if y < 0 or y >= h or ox1 <= ox0:
                    ox0, ox1 = 0, 0
                # stride 1: one run of lanes; otherwise one run of nb lanes per output column
                segments = (1 if sw == 1 else ox1 - ox0) if ox1 > ox0 else 0
                size = (ox1 - ox0) * nb if sw == 1 else nb
                first_src = (ox0 * sw + kj - pw) * nb
                base = (ki * kw + kj) * ch
                c = 0
                while c < ch:
                    if not has_fault[r]:
                        count = min(ch - c, clean_run[r])
                        for s in range(segments):
                            _accumulate(acc, flat, y, c, count, base, w, ox0 * nb + s * size, first_src + s * sw * nb,
                                        size)
                        c += count
                        r = (r + count) % period
                        continue
                    m = masks[r]
                    for j in range(n_filters):
                        sums, changes = acc[j], diff[j]
                        weight = w[base + c, j]
                        if registers_clean:
                            for s in range(segments):
                                xs = flat[y, c, first_src + s * sw * nb:first_src + s * sw * nb + size]
                                part = sums[ox0 * nb + s * size:ox0 * nb + (s + 1) * size]
                                for q in range(size):
                                    part[q] += xs[q] * weight
                        else:
                            shift = 64 - weight_bits
                            faulty_weight = ((((np.int64(weight) & m[0, 0]) | m[0, 1]) ^ m[0, 2]) << shift) >> shift
                            for s in range(segments):
                                src, lane = first_src + s * sw * nb, ox0 * nb + s * size
                                _add_faulty_products(sums[lane:lane + size], changes[lane:lane + size],
                                                     flat[y, c, src:src + size], np.int64(weight), faulty_weight,
                                                     m[1, 0], m[1, 1], m[1, 2], product_bits)
                            # padding lanes multiply a zero activation; the product register's faults still act
                            shift = 64 - product_bits
                            zero_product = ((m[1, 1] ^ m[1, 2]) << shift) >> shift
                            for q in range(lanes):
                                if q < ox0 * nb or q >= ox1 * nb:
                                    sums[q] += zero_product
                                    changes[q] += zero_product
                        _fault_partial_sums(sums, changes, w.dtype.type(m[2, 0]), w.dtype.type(m[2, 1]),
                                            w.dtype.type(m[2, 2]))
                    c += 1
                    r = (r + 1) % period
        for ox in range(ow):
            for b in range(nb):
                for j in range(n_filters):
                    out[(b * oh + oy) * ow + ox, j] = diff[j, ox * nb + b]
    return out
