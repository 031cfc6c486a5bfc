"""Exact integer GEMMs of words of up to 32 bits through float64 BLAS, as ``int64`` sums.

float64 holds integers exactly below 2**53, which a sum of products of 32-bit words passes. Each
word is written with 16-bit halves, ``v = 2**16·hi + lo`` with ``hi = ⌊v / 2**16⌋`` (|hi| ≤ 2**16)
and ``lo = v mod 2**16`` (0..2**16 − 1); then, for ``W`` (O × K) and ``A``::

    W @ A = 2**32 (W_hi @ A_hi) + 2**16 ([W_hi | W_lo] @ [A_lo; A_hi]) + W_lo @ A_lo

Every product of halves is at most 2**32 in magnitude, so each of the three matrix products (the
middle one over twice the depth) is exact in float64 for windows of up to ``MAX_DEPTH`` elements; they are combined in ``int64``
arithmetic, which is exact modulo 2**64: the result is the true sum whenever that fits in
``int64`` (the caller bounds it), and its residue modulo 2**64 always (enough for a wrapping
accumulator of up to 64 bits).

When one operand is small (the stored weights of a 32-bit fixed-point image, whose values are
mostly below 1), only the other is split: with balanced digits ``a = 2**16·a_hi + a_lo``
(``|a_lo| ≤ 2**15``, ``|a_hi| ≤ 2**16``), ``W @ A = 2**16 (W @ A_hi) + W @ A_lo``, two products
instead of four, exact while ``2**16 · max_n Σ_k |W[n, k]|`` stays below 2**53
(:func:`split_matmul_is_exact`).
"""

from __future__ import annotations

import numpy as np
import torch

from accel_sim.errors import AccelSimError
from accel_sim.numerics import EXACT_LIMIT, MARGIN

MAX_DEPTH = (1 << 20) - 1  # 2·K·2**32 < 2**53: the middle product (depth 2K) stays exact
_HALF = 2.0**16


def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) float64 halves of integer-valued float64 words ``t`` of at most 32 bits."""
    hi = torch.floor(t / _HALF)  # exact: division by a power of two
    return hi, t - hi * _HALF


def matmul_int64(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``w @ a`` (``torch.matmul`` shapes, float64 operands holding words of at most 32 bits and a
    contracted dimension of at most :data:`MAX_DEPTH`) as ``int64``, exact modulo 2**64."""
    if w.shape[-1] > MAX_DEPTH:
        raise AccelSimError(f"window of {w.shape[-1]} elements is deeper than {MAX_DEPTH}")
    w_hi, w_lo = _halves(w.to(torch.float64))
    a_hi, a_lo = _halves(a.to(torch.float64))
    high = torch.matmul(w_hi, a_hi).numpy().astype(np.int64)
    middle = torch.matmul(torch.cat([w_hi, w_lo], dim=-1), torch.cat([a_lo, a_hi], dim=-2)).numpy().astype(np.int64)
    low = torch.matmul(w_lo, a_lo).numpy().astype(np.int64)
    with np.errstate(over="ignore"):  # int64 arithmetic wraps modulo 2**64, which is what is wanted
        total = high * np.int64(1 << 32) + middle * np.int64(1 << 16) + low
    return torch.from_numpy(total)


def balanced_digits(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) float64 with ``t = 2**16·hi + lo``, ``|lo| ≤ 2**15``: words ``t`` of at most 32
    bits (integer-valued float64) give ``|hi| ≤ 2**16``."""
    hi = torch.round(t / _HALF)  # exact: division by a power of two, rounding to an integer
    return hi, t - hi * _HALF


def split_matmul_is_exact(abs_col_sum_max: float) -> bool:
    """Whether the two products of :func:`join_split` are exact for weights whose largest ``Σ_k |W[n, k]|`` is
    ``abs_col_sum_max`` (every partial sum of either product stays below 2**53)."""
    return _HALF * abs_col_sum_max < EXACT_LIMIT * MARGIN


def join_split(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``2**16·high + low`` as ``int64`` modulo 2**64: the sums ``W @ A_hi`` and ``W @ A_lo`` of the
    balanced digits of ``A`` (:func:`balanced_digits`, each product exact in float64 when
    :func:`split_matmul_is_exact` holds for ``W``) joined into ``W @ A``."""
    with np.errstate(over="ignore"):  # modulo 2**64, as in matmul_int64
        return torch.from_numpy(high.numpy().astype(np.int64) * np.int64(1 << 16) + low.numpy().astype(np.int64))
