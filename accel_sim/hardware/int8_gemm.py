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
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MAX_WORD_BITS = 16
MAX_DEPTH = (1 << 31) // (128 * 128) - 1  # largest K for which int32 partial sums cannot overflow


@dataclass(frozen=True)
class Digits:
    """An integer matrix as int8 digit matrices: ``Σ_i 256^i digits[i] + offset``."""

    digits: tuple[torch.Tensor, ...]
    offset: int


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


def digit_fill(word_bits: int) -> tuple[int, ...]:
    """The digits of the value 0 (what zero padding becomes in each digit map)."""
    return (0,) if word_bits <= 8 else (-128, 0)


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

    ``digits[0]`` carries an extra column of ones when B has an offset: ``A_i @ digits[0]`` then
    also yields ``rowsum(A_i)``, far cheaper than a separate reduction over A.
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
    digits = list(split_b.digits)
    if split_b.offset:
        digits[0] = torch.cat([digits[0], torch.ones(b.shape[0], 1, dtype=torch.int8)], dim=1)
    return WeightDigits(tuple(row_major(d) for d in digits), split_b.offset, colsums, b.shape[1])


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


def matmul(a: Digits, b: WeightDigits) -> torch.Tensor:
    """Exact ``A @ B`` (float64, M × N) from the digits of A (M × K) and the prepared B.

    Every term is an integer below 2**53 in magnitude (|A @ B| ≤ K · 2**30 for 16-bit words), so
    recombining in float64 is exact.
    """
    depth = a.digits[0].shape[1]
    if depth > MAX_DEPTH:
        raise ValueError(f"window of {depth} elements is too deep for exact int8 products (max {MAX_DEPTH})")
    n = b.filters
    out = None
    row_terms = None
    for i, a_i in enumerate(a.digits):
        for j, b_j in enumerate(b.digits):
            product = torch._int_mm(row_major(a_i), b_j).to(torch.float64)
            if j == 0 and b.offset:
                rowsum = product[:, n] * float(256**i)
                row_terms = rowsum if row_terms is None else row_terms + rowsum
                product = product[:, :n]
            if i + j:
                product = product * float(256 ** (i + j))
            out = product if out is None else out + product
    if b.offset:
        out += b.offset * row_terms.unsqueeze(1)
    if a.offset:
        out += a.offset * sum(s * float(256**j) for j, s in enumerate(b.colsums)).unsqueeze(0)
    if a.offset and b.offset:
        out += float(a.offset * b.offset * depth)
    return out


def unfold_digits(x: Digits, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  fill: tuple[int, ...], out_hw: tuple[int, int]) -> Digits:
    """im2col of channels-last digit maps (N, H, W, C) → (N·OH·OW, kh·kw·C), K in (kernel row,
    kernel column, channel) order; zero padding is expressed in digits (``fill``). Each window row
    is copied in runs of C contiguous bytes."""
    kh, kw = kernel
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_hw
    cols = []
    for d, value in zip(x.digits, fill):
        padded = F.pad(d, (0, 0, pw, pw, ph, ph), value=value) if (ph or pw) else d.contiguous()
        n, _, _, c = padded.shape
        s_n, s_h, s_w, s_c = padded.stride()
        windows = padded.as_strided((n, oh, ow, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))
        cols.append(row_major(windows.reshape(n * oh * ow, kh * kw * c)))
    return Digits(tuple(cols), x.offset)


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
