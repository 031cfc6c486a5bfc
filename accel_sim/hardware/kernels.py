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

from accel_sim.hardware.redundancy import VOTER  # the voter's output register under TMR

REGISTER_WEIGHT, REGISTER_PRODUCT, REGISTER_PSUM = 0, 1, 2
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
                  fault_mac, weight_bits, product_bits, replicas, mismatch):
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
        1; 2 for DMR: a faulty PE's MAC runs on two replicas, replica 0's output is passed on
        and a difference sets ``mismatch``; 3 for TMR: on three replicas whose outputs are voted
        bit by bit, then the voter's faults act.
    mismatch : bool (I,)
        Output: set (never cleared) for row ``i`` where a DMR comparator saw the replicas differ.

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
                    p1 = voted
                    if replicas > 1:
                        p1 = _replica_mac(acc, a[i, k], b_t[n, k], 1, first, last, fault_register, fault_bit,
                                          fault_model, fault_mac, mac, weight_bits, product_bits, acc_min, acc_max,
                                          acc_bits, wrap)
                    if replicas == 2 and p1 != voted:
                        mismatch[i] = True
                    if replicas == 3:
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
                         row_axis, col_axis, rows, cols, faulty, masks, weight_bits, product_bits, replicas,
                         mismatch):
    """:func:`gemm_faithful` for permanent faults given as masks: the same MACs, votes and
    results, without reading the fault table at every MAC.

    Parameters
    ----------
    faulty : bool (rows·cols,)
        Whether a PE has faults.
    masks : int64 (rows·cols, registers, 3)
        Per PE and register code (:mod:`accel_sim.hardware.redundancy`; 3 for one replica, 6
        under DMR, 10 under TMR), the (and, or, xor) masks of its composed permanent faults.

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
                p1 = voted
                if replicas > 1:
                    p1 = _masked_replica(acc, a[i, k], b_t[n, k], m, 3, weight_bits, product_bits, acc_min, acc_max,
                                         acc_bits, wrap)
                if replicas == 2 and p1 != voted:
                    mismatch[i] = True
                if replicas == 3:
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


@njit(cache=True, inline="always")
def _differ_f32(p0, p1):
    """Whether two float32 values' IEEE-754 patterns differ (a NaN equals its own pattern)."""
    words = np.empty(2, dtype=np.float32)
    words[0], words[1] = p0, p1
    bits = words.view(np.uint32)
    return bits[0] != bits[1]


@njit(cache=True, parallel=True)
def gemm_faithful_f32(a, b_t, row_idx, col_idx, pixels_per_image, row_axis, col_axis, rows, cols,
                      pe_start, fault_register, fault_bit, fault_model, fault_mac, replicas, mismatch):
    """float32 version of :func:`gemm_faithful`: ``acc = acc + a·w`` in IEEE float32, in window
    order, with PE faults on the float32 bit patterns of the weight register, the product and
    the partial sum (under DMR, comparisons of the partial sums' patterns; under TMR, votes on
    them)."""
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
                p1 = voted
                if replicas > 1:
                    p1 = _replica_mac_f32(acc, a[i, k], b_t[n, k], 1, first, last, fault_register, fault_bit,
                                          fault_model, fault_mac, mac)
                if replicas == 2 and _differ_f32(voted, p1):
                    mismatch[i] = True
                if replicas == 3:
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
