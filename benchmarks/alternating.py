"""Alternating rounds: how the benchmarks compare runs on a machine whose speed drifts.

Each vCPU of the development machine changes speed by up to 2× within minutes, so two runs timed
minutes apart mostly measure the machine. Running them back to back in every round, in reversed
order every other round, and comparing within rounds cancels most of that drift. Interleaving
them part by part (batch by batch) inside a round cancels more: the two sides of each pair are
a fraction of a second apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

K = TypeVar("K")
T = TypeVar("T")


def alternating_rounds(runs: dict[K, Callable[[], T]], rounds: int) -> dict[K, list[T]]:
    """Call every run once per round, back to back: in the given order in even rounds, reversed
    in odd ones. Returns each run's results in round order."""
    results: dict[K, list[T]] = {name: [] for name in runs}
    for round_ in range(rounds):
        for name in list(runs) if round_ % 2 == 0 else reversed(list(runs)):
            results[name].append(runs[name]())
    return results


def interleaved_rounds(runs: dict[K, Callable[[T], object]], parts: Sequence[T], rounds: int) -> dict[K, list[float]]:
    """Per round, every run on every part in turn (part by part, all runs back to back on each,
    the order reversed from one part to the next). Returns each run's wall-clock seconds summed
    over the parts, per round."""
    seconds: dict[K, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for _ in range(rounds):
        totals = dict.fromkeys(names, 0.0)
        for index, part in enumerate(parts):
            for name in names if index % 2 == 0 else reversed(names):
                started = time.perf_counter()
                runs[name](part)
                totals[name] += time.perf_counter() - started
        for name in names:
            seconds[name].append(totals[name])
    return seconds
