"""Numba kernels of the fused int8 fast path (see :mod:`accel_sim.hardware.int8_gemm`).

Kernels take only arrays and scalars; :mod:`accel_sim.hardware.compute` and
:mod:`accel_sim.hardware.int8_gemm` check inputs, allocate and document.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from accel_sim.hardware.kernels import _sign_extend
from accel_sim.numerics import ACTIVATIONS, ROUNDING_MODES

EPILOGUE_BIAS, EPILOGUE_FULL = 1, 2
# the numerics vocabulary as the integer codes the kernels take (compile-time constants)
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
ROUNDING_CODES = {name: code for code, name in enumerate(ROUNDING_MODES)}
_RELU, _CLIPACT, _CLAMP = ACTIVATION_CODES["relu"], ACTIVATION_CODES["clipact"], ACTIVATION_CODES["clamp"]
_FLOOR, _NEAREST_UP = ROUNDING_CODES["floor"], ROUNDING_CODES["nearest_up"]
_PREFETCH_ROWS = 8  # correction rows fetched ahead: a pixel-major correction matrix is read out of order


@intrinsic
def _prefetch_row(typingctx, array, row):
    """Ask the cache for the start of row ``row`` of a C-contiguous 2-D array (a hint: no load,
    no fault on any address)."""
    if not (isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0])
        row_size = cgutils.unpack_tuple(builder, data.shape, 2)[1]
        start = builder.mul(context.cast(builder, args[1], signature.args[1], types.intp), row_size)
        address = builder.bitcast(builder.gep(data.data, [start]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch", [address.type], ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]))
        # read, keep in all cache levels, data cache
        builder.call(prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, row), codegen


@njit(cache=True, inline="always")
def _shift_round(v, shift, rounding):
    """``v / 2**shift`` rounded (see :func:`accel_sim.numerics.shift_round`); ``shift`` ≥ 1."""
    if shift >= 64:
        return np.int64(-1) if rounding == _FLOOR and v < 0 else np.int64(0)
    quotient = v >> shift
    if rounding == _FLOOR:
        return quotient
    remainder = v - (quotient << shift)
    half = np.int64(1) << (shift - 1)
    # no branch on the data: scalar callers (a row's corrected entries) would mispredict it half the time
    up = (remainder > half) | ((remainder == half) & ((rounding == _NEAREST_UP) | ((quotient & 1) == 1)))
    return quotient + np.int64(up)


@njit(cache=True, inline="always")
def _row_term(rowsums, b_offset, const, m):
    """The part of row m's offset terms that does not depend on the column."""
    term = np.int64(0)
    if b_offset:
        for i in range(rowsums.shape[0]):
            term += rowsums[i, m] << (8 * i)
    return term * b_offset + const


@njit(cache=True, inline="always")
def _digit_sum(products, powers, row_term, col_term, m, n):
    """Exact (A @ B)[m, n] from the digit products and the offset terms."""
    v = row_term + col_term[n]
    for p in range(len(products)):
        v += np.int64(products[p][m, n]) << (8 * powers[p])
    return v


@njit(cache=True, inline="always")
def _epilogue(v, wrap, acc_bits, acc_min, acc_max, mode, activation, threshold, shift, rounding, out_min, out_max):
    """An accumulator value (bias added) through overflow and, in mode 2, the activation unit."""
    if wrap:
        v = _sign_extend(v, acc_bits)
    else:
        v = min(max(v, acc_min), acc_max)
    if mode == 2:
        if activation == _RELU:
            v = max(v, 0)
        elif activation == _CLIPACT:
            v = v if 0 <= v <= threshold else 0
        elif activation == _CLAMP:
            v = min(max(v, 0), threshold)
        if shift > 0:
            v = _shift_round(v, shift, rounding)
        else:  # clip first so that the left shift cannot overflow (see shift_round)
            limit = np.int64(1) << max(0, 62 + shift)
            v = min(max(v, -limit), limit) << -shift
        v = min(max(v, out_min), out_max)
    return v


@njit(cache=True, parallel=True)
def recombine_digits(products, powers, rowsums, b_offset, col_term, const, mode, bias, acc_min, acc_max,
                     acc_bits, wrap, activation, threshold, shift, rounding, out_min, out_max, correction,
                     correction_row, corrected, out):
    """Exact ``A @ B`` from int8 digit products plus bias, through the accumulator's overflow and
    (mode 2) the activation unit; plain sums are :func:`recombine_columns`.

    One pass over the products instead of a float64 pass per digit and per epilogue step (see
    :mod:`accel_sim.hardware.int8_gemm` for the digit algebra).

    Parameters
    ----------
    products : tuple of int32 (M, N)
        ``A_i @ B_j`` per digit pair.
    powers : int64 (P,)
        ``i + j`` per product (its weight is 256**(i + j)).
    rowsums : int64 (D, M)
        ``rowsum(A_i)`` per digit of A (not read when ``b_offset`` is 0).
    b_offset, col_term, const : int, int64 (N,), int
        Offset terms: ``b_offset · Σ_i 256^i rowsum(A_i) + col_term[n] + const``.
    mode : int
        1: the sums plus bias, saturated or wrapped to the accumulator (a last layer); 2: then
        the activation (codes as ``ACTIVATION_CODES``, ``threshold`` in accumulator units)
        and rescaling by ``2**-shift`` (``ROUNDING_CODES``) with saturation to [out_min, out_max].
    correction, correction_row, corrected : int64 (R, C), int64 (M,), int64 (C,)
        ``correction[correction_row[m], c]`` is added to the sum of row m, column
        ``corrected[c]`` before the bias, for the rows with ``correction_row[m] ≥ 0`` (PE-register
        faults: their effect is a sum over the MACs through the faulty PE when no partial sum
        saturates; OS touches one pixel in ``rows``, WS every row). Those entries are redone
        after the row's others, so that the main loop stays free of branches; each row's
        corrections are fetched into the cache a few rows ahead, since rows in pixel-major order
        come out of order. ``correction`` C-contiguous; C may be 0, and then ``correction_row``
        is not read.
    out : float64 (M, N)
        Written in place (exact integers).
    """
    n_rows, filters = out.shape
    for m in prange(n_rows):
        row_term = _row_term(rowsums, b_offset, const, m)
        for n in range(filters):
            v = _digit_sum(products, powers, row_term, col_term, m, n) + bias[n]
            out[m, n] = np.float64(_epilogue(v, wrap, acc_bits, acc_min, acc_max, mode, activation, threshold, shift,
                                             rounding, out_min, out_max))
        if corrected.shape[0] == 0 or correction_row[m] < 0:
            continue
        ahead = m + _PREFETCH_ROWS
        if ahead < n_rows and correction_row[ahead] >= 0:
            _prefetch_row(correction, correction_row[ahead])
        slot = correction_row[m]
        for c in range(corrected.shape[0]):
            n = corrected[c]
            v = _digit_sum(products, powers, row_term, col_term, m, n) + correction[slot, c] + bias[n]
            out[m, n] = np.float64(_epilogue(v, wrap, acc_bits, acc_min, acc_max, mode, activation, threshold, shift,
                                             rounding, out_min, out_max))


@njit(cache=True, parallel=True)
def im2col_digits(x, kh, kw, sh, sw, ph, pw, oh, ow, two_digits, lo, hi, rowsums):
    """im2col of channels-last words straight into int8 digits (see
    :mod:`accel_sim.hardware.int8_gemm`): one pass instead of split, pad and copy per digit.

    Parameters
    ----------
    x : float64 (B, H, W, C)
        Words (exact integers), channels last.
    two_digits : int
        0: words of ≤ 8 bits, one digit (``lo`` = the word); 1: ``word = 256·hi + lo + 128``.
    lo, hi : int8 (B·OH·OW, kh·kw·C)
        Written in place; ``hi`` is not touched for one digit. Padding is the word 0.
    rowsums : int64 (1 or 2, B·OH·OW)
        Written in place: the row sums of ``lo`` (and ``hi``).
    """
    n_img, h, w, ch = x.shape
    pad_lo = np.int8(-128) if two_digits else np.int8(0)
    for row in prange(n_img * oh * ow):
        img = row // (oh * ow)
        p = row % (oh * ow)
        oy, ox = p // ow, p % ow
        sum_lo, sum_hi = np.int64(0), np.int64(0)
        for ki in range(kh):
            y = oy * sh + ki - ph
            for kj in range(kw):
                xx = ox * sw + kj - pw
                base = (ki * kw + kj) * ch
                if y < 0 or y >= h or xx < 0 or xx >= w:
                    sum_lo += np.int64(pad_lo) * ch
                    for c in range(ch):
                        lo[row, base + c] = pad_lo
                        if two_digits:
                            hi[row, base + c] = 0
                elif two_digits:
                    for c in range(ch):
                        v = np.int64(x[img, y, xx, c])
                        high = v >> 8  # floor division by 256
                        low = v - (high << 8) - 128
                        lo[row, base + c] = np.int8(low)
                        hi[row, base + c] = np.int8(high)
                        sum_lo += low
                        sum_hi += high
                else:
                    for c in range(ch):
                        v = np.int64(x[img, y, xx, c])
                        lo[row, base + c] = np.int8(v)
                        sum_lo += v
        rowsums[0, row] = sum_lo
        if two_digits:
            rowsums[1, row] = sum_hi


@njit(cache=True, parallel=True)
def recombine_columns(products, powers, rowsums, b_offset, col_term, const, columns, out):
    """The plain sums of :func:`recombine_digits` for the columns ``columns`` only (int64
    (J,)); ``col_term`` holds every column's term; ``out`` float64 (M, J)."""
    for m in prange(out.shape[0]):
        row_term = _row_term(rowsums, b_offset, const, m)
        for j in range(columns.shape[0]):
            out[m, j] = np.float64(_digit_sum(products, powers, row_term, col_term, m, columns[j]))
