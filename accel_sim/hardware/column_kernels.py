"""Numba kernels of the fast PE-fault strategies (:mod:`accel_sim.hardware.pe_faults`): the
exact accumulators of the outputs one faulty WS column or OS PE touches, or what its register
faults change in them. Conventions (operands, accumulators, masks) as in
:mod:`accel_sim.hardware.kernels`; every kernel here equals :func:`~accel_sim.hardware.kernels.gemm_faithful`
on the outputs it computes (tests/test_hardware.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from accel_sim.hardware.kernels import _masked, _sign_extend


@njit(cache=True, inline="always")
def _gather_windows(x, m_idx, first, pixels_per_image, kh, kw, sh, sw, ph, pw, ow, windows):
    """The im2col rows ``m_idx[first:first + windows.shape[1]]`` of channels-last ``x`` into the
    columns of ``windows`` (K, size), which holds zeros (the padding) on entry."""
    _, h, wd, ch = x.shape
    for b in range(windows.shape[1]):
        p = m_idx[first + b] % pixels_per_image
        img = m_idx[first + b] // pixels_per_image
        oy, ox = p // ow, p % ow
        for ki in range(kh):
            y = oy * sh + ki - ph
            for kj in range(kw):
                xx = ox * sw + kj - pw
                if 0 <= y < h and 0 <= xx < wd:
                    base = (ki * kw + kj) * ch
                    for c in range(ch):
                        windows[base + c, b] = x[img, y, xx, c]


@njit(cache=True, inline="always")
def _fault_point_macs(acc, row, weights, m, weight_bits, product_bits, acc_min, acc_max, acc_bits, wrap):
    """One MAC per lane and filter through a faulty PE (masks ``m``, (3, 3)), in int64: ``acc``
    (J, size) float64 running sums, ``row`` (size,) the activations, ``weights`` (J,)."""
    product_faulty = m[1, 0] != -1 or m[1, 1] != 0 or m[1, 2] != 0
    psum_faulty = m[2, 0] != -1 or m[2, 1] != 0 or m[2, 2] != 0
    for j in range(weights.shape[0]):
        weight = _masked(np.int64(weights[j]), m, 0, weight_bits)
        sums = acc[j]
        for b in range(row.shape[0]):
            product = np.int64(row[b]) * weight
            if product_faulty:
                product = _masked(product, m, 1, product_bits)
            total = np.int64(sums[b]) + product
            if wrap:
                total = _sign_extend(total, acc_bits)
            else:
                total = min(max(total, acc_min), acc_max)
            if psum_faulty:
                total = _masked(total, m, 2, acc_bits)
            sums[b] = np.float64(total)


@njit(cache=True, inline="always")
def _clean_macs(acc, row, weights, wrap, lo, hi):
    """One clean MAC per lane and filter in float64 (exact below 2**53); a saturating
    accumulator clamps to [lo, hi] after each addition, a wrapping one wraps later."""
    for j in range(weights.shape[0]):
        weight = weights[j]
        sums = acc[j]
        if wrap:
            for b in range(row.shape[0]):
                sums[b] += row[b] * weight
        else:
            for b in range(row.shape[0]):
                sums[b] = min(max(sums[b] + row[b] * weight, lo), hi)


@njit(cache=True, parallel=True, fastmath=True)
def gemm_faulty_column(x, w, m_idx, pixels_per_image, kh, kw, sh, sw, ph, pw, ow, period, has_fault, masks,
                       weight_bits, product_bits, acc_min, acc_max, acc_bits, wrap, block):
    """Accumulators of the filters of one PE column with permanent PE faults, exact.

    Faster equivalent of :func:`gemm_faithful` for the outputs one faulty column touches: MACs
    that pass a faulty PE (the *fault points*) run in int64 with the faults; the MACs between
    them in float64, which is exact because the caller guarantees every partial sum stays below
    2**53 (saturation is a clamp after each addition; wrapping is applied at every fault point
    and at the end, which is equivalent because wrapping commutes with addition).

    Parameters
    ----------
    x : float64 (B, H, W, C)
        Input feature maps, channels last (a linear layer: H = W = 1), exact integers.
    w : float64 (K, J)
        Weights of the J filters, K in im2col order (kernel row, kernel col, channel).
    m_idx : int64 (I,)
        The im2col rows (image · pixels + pixel) to compute.
    period, has_fault : int, bool (period,)
        MAC k is a fault point when ``has_fault[k % period]`` (WS: period = array rows, the PE
        row of MAC k is k mod rows). With period 1 every MAC is one; :func:`gemm_faulty_pe`
        does that case (OS) faster.
    masks : int64 (period, 3, 3)
        Per residue and register (weight, product, partial sum): the (and, or, xor) masks of
        the composed faults; identity is (-1, 0, 0).
    block : int
        Outputs computed together (the innermost loops run over them, so they vectorise
        whatever J is).

    Returns
    -------
    int64 (I, J)
        The accumulator values (bias not added).
    """
    depth, n_filters = w.shape
    n_out = m_idx.shape[0]
    out = np.empty((n_out, n_filters), dtype=np.int64)
    lo, hi = np.float64(acc_min), np.float64(acc_max)
    for t in prange((n_out + block - 1) // block):
        first = t * block
        size = min(n_out, first + block) - first
        windows = np.zeros((depth, size))  # im2col rows of the block, transposed
        _gather_windows(x, m_idx, first, pixels_per_image, kh, kw, sh, sw, ph, pw, ow, windows)
        acc = np.zeros((n_filters, size))
        r = 0
        for k in range(depth):
            if has_fault[r]:
                _fault_point_macs(acc, windows[k], w[k], masks[r], weight_bits, product_bits, acc_min, acc_max,
                                  acc_bits, wrap)
            else:
                _clean_macs(acc, windows[k], w[k], wrap, lo, hi)
            r += 1
            if r == period:
                r = 0
        for b in range(size):
            for j in range(n_filters):
                value = np.int64(acc[j, b])
                out[first + b, j] = _sign_extend(value, acc_bits) if wrap else value
    return out


@njit(cache=True, parallel=True)
def gemm_faulty_pe(x, w, m_idx, pixels_per_image, kh, kw, sh, sw, ph, pw, ow, masks, weight_bits, product_bits,
                   acc_min, acc_max, acc_bits, wrap, block):
    """Accumulators of outputs whose every MAC runs on one faulty PE (OS), exact.

    The OS case of :func:`gemm_faulty_column` (``period`` 1): with every MAC a fault point the
    whole computation stays in int64, with no conversions. Arguments as there, except ``w``:
    int64 (K, J), and ``masks``: int64 (3, 3), the PE's (and, or, xor) masks per register.
    """
    depth, n_filters = w.shape
    n_out = m_idx.shape[0]
    out = np.empty((n_out, n_filters), dtype=np.int64)
    p_and, p_or, p_xor = masks[1, 0], masks[1, 1], masks[1, 2]
    s_and, s_or, s_xor = masks[2, 0], masks[2, 1], masks[2, 2]
    weights = np.empty((depth, n_filters), dtype=np.int64)  # as the faulty weight register holds them
    for k in range(depth):
        for j in range(n_filters):
            weights[k, j] = _masked(w[k, j], masks, 0, weight_bits)
    for t in prange((n_out + block - 1) // block):
        first = t * block
        size = min(n_out, first + block) - first
        windows = np.zeros((depth, size), dtype=np.int64)
        _gather_windows(x, m_idx, first, pixels_per_image, kh, kw, sh, sw, ph, pw, ow, windows)
        acc = np.zeros((n_filters, size), dtype=np.int64)
        for k in range(depth):
            row = windows[k]
            for j in range(n_filters):
                weight = weights[k, j]
                sums = acc[j]
                for b in range(size):  # identity masks cost less than a branch here
                    total = sums[b] + _sign_extend(((row[b] * weight & p_and) | p_or) ^ p_xor, product_bits)
                    if wrap:
                        total = _sign_extend(total, acc_bits)
                    else:
                        total = min(max(total, acc_min), acc_max)
                    sums[b] = _sign_extend(((total & s_and) | s_or) ^ s_xor, acc_bits)
        for b in range(size):
            for j in range(n_filters):
                out[first + b, j] = acc[j, b]
    return out


@njit(cache=True, parallel=True)
def register_fault_corrections(x, w, m_idx, pixels_per_image, kh, kw, sh, sw, ph, pw, ow, period, fault_rows, masks,
                               weight_bits, product_bits):
    """``Σ_k (faulty product − clean product)`` over the MACs through faulty PEs whose faults
    sit in the weight or product register only.

    When no partial sum saturates, the faulty accumulator is the clean one plus this correction,
    so only the fault points are visited: MACs k ≡ r (mod ``period``) for the faulty rows r
    (WS: 1/(rows·cols) of the layer; OS, ``period`` 1: every MAC of the PE's outputs).
    Arguments as :func:`gemm_faulty_column`, except ``w``: int64 (K, J); ``fault_rows`` int64
    lists the faulty residues.

    Returns
    -------
    int64 (I, J)
        One row per entry of ``m_idx``.
    """
    _, h, wd, ch = x.shape
    depth, n_filters = w.shape
    out = np.zeros((m_idx.shape[0], n_filters), dtype=np.int64)
    block = 32  # outputs per parallel task
    for r in fault_rows:
        points = np.arange(r, depth, period)
        n_points = points.shape[0]
        ki, kj, c = (points // ch) // kw, (points // ch) % kw, points % ch  # window position of each point
        m = masks[r]
        and_, or_, xor = m[1, 0], m[1, 1], m[1, 2]
        weight_clean = m[0, 0] == -1 and m[0, 1] == 0 and m[0, 2] == 0
        product_clean = and_ == -1 and or_ == 0 and xor == 0
        zero_term = _masked(np.int64(0), m, 1, product_bits)  # a zero activation: corrupt(0) − 0
        clean = np.empty((n_points, n_filters), dtype=np.int64)
        faulty = np.empty((n_points, n_filters), dtype=np.int64)  # as the faulty weight register holds them
        for q in range(n_points):
            for j in range(n_filters):
                clean[q, j] = w[points[q], j]
                faulty[q, j] = _masked(w[points[q], j], m, 0, weight_bits)
        for t in prange((m_idx.shape[0] + block - 1) // block):
            sums = np.empty(n_filters, dtype=np.int64)
            values = np.empty(n_points, dtype=np.int64)  # the row's nonzero activations, packed
            point_of = np.empty(n_points, dtype=np.int64)
            for i in range(t * block, min(m_idx.shape[0], (t + 1) * block)):
                p = m_idx[i] % pixels_per_image
                img, oy, ox = m_idx[i] // pixels_per_image, p // ow, p % ow
                # Packing without a branch: about half the activations are zero (ReLU), and
                # a data-dependent branch per point mispredicts that often.
                nonzero = 0
                for q in range(n_points):
                    y, xx = oy * sh + ki[q] - ph, ox * sw + kj[q] - pw
                    a = np.int64(x[img, y, xx, c[q]]) if 0 <= y < h and 0 <= xx < wd else np.int64(0)
                    values[nonzero] = a
                    point_of[nonzero] = q
                    nonzero += a != 0
                sums[:] = 0
                if product_clean:  # the weight register alone: a · (w' − w)
                    for e in range(nonzero):
                        a, q = values[e], point_of[e]
                        for j in range(n_filters):
                            sums[j] += a * (faulty[q, j] - clean[q, j])
                elif weight_clean:  # one product per MAC
                    for e in range(nonzero):
                        a, q = values[e], point_of[e]
                        for j in range(n_filters):
                            product = a * clean[q, j]
                            v = ((product & and_) | or_) ^ xor
                            sums[j] += _sign_extend(v, product_bits) - product
                else:
                    for e in range(nonzero):
                        a, q = values[e], point_of[e]
                        for j in range(n_filters):
                            product = a * faulty[q, j]
                            v = ((product & and_) | or_) ^ xor
                            sums[j] += _sign_extend(v, product_bits) - a * clean[q, j]
                for j in range(n_filters):
                    out[i, j] += sums[j] + (n_points - nonzero) * zero_term
    return out
