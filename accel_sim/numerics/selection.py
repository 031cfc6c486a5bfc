"""Choosing fixed-point formats from the values they must hold."""

from __future__ import annotations

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.numerics.formats import MAX_ABS_FRAC_BITS, Fixed, round_scaled


def frac_bits_for(max_abs: float, word_bits: int, signed: bool = True) -> int:
    """The largest ``frac_bits`` such that ``±max_abs`` quantizes without saturating.

    Parameters
    ----------
    max_abs : float
        Largest magnitude to represent (>= 0, finite).
    word_bits : int
        Word width in bits.

    Returns
    -------
    int
        In ``-64..64``; ``word_bits - 1`` when ``max_abs`` is 0 (every format holds zeros).
    """
    if not np.isfinite(max_abs) or max_abs < 0:
        raise AccelSimError(f"max_abs must be a finite number >= 0, got {max_abs!r}")
    if max_abs == 0:
        return word_bits - 1

    raw_max = Fixed(word_bits, 0, signed).raw_max

    def fits(frac: int) -> bool:
        # -max_abs fits whenever +max_abs does: a signed range reaches one step further down.
        return round_scaled(np.ldexp(np.float64(max_abs), frac), "nearest_even") <= raw_max

    guess = int(np.floor(np.log2(raw_max / max_abs)))
    frac = max(-MAX_ABS_FRAC_BITS, min(MAX_ABS_FRAC_BITS, guess))
    while frac > -MAX_ABS_FRAC_BITS and not fits(frac):
        frac -= 1
    while frac < MAX_ABS_FRAC_BITS and fits(frac + 1):
        frac += 1
    return frac


def format_for(values: np.ndarray, word_bits: int, percentile: float | None = None) -> Fixed:
    """Signed format of ``word_bits`` bits for ``values``: the largest ``|v|`` (or its percentile) fits."""
    mags = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    if percentile is not None and not 0 < percentile <= 100:
        raise AccelSimError(f"percentile must lie in (0, 100], got {percentile!r}")
    top = 0.0 if mags.size == 0 else float(np.percentile(mags, percentile) if percentile else mags.max())
    return Fixed(word_bits, frac_bits_for(top, word_bits))
