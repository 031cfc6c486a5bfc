"""The FT-ClipAct interval search for one layer's threshold, and the AUC it maximises.

Round after round, ``candidates`` equally spaced thresholds (both ends included) are scored; the
best one's two neighbours span the next round's interval (the first or last pair when the best is
at an end). After ``early_stop_round`` rounds the search stops once the largest AUC difference
between adjacent candidates of a round is at most ``early_stop_pp``; it never runs more than
``max_rounds`` rounds. The answer is the best candidate of the last round; among equal AUCs the
largest threshold wins (it clips the fewest fault-free activations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from accel_sim.errors import AccelSimError


def area_under_curve(accuracies: Sequence[float]) -> float:
    """Trapezoid area under accuracy (percent) over equally spaced x positions spanning [0, 1]
    (one position per fault rate, in rate order): a mean accuracy in percent. One point is its
    own area."""
    points = np.asarray(accuracies, dtype=np.float64)
    if points.size == 0:
        raise AccelSimError("the area under the curve needs at least one accuracy")
    if points.size == 1:
        return float(points[0])
    return float(np.trapezoid(points) / (points.size - 1))


@dataclass(frozen=True)
class SearchSettings:
    """Shape of the interval search (the defaults are the public FT-ClipAct code's).

    Attributes
    ----------
    candidates : int
        Equally spaced thresholds per round, both ends included (>= 3, so a round narrows).
    max_rounds : int
        Most rounds per layer (>= 1).
    early_stop_round : int
        First round after which the search may stop early (>= 1).
    early_stop_pp : float
        It stops when no two adjacent candidates' AUCs differ by more than this (percentage points).
    """

    candidates: int = 4
    max_rounds: int = 4
    early_stop_round: int = 3
    early_stop_pp: float = 0.2

    def __post_init__(self) -> None:
        for name, low in (("candidates", 3), ("max_rounds", 1), ("early_stop_round", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise AccelSimError(f"search setting {name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.early_stop_pp, bool) or not isinstance(self.early_stop_pp, (int, float)) \
                or not np.isfinite(self.early_stop_pp) or self.early_stop_pp < 0:
            raise AccelSimError(f"search setting early_stop_pp must be a finite number >= 0, got {self.early_stop_pp!r}")


@dataclass(frozen=True)
class Round:
    """One round of a layer's search: its candidates (ascending), their AUCs, the best's index."""

    candidates: tuple[float, ...]
    aucs: tuple[float, ...]
    best: int


def interval_search(score: Callable[[list[float]], list[float]], upper: float, settings: SearchSettings,
                    reuse: bool = True) -> tuple[float, list[Round]]:
    """Search [0, ``upper``] for the threshold of the largest AUC.

    Parameters
    ----------
    score : callable
        ``score(thresholds) -> AUCs`` for a list of thresholds (one round's, or only the new ones).
    upper : float
        The search's upper end, ACT_max (>= 0); 0 gives 0 without scoring.
    reuse : bool
        Score each distinct threshold once (True), or every candidate of every round (False: the
        naive reference; the answer is the same when ``score`` is deterministic).

    Returns
    -------
    (float, list of Round)
        The chosen threshold and the rounds that led to it.
    """
    if not np.isfinite(upper) or upper < 0:
        raise AccelSimError(f"the search's upper end (ACT_max) must be a finite number >= 0, got {upper!r}")
    if upper == 0:
        return 0.0, []
    known: dict[float, float] = {}
    rounds: list[Round] = []
    lo, hi = 0.0, float(upper)
    for number in range(1, settings.max_rounds + 1):
        candidates = [float(c) for c in np.linspace(lo, hi, settings.candidates)]
        todo = [c for c in dict.fromkeys(candidates) if not (reuse and c in known)]
        if todo:
            scores = list(score(todo))
            if len(scores) != len(todo):
                raise AccelSimError(f"score returned {len(scores)} AUCs for {len(todo)} thresholds")
            known.update(zip(todo, (float(s) for s in scores)))
        aucs = [known[c] for c in candidates]
        best = max(range(len(candidates)), key=lambda j: (aucs[j], candidates[j]))
        rounds.append(Round(tuple(candidates), tuple(aucs), best))
        if number >= settings.early_stop_round and float(np.max(np.abs(np.diff(aucs)))) <= settings.early_stop_pp:
            break
        left = min(max(best - 1, 0), len(candidates) - 2)  # the pair at an end, else the neighbours
        right = max(min(best + 1, len(candidates) - 1), 1)
        lo, hi = candidates[left], candidates[right]
        if hi <= lo:  # the interval cannot narrow further in float64
            break
    return rounds[-1].candidates[rounds[-1].best], rounds
