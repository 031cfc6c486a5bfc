"""Exact integer GEMMs of up to 16-bit words through int8 matrix products (``torch._int_mm``).

A word ``v`` of at most 8 bits is one int8 digit. A word of 9..16 bits is written with two int8
digits and an offset: ``v = 256·hi + lo + 128`` with ``hi = ⌊v / 256⌋`` and
``lo = (v mod 256) − 128``, both in ``-128..127``. Then, with ``A = Σ_i 256^i A_i + α`` and
``B = Σ_j 256^j B_j + β``::

    A @ B = Σ_ij 256^(i+j) (A_i @ B_j) + β · Σ_i 256^i rowsum(A_i) + α · Σ_j 256^j colsum(B_j) + α·β·K

Every ``A_i @ B_j`` is exact in int32 when ``K · 128² < 2³¹`` (every partial sum is bounded by
that), and the recombination is done in int64. CPU int8 matrix units (VNNI, AMX) run these
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

from accel_sim.hardware import kernels

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

    def digit_rowsums(self) -> np.ndarray:
        if self.rowsums is not None:
            return self.rowsums
        return np.stack([d.sum(dim=1, dtype=torch.int64).numpy() for d in self.digits])


def split(values: torch.Tensor, word_bits: int) -> Digits:
    """Digits of integer-valued ``values`` (any dtype) of at most ``word_bits`` (≤ 16) bits."""
    if word_bits <= 8:
        return Digits((values.to(torch.int8),), 0)
    if word_bits > MAX_WORD_BITS:
        raise ValueError(f"int8 digits hold words of at most {MAX_WORD_BITS} bits, got {word_bits}")
    v = values.to(torch.int32)
    hi = torch.div(v, 256, rounding_mode="floor")
    lo = v - 256 * hi - 128
    return Digits((lo.to(torch.int8), hi.to(torch.int8)), 128)


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

    @property
    def depth(self) -> int:
        return int(self.digits[0].shape[0])


def prepare_weights(b: torch.Tensor, word_bits: int) -> WeightDigits:
    """Digits of the integer weight matrix ``b`` (K × N) of ``word_bits``-bit words."""
    split_b = split(b, word_bits)
    colsums = tuple(d.to(torch.float64).sum(dim=0) for d in split_b.digits)
    return WeightDigits(tuple(row_major(d) for d in split_b.digits), split_b.offset, colsums, b.shape[1])


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
    return WeightDigits(tuple(digits), b.offset, tuple(colsums), b.filters)


@dataclass(frozen=True)
class DigitProducts:
    """The int8 products of ``A @ B`` and the terms that turn them into the exact result
    (arguments of :func:`accel_sim.hardware.kernels.recombine_digits`)."""

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

    def recombine_args(self) -> tuple:
        return (self.products, self.powers, self.rowsums, self.b_offset, self.col_term, self.const)


def digit_products(a: Digits, b: WeightDigits) -> DigitProducts:
    """Every ``A_i @ B_j`` through ``torch._int_mm`` (the expensive part of an exact GEMM)."""
    depth = a.digits[0].shape[1]
    if depth > MAX_DEPTH:
        raise ValueError(f"window of {depth} elements is too deep for exact int8 products (max {MAX_DEPTH})")
    products, powers = [], []
    for i, a_i in enumerate(a.digits):
        for j, b_j in enumerate(b.digits):
            products.append(torch._int_mm(row_major(a_i), b_j).numpy())
            powers.append(i + j)
    rowsums = a.digit_rowsums() if b.offset else np.zeros((0, 0), dtype=np.int64)
    col_term = np.zeros(b.filters, dtype=np.int64)
    if a.offset:
        for j, s in enumerate(b.colsums):
            col_term += s.numpy().astype(np.int64) << (8 * j)
        col_term *= a.offset
    return DigitProducts(tuple(products), np.array(powers, np.int64), rowsums, b.filters, b.offset, col_term,
                         a.offset * b.offset * depth)


def matmul(a: Digits, b: WeightDigits) -> torch.Tensor:
    """Exact ``A @ B`` (float64, M × N) from the digits of A (M × K) and the prepared B.

    Every term is an integer below 2**53 in magnitude (|A @ B| ≤ K · 2**30 for 16-bit words), so
    the int64 recombination converts to float64 exactly.
    """
    products = digit_products(a, b)
    out = np.empty((products.rows, b.filters), dtype=np.float64)
    kernels.recombine_digits(*products.recombine_args(), kernels.EPILOGUE_SUM, _NO_BIAS, 0, 0, 64, 0, 0, 0, 1, 0, 0,
                             0, out)
    return torch.from_numpy(out)


_NO_BIAS = np.zeros(0, dtype=np.int64)


def im2col_digits(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  out_hw: tuple[int, int], word_bits: int) -> Digits:
    """The digits of the im2col matrix (N·OH·OW, kh·kw·C) of channels-last words ``x``
    (N, H, W, C; float64 exact integers), K in (kernel row, kernel column, channel) order, zero
    padding; equal to :func:`split` of the im2col matrix."""
    if word_bits > MAX_WORD_BITS:
        raise ValueError(f"int8 digits hold words of at most {MAX_WORD_BITS} bits, got {word_bits}")
    words = x.to(torch.float64).contiguous().numpy()
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, padding, out_hw
    shape = (words.shape[0] * oh * ow, kh * kw * words.shape[3])
    two = word_bits > 8
    lo = np.empty(shape, dtype=np.int8)
    hi = np.empty(shape if two else (0, 0), dtype=np.int8)
    rowsums = np.empty((2 if two else 1, shape[0]), dtype=np.int64)
    kernels.im2col_digits(words, kh, kw, sh, sw, ph, pw, oh, ow, int(two), lo, hi, rowsums)
    digits = (torch.from_numpy(lo), torch.from_numpy(hi)) if two else (torch.from_numpy(lo),)
    return Digits(digits, 128 if two else 0, rowsums)


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
