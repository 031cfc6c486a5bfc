"""Numba kernels of the faithful path: the array computed MAC by MAC.

Kernels take only arrays and scalars. The Python in :mod:`accel_sim.hardware.compute` checks the
inputs, allocates and documents; nothing here reads a global setting.

Integer conventions: operands and accumulators are ``int64``; the accumulator has ``acc_bits``
bits and either saturates (``wrap == 0``) or wraps (``wrap == 1``) after every addition.

PE faults (for the fault layer) arrive as a table in CSR form: faults of PE ``(r, c)`` are entries
``pe_start[r·cols + c] .. pe_start[r·cols + c + 1] - 1`` of ``fault_register`` (0 = weight
register, 1 = product, 2 = partial-sum output; under TMR ``3 · replica`` plus those, or
``VOTER``: :mod:`accel_sim.hardware.redundancy`), ``fault_bit``, ``fault_model`` (0 = flip,
1 = stuck-at-0, 2 = stuck-at-1) and ``fault_mac``: -1 for a fault present at every MAC, or the
one MAC ``((image · pixels + pixel) · K + k) · N + n`` of the batch that a transient fault hits.
An integer fault acts on the two's complement pattern of the register (``weight_bits``,
``product_bits`` or ``acc_bits`` wide); a float32 fault on the IEEE-754 pattern.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

REGISTER_WEIGHT, REGISTER_PRODUCT, REGISTER_PSUM = 0, 1, 2
VOTER = 9  # accel_sim.hardware.redundancy.VOTER, the voter's output register under TMR
MODEL_FLIP, MODEL_STUCK_AT_0, MODEL_STUCK_AT_1 = 0, 1, 2


@njit(cache=True, inline="always")
def _sign_extend(value, bits):
    shift = 64 - bits
    return (value << shift) >> shift


@njit(cache=True, inline="always")
def _corrupt(value, bits, bit, model):
    mask = np.int64(1) << bit
    if model == MODEL_FLIP:
        value = value ^ mask
    elif model == MODEL_STUCK_AT_0:
        value = value & ~mask
    else:
        value = value | mask
    return _sign_extend(value, bits)


@njit(cache=True, inline="always")
def _acc_add(acc, term, acc_min, acc_max, acc_bits, wrap):
    """``acc + term`` through the accumulator's overflow; ``acc`` in its range. Signed overflow is
    undefined to the compiler (it may drop a test that reads a wrapped sum), so the sum wraps in
    unsigned arithmetic and saturation compares before adding."""
    if wrap:
        return _sign_extend(np.int64(np.uint64(acc) + np.uint64(term)), acc_bits)
    if term > 0 and acc > acc_max - term:
        return acc_max
    if term < 0 and acc < acc_min - term:
        return acc_min
    return acc + term


@njit(cache=True, inline="always")
def _axis_index(pixel, k, n, axis):
    if axis == 0:
        return pixel
    if axis == 1:
        return k
    return n


@njit(cache=True, inline="always")
def _pe_index(pixel, k, n, row_axis, col_axis, rows, cols):
    """Flat index (row·cols + col) of the PE that performs the MAC (pixel, k, n)."""
    return (_axis_index(pixel, k, n, row_axis) % rows) * cols + _axis_index(pixel, k, n, col_axis) % cols


@njit(cache=True, inline="always")
def _hits(f, register, fault_register, fault_mac, mac):
    """Whether fault ``f`` acts on ``register`` at MAC ``mac``."""
    return fault_register[f] == register and (fault_mac[f] < 0 or fault_mac[f] == mac)


@njit(cache=True, inline="always")
def _replica_mac(acc, x, w, replica, first, last, fault_register, fault_bit, fault_model, fault_mac, mac,
                 weight_bits, product_bits, acc_min, acc_max, acc_bits, wrap):
    """The partial-sum output of one replica of a PE: ``acc + x · w`` with the faults of the
    replica's weight, product and partial-sum registers (entries ``first .. last − 1``)."""
    base = 3 * replica
    for f in range(first, last):
        if _hits(f, base + REGISTER_WEIGHT, fault_register, fault_mac, mac):
            w = _corrupt(w, weight_bits, fault_bit[f], fault_model[f])
    product = x * w
    for f in range(first, last):
        if _hits(f, base + REGISTER_PRODUCT, fault_register, fault_mac, mac):
            product = _corrupt(product, product_bits, fault_bit[f], fault_model[f])
    acc = _acc_add(acc, product, acc_min, acc_max, acc_bits, wrap)
    for f in range(first, last):
        if _hits(f, base + REGISTER_PSUM, fault_register, fault_mac, mac):
            acc = _corrupt(acc, acc_bits, fault_bit[f], fault_model[f])
    return acc


@njit(cache=True, parallel=True)
def gemm_faithful(a, b_t, row_idx, col_idx, pixels_per_image, acc_min, acc_max, acc_bits, wrap,
                  row_axis, col_axis, rows, cols, pe_start, fault_register, fault_bit, fault_model,
                  fault_mac, weight_bits, product_bits, replicas):
    """``out[i, j] = Σ_k a[i, k] · b_t[col_idx[j], k]`` MAC by MAC in window order.

    Parameters
    ----------
    a : int64 (I, K)
        Activations: the im2col rows of the outputs to compute, row ``i`` for global row
        ``row_idx[i]`` (global rows number (image, pixel), ``pixels_per_image`` per image).
    b_t : int64 (N, K)
        Weights, one row per filter.
    row_idx, col_idx : int64 (I,), (J,)
        The outputs to compute: global im2col rows and filters.
    row_axis, col_axis : int
        The GEMM axes along the array's rows and columns (0 output pixel, 1 window element,
        2 filter: :attr:`accel_sim.hardware.dataflows.Dataflow.axis_codes`); the MAC of pixel
        ``m``, element ``k`` and filter ``n`` runs on PE (row-axis index mod rows, col-axis
        index mod cols).
    pe_start : int64 (rows·cols + 1,)
        CSR offsets of the PE faults; all zeros when no PE is faulty.
    replicas : int
        1, or 3 for TMR: a faulty PE's MAC runs on three replicas whose outputs are voted bit by
        bit, then the voter's faults act.

    Returns
    -------
    int64 (I, J)
        The accumulator values (bias not added).
    """
    n_rows = row_idx.shape[0]
    n_cols = col_idx.shape[0]
    depth = a.shape[1]
    out = np.zeros((n_rows, n_cols), dtype=np.int64)
    any_fault = pe_start[pe_start.shape[0] - 1] > 0
    for i in prange(n_rows):
        m = row_idx[i]
        pixel = m % pixels_per_image
        for j in range(n_cols):
            n = col_idx[j]
            acc = np.int64(0)
            if not any_fault:
                for k in range(depth):
                    acc = _acc_add(acc, a[i, k] * b_t[n, k], acc_min, acc_max, acc_bits, wrap)
            else:
                for k in range(depth):
                    pe = _pe_index(pixel, k, n, row_axis, col_axis, rows, cols)
                    first = pe_start[pe]
                    last = pe_start[pe + 1]
                    mac = (m * depth + k) * b_t.shape[0] + n
                    voted = _replica_mac(acc, a[i, k], b_t[n, k], 0, first, last, fault_register, fault_bit,
                                         fault_model, fault_mac, mac, weight_bits, product_bits, acc_min, acc_max,
                                         acc_bits, wrap)
                    if replicas == 3:
                        p1 = _replica_mac(acc, a[i, k], b_t[n, k], 1, first, last, fault_register, fault_bit,
                                          fault_model, fault_mac, mac, weight_bits, product_bits, acc_min, acc_max,
                                          acc_bits, wrap)
                        p2 = _replica_mac(acc, a[i, k], b_t[n, k], 2, first, last, fault_register, fault_bit,
                                          fault_model, fault_mac, mac, weight_bits, product_bits, acc_min, acc_max,
                                          acc_bits, wrap)
                        voted = (voted & p1) | (voted & p2) | (p1 & p2)  # bitwise majority
                        for f in range(first, last):
                            if _hits(f, VOTER, fault_register, fault_mac, mac):
                                voted = _corrupt(voted, acc_bits, fault_bit[f], fault_model[f])
                    acc = voted
            out[i, j] = acc
    return out


@njit(cache=True, inline="always")
def _masked_replica(acc, x, w, m, base, weight_bits, product_bits, acc_min, acc_max, acc_bits, wrap):
    """:func:`_replica_mac` with the replica's permanent faults as masks ``m[base .. base + 2]``."""
    product = x * _masked(w, m, base + REGISTER_WEIGHT, weight_bits)
    product = _masked(product, m, base + REGISTER_PRODUCT, product_bits)
    return _masked(_acc_add(acc, product, acc_min, acc_max, acc_bits, wrap), m, base + REGISTER_PSUM, acc_bits)


@njit(cache=True, parallel=True)
def gemm_permanent_masks(a, b_t, row_idx, col_idx, pixels_per_image, acc_min, acc_max, acc_bits, wrap,
                         row_axis, col_axis, rows, cols, faulty, masks, weight_bits, product_bits, replicas):
    """:func:`gemm_faithful` for permanent faults given as masks: the same MACs, votes and
    results, without reading the fault table at every MAC.

    Parameters
    ----------
    faulty : bool (rows·cols,)
        Whether a PE has faults.
    masks : int64 (rows·cols, registers, 3)
        Per PE and register code (:mod:`accel_sim.hardware.redundancy`; 3 for one replica, 10
        under TMR), the (and, or, xor) masks of its composed permanent faults.

    Other parameters and the result as :func:`gemm_faithful`.
    """
    n_rows = row_idx.shape[0]
    n_cols = col_idx.shape[0]
    depth = a.shape[1]
    out = np.zeros((n_rows, n_cols), dtype=np.int64)
    for i in prange(n_rows):
        pixel = row_idx[i] % pixels_per_image
        for j in range(n_cols):
            n = col_idx[j]
            acc = np.int64(0)
            for k in range(depth):
                pe = _pe_index(pixel, k, n, row_axis, col_axis, rows, cols)
                if not faulty[pe]:
                    acc = _acc_add(acc, a[i, k] * b_t[n, k], acc_min, acc_max, acc_bits, wrap)
                    continue
                m = masks[pe]
                voted = _masked_replica(acc, a[i, k], b_t[n, k], m, 0, weight_bits, product_bits, acc_min, acc_max,
                                        acc_bits, wrap)
                if replicas == 3:
                    p1 = _masked_replica(acc, a[i, k], b_t[n, k], m, 3, weight_bits, product_bits, acc_min, acc_max,
                                         acc_bits, wrap)
                    p2 = _masked_replica(acc, a[i, k], b_t[n, k], m, 6, weight_bits, product_bits, acc_min, acc_max,
                                         acc_bits, wrap)
                    voted = _masked((voted & p1) | (voted & p2) | (p1 & p2), m, VOTER, acc_bits)
                acc = voted
            out[i, j] = acc
    return out


@njit(cache=True, inline="always")
def _corrupt_f32(value, bit, model):
    word = np.empty(1, dtype=np.float32)
    word[0] = value
    bits = word.view(np.uint32)
    mask = np.uint32(1) << np.uint32(bit)
    if model == MODEL_FLIP:
        bits[0] = bits[0] ^ mask
    elif model == MODEL_STUCK_AT_0:
        bits[0] = bits[0] & ~mask
    else:
        bits[0] = bits[0] | mask
    return word[0]


@njit(cache=True, inline="always")
def _replica_mac_f32(acc, x, w, replica, first, last, fault_register, fault_bit, fault_model, fault_mac, mac):
    """float32 :func:`_replica_mac`: ``acc + x · w`` with the replica's faults on the IEEE-754
    patterns of its registers."""
    base = 3 * replica
    for f in range(first, last):
        if _hits(f, base + REGISTER_WEIGHT, fault_register, fault_mac, mac):
            w = _corrupt_f32(w, fault_bit[f], fault_model[f])
    product = np.float32(x * w)
    for f in range(first, last):
        if _hits(f, base + REGISTER_PRODUCT, fault_register, fault_mac, mac):
            product = _corrupt_f32(product, fault_bit[f], fault_model[f])
    acc = np.float32(acc + product)
    for f in range(first, last):
        if _hits(f, base + REGISTER_PSUM, fault_register, fault_mac, mac):
            acc = _corrupt_f32(acc, fault_bit[f], fault_model[f])
    return acc


@njit(cache=True, inline="always")
def _majority_f32(p0, p1, p2):
    """Bitwise majority of three float32 values' IEEE-754 patterns."""
    words = np.empty(3, dtype=np.float32)
    words[0], words[1], words[2] = p0, p1, p2
    bits = words.view(np.uint32)
    bits[0] = (bits[0] & bits[1]) | (bits[0] & bits[2]) | (bits[1] & bits[2])
    return words[0]


@njit(cache=True, parallel=True)
def gemm_faithful_f32(a, b_t, row_idx, col_idx, pixels_per_image, row_axis, col_axis, rows, cols,
                      pe_start, fault_register, fault_bit, fault_model, fault_mac, replicas):
    """float32 version of :func:`gemm_faithful`: ``acc = acc + a·w`` in IEEE float32, in window
    order, with PE faults on the float32 bit patterns of the weight register, the product and
    the partial sum (and, under TMR, votes on the partial sums' patterns)."""
    n_rows = row_idx.shape[0]
    n_cols = col_idx.shape[0]
    depth = a.shape[1]
    out = np.zeros((n_rows, n_cols), dtype=np.float32)
    for i in prange(n_rows):
        m = row_idx[i]
        pixel = m % pixels_per_image
        for j in range(n_cols):
            n = col_idx[j]
            acc = np.float32(0.0)
            for k in range(depth):
                pe = _pe_index(pixel, k, n, row_axis, col_axis, rows, cols)
                first = pe_start[pe]
                last = pe_start[pe + 1]
                mac = (m * depth + k) * b_t.shape[0] + n
                voted = _replica_mac_f32(acc, a[i, k], b_t[n, k], 0, first, last, fault_register, fault_bit,
                                         fault_model, fault_mac, mac)
                if replicas == 3:
                    p1 = _replica_mac_f32(acc, a[i, k], b_t[n, k], 1, first, last, fault_register, fault_bit,
                                          fault_model, fault_mac, mac)
                    p2 = _replica_mac_f32(acc, a[i, k], b_t[n, k], 2, first, last, fault_register, fault_bit,
                                          fault_model, fault_mac, mac)
                    voted = _majority_f32(voted, p1, p2)
                    for f in range(first, last):
                        if _hits(f, VOTER, fault_register, fault_mac, mac):
                            voted = _corrupt_f32(voted, fault_bit[f], fault_model[f])
                acc = voted
            out[i, j] = acc
    return out


@njit(cache=True, parallel=True)
def im2col_hwc(x, rows, kh, kw, sh, sw, ph, pw, oh, ow):
    """im2col rows ``rows`` of feature maps ``x`` (N, C, H, W): row ids number (image, out row,
    out col); columns (kernel row, kernel col, channel); zero padding; same dtype as ``x``.
    Returns (len(rows), kh·kw·C)."""
    n_img, ch, h, w = x.shape
    out = np.zeros((rows.shape[0], kh * kw * ch), dtype=x.dtype)
    for i in prange(rows.shape[0]):
        row = rows[i]
        img = row // (oh * ow)
        p = row % (oh * ow)
        oy = p // ow
        ox = p % ow
        for ki in range(kh):
            y = oy * sh + ki - ph
            if y < 0 or y >= h:
                continue
            for j in range(kw):
                xx = ox * sw + j - pw
                if xx < 0 or xx >= w:
                    continue
                base = (ki * kw + j) * ch
                for c in range(ch):
                    out[i, base + c] = x[img, c, y, xx]
    return out


@njit(cache=True, inline="always")
def _masked(value, masks, register, bits):
    """A register after its permanent faults: ``((v & and) | or) ^ xor``, sign-extended."""
    return _sign_extend(((value & masks[register, 0]) | masks[register, 1]) ^ masks[register, 2], bits)


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
