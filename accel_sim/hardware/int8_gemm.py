"""Exact integer GEMMs of up to 16-bit words through int8 matrix products (``torch._int_mm``).

A word ``v`` of at most 8 bits is one int8 digit. A word of 9..16 bits is written with two int8
digits and an offset: ``v = 256·hi + lo + 128`` with ``hi = ⌊v / 256⌋`` and
``lo = (v mod 256) − 128``, both in ``-128..127``. Then, with ``A = Σ_i 256^i A_i + α`` and
``B = Σ_j 256^j B_j + β``::

    A @ B = Σ_ij 256^(i+j) (A_i @ B_j) + β · Σ_i 256^i rowsum(A_i) + α · Σ_j 256^j colsum(B_j) + α·β·K

Every ``A_i @ B_j`` is exact in int32 when ``K · 128² < 2³¹`` (every partial sum is bounded by
that), and the recombination is done in int64. For two-digit A and B the two middle terms share
one product over a doubled depth, ``[A_0 | A_1] @ [B_1; B_0] = A_0 @ B_1 + A_1 @ B_0`` (exact
while ``2K · 128² < 2³¹``): three int8 GEMMs instead of four, and A's digits are column blocks
of one (M × 2K) matrix. CPU int8 matrix units (VNNI, AMX) run these
products several times faster than float64 BLAS. Some int8 kernels saturate 16-bit
intermediates; :func:`int8_matmul_is_exact` checks the installed one once per process with worst-
case operands, and callers use the float64 path when it fails.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from accel_sim.errors import AccelSimError
from accel_sim.hardware import int8_kernels

logger = logging.getLogger(__name__)

MAX_WORD_BITS = 16
MAX_DEPTH = (1 << 31) // (128 * 128) - 1  # largest K for which int32 partial sums cannot overflow


@dataclass(frozen=True)
class Digits:
    """An integer matrix as int8 digit matrices: ``Σ_i 256^i digits[i] + offset``, with the row
    sums of each digit matrix (int64 (D, M); computed on first use when not given)."""

    digits: tuple[torch.Tensor, ...]
    offset: int
    rowsums: np.ndarray | None = None
    concat: torch.Tensor | None = None  # (M, 2K) whose column blocks are the two digits, if so

    def digit_rowsums(self) -> np.ndarray:
        if self.rowsums is not None:
            return self.rowsums
        return np.stack([d.sum(dim=1, dtype=torch.int64).numpy() for d in self.digits])

    def take_rows(self, rows: np.ndarray) -> "Digits":
        """The digits of the rows ``rows`` (int64 (I,)) of the matrix only (a copy)."""
        index = torch.from_numpy(np.asarray(rows, np.int64))
        rowsums = None if self.rowsums is None else self.rowsums[:, rows]
        if self.concat is None:
            return Digits(tuple(d[index] for d in self.digits), self.offset, rowsums)
        concat, depth = self.concat[index], self.digits[0].shape[1]
        return Digits((concat[:, :depth], concat[:, depth:]), self.offset, rowsums, concat)


def split(values: torch.Tensor, word_bits: int) -> Digits:
    """Digits of integer-valued ``values`` (any dtype) of at most ``word_bits`` (≤ 16) bits."""
    if word_bits <= 8:
        return Digits((values.to(torch.int8),), 0)
    if word_bits > MAX_WORD_BITS:
        raise AccelSimError(f"int8 digits hold words of at most {MAX_WORD_BITS} bits, got {word_bits}")
    v = values.to(torch.int32)
    hi = torch.div(v, 256, rounding_mode="floor")
    lo = v - 256 * hi - 128
    if v.dim() != 2:
        return Digits((lo.to(torch.int8), hi.to(torch.int8)), 128)
    concat = torch.cat([lo, hi], dim=1).to(torch.int8)
    depth = v.shape[1]
    return Digits((concat[:, :depth], concat[:, depth:]), 128, concat=concat)


def row_major(t: torch.Tensor) -> torch.Tensor:
    """``t`` with standard row-major strides. ``Tensor.contiguous()`` keeps odd strides on
    dimensions of size 1, which BLAS reads as a leading dimension smaller than a row."""
    expected, step = [], 1
    for size in reversed(t.shape):
        expected.append(step)
        step *= size
    if tuple(reversed(expected)) == t.stride():
        return t
    return t.new_empty(t.shape).copy_(t)


@dataclass(frozen=True)
class WeightDigits:
    """A layer's weight matrix B (K × N) prepared for :func:`matmul`.

    The digit matrices are row-major int8 (K × N); the offset terms use their column sums.
    """

    digits: tuple[torch.Tensor, ...]
    offset: int
    colsums: tuple[torch.Tensor, ...]  # float64 (N,), Σ_k B_j[k, n]
    filters: int
    cross: torch.Tensor | None = None  # [B_1; B_0] (2K × N) for two-digit B

    @property
    def depth(self) -> int:
        return int(self.digits[0].shape[0])


def prepare_weights(b: torch.Tensor, word_bits: int) -> WeightDigits:
    """Digits of the integer weight matrix ``b`` (K × N) of ``word_bits``-bit words."""
    split_b = split(b, word_bits)
    colsums = tuple(d.to(torch.float64).sum(dim=0) for d in split_b.digits)
    digits = tuple(row_major(d) for d in split_b.digits)
    cross = torch.cat([digits[1], digits[0]]) if len(digits) == 2 else None
    return WeightDigits(digits, split_b.offset, colsums, b.shape[1], cross)


def patch_weights(b: WeightDigits, k: np.ndarray, n: np.ndarray, values: torch.Tensor, word_bits: int) -> WeightDigits:
    """A copy of ``b`` with entries B[k, n] replaced by ``values`` (a few faulty words)."""
    new = split(values, word_bits)
    digits, colsums = [], []
    kt, nt = torch.from_numpy(np.asarray(k, np.int64)), torch.from_numpy(np.asarray(n, np.int64))
    for d_old, s_old, d_new in zip(b.digits, b.colsums, new.digits):
        d = d_old.clone()
        before = d[kt, nt].to(torch.float64)
        d[kt, nt] = d_new
        s = s_old.clone()
        s.index_add_(0, nt, d_new.to(torch.float64) - before)
        digits.append(d)
        colsums.append(s)
    cross = None
    if b.cross is not None:
        cross = b.cross.clone()
        cross[kt, nt] = new.digits[1]
        cross[kt + b.depth, nt] = new.digits[0]
    return WeightDigits(tuple(digits), b.offset, tuple(colsums), b.filters, cross)


@dataclass(frozen=True)
class DigitProducts:
    """The int8 products of ``A @ B`` and the terms that turn them into the exact result
    (arguments of :func:`accel_sim.hardware.int8_kernels.recombine_digits`)."""

    products: tuple[np.ndarray, ...]  # int32 (M, N) per digit pair
    powers: np.ndarray  # int64: i + j per product
    rowsums: np.ndarray  # int64 (D, M): rowsum(A_i) (unused, and empty, when B has no offset)
    filters: int
    b_offset: int
    col_term: np.ndarray  # int64 (N,): a.offset · Σ_j 256^j colsum(B_j)
    const: int  # a.offset · b.offset · K

    @property
    def rows(self) -> int:
        return int(self.products[0].shape[0])

    def column_sums(self, filters: np.ndarray) -> np.ndarray:
        """The exact sums (float64 (M, J)) of the columns ``filters`` only."""
        out = np.empty((self.rows, len(filters)), dtype=np.float64)
        int8_kernels.recombine_columns(self.products, self.powers, self.rowsums, self.b_offset, self.col_term, self.const,
                                  np.asarray(filters, dtype=np.int64), out)
        return out

    def recombine_args(self) -> tuple:
        return (self.products, self.powers, self.rowsums, self.b_offset, self.col_term, self.const)


def digit_products(a: Digits, b: WeightDigits) -> DigitProducts:
    """Every ``A_i @ B_j`` through ``torch._int_mm`` (the expensive part of an exact GEMM)."""
    depth = a.digits[0].shape[1]
    if depth > MAX_DEPTH:
        raise AccelSimError(f"window of {depth} elements is too deep for exact int8 products (max {MAX_DEPTH})")
    if a.concat is not None and b.cross is not None and 2 * depth <= MAX_DEPTH:
        pairs = [(_operand(a.digits[0]), b.digits[0], 0), (_operand(a.concat), b.cross, 1),
                 (_operand(a.digits[1]), b.digits[1], 2)]
    else:
        pairs = [(_operand(a_i), b_j, i + j) for i, a_i in enumerate(a.digits) for j, b_j in enumerate(b.digits)]
    products = [torch._int_mm(a_i, b_j).numpy() for a_i, b_j, _ in pairs]
    powers = [power for _, _, power in pairs]
    rowsums = a.digit_rowsums() if b.offset else np.zeros((0, 0), dtype=np.int64)
    col_term = np.zeros(b.filters, dtype=np.int64)
    if a.offset:
        for j, s in enumerate(b.colsums):
            col_term += s.numpy().astype(np.int64) << (8 * j)
        col_term *= a.offset
    return DigitProducts(tuple(products), np.array(powers, np.int64), rowsums, b.filters, b.offset, col_term,
                         a.offset * b.offset * depth)


def _operand(t: torch.Tensor) -> torch.Tensor:
    """``t`` as ``torch._int_mm`` reads it correctly: rows may be spaced wider than a row
    (column blocks of a wider matrix) unless a dimension has size 1 (see :func:`row_major`)."""
    return t if t.stride(1) == 1 and min(t.shape) > 1 else row_major(t)


def matmul(a: Digits, b: WeightDigits) -> torch.Tensor:
    """Exact ``A @ B`` (float64, M × N) from the digits of A (M × K) and the prepared B.

    Every term is an integer below 2**53 in magnitude (|A @ B| ≤ K · 2**30 for 16-bit words), so
    the int64 recombination converts to float64 exactly.
    """
    return torch.from_numpy(digit_products(a, b).column_sums(np.arange(b.filters)))


def im2col_digits(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  out_hw: tuple[int, int], word_bits: int) -> Digits:
    """The digits of the im2col matrix (N·OH·OW, kh·kw·C) of channels-last words ``x``
    (N, H, W, C; float64 exact integers), K in (kernel row, kernel column, channel) order, zero
    padding; equal to :func:`split` of the im2col matrix."""
    if word_bits > MAX_WORD_BITS:
        raise AccelSimError(f"int8 digits hold words of at most {MAX_WORD_BITS} bits, got {word_bits}")
    words = x.to(torch.float64).contiguous().numpy()
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_hw
    shape = (words.shape[0] * oh * ow, kh * kw * words.shape[3])
    two = word_bits > 8
    depth = shape[1]
    both = np.empty((shape[0], 2 * depth if two else depth), dtype=np.int8)
    lo, hi = both[:, :depth], both[:, depth:]
    rowsums = np.empty((2 if two else 1, shape[0]), dtype=np.int64)
    int8_kernels.im2col_digits(words, kh, kw, sh, sw, ph, pw, oh, ow, int(two), lo, hi, rowsums)
    if not two:
        return Digits((torch.from_numpy(lo),), 0, rowsums)
    concat = torch.from_numpy(both)
    return Digits((concat[:, :depth], concat[:, depth:]), 128, rowsums, concat)


@functools.cache
def int8_matmul_is_exact() -> bool:
    """Whether ``torch._int_mm`` exists here and returns exact int32 sums, also for the operands
    that make 16-bit intermediates saturate in some int8 kernels."""
    try:
        gen = torch.Generator().manual_seed(0)
        depth = 4096
        a = torch.randint(-128, 128, (64, depth), dtype=torch.int8, generator=gen)
        b = torch.randint(-128, 128, (depth, 48), dtype=torch.int8, generator=gen)
        a[:8] = -128
        a[8:16] = 127
        b[:, :8] = -128
        b[:, 8:16] = 127
        ok = torch.equal(torch._int_mm(a, b).to(torch.int64), a.to(torch.int64) @ b.to(torch.int64))
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        logger.info("int8 matrix products unavailable (%s); using float64 BLAS", exc)
        return False
    if not ok:
        logger.warning("this machine's int8 matrix product is not exact; using float64 BLAS instead")
    return ok
