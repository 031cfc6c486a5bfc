"""FT-ClipAct threshold fine-tuning: layer by layer, the threshold of the largest fault AUC.

For each activation layer L in network order:

1. the layers after the ones already tuned are re-profiled (ACT_max) on the network as it now is
   (tuned thresholds before L, ReLU from L on), and every layer from L on takes its new ACT_max;
2. ``trials`` fault maps are drawn per fault rate for L (seeded from the seed, L, the rate and the
   trial: every candidate of L sees the same maps — common random numbers);
3. :func:`accel_sim.mitigation.search.interval_search` searches [0, ACT_max(L)] for the threshold
   whose AUC (mean top-1 on the tuning images over the trials, per rate, area over the rates) is
   largest; L keeps it.

Two modes give the same thresholds. ``naive`` scores every candidate of every round by running
the whole faulty network from its input. ``fast`` scores each distinct candidate once; computes,
per fault map, the network up to L's activation unit once and runs only the layers after it per
candidate; and re-runs those layers only for the images whose activation output differs from
that of a candidate already scored on the same map (the layers after L see the same words, so
they give the same prediction). Its re-profiling (step 1) starts from the profiling images'
words at the previous layer, kept from the previous step (:class:`TailProfiler`); ``naive``
profiles from the input each time.

A state file (JSON) records every finished layer, so a killed tuning continues with the next
untuned layer; it is used only by a tuning of the same image, data and settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from accel_sim.data import ImageSet, draw_sample
from accel_sim.errors import AccelSimError
from accel_sim.faults import DrawSpec, draw_fault_map, job_rng, prepare_permanent_faults
from accel_sim.faults.model import COUNT_MODES, MODELS, SITES
from accel_sim.hardware import Accelerator
from accel_sim.hardware.activation_unit import threshold_in_accumulator
from accel_sim.image import Image
from accel_sim.mitigation.apply import activation_layers, check_method, with_activation, with_thresholds
from accel_sim.mitigation.profile import TailProfiler, profile_act_max
from accel_sim.mitigation.search import Round, SearchSettings, area_under_curve, interval_search
from accel_sim.mitigation.thresholds import Thresholds

logger = logging.getLogger(__name__)

MODES = ("fast", "naive")
PAPER_RATES = (1e-7, 1e-6, 3e-6, 1e-5, 3e-5)
STATE_VERSION = 1


@dataclass(frozen=True)
class TuneSettings:
    """Everything that decides the tuned thresholds (the defaults follow the public FT-ClipAct
    code; see ``docs/mitigation.md``).

    Attributes
    ----------
    method : {"clipact", "clamp"}
    site, model, count_mode : str
        Faults of the tuning runs: a fault site, ``flip`` / ``stuck_at_0`` / ``stuck_at_1``, and
        ``exact`` (``int(bits × rate)`` per layer, the public code's rule) or ``binomial``; always
        permanent.
    rates : tuple of float
        Fault rates (per bit) of the AUC, ascending.
    trials : int
        Fault maps per rate.
    tune_images, profile_images : int
        Training images drawn (seeded, without replacement) to score candidates and to profile ACT_max.
    percentile : float or None
        Profile this percentile of the positive pre-activations instead of the maximum.
    search : SearchSettings
    seed : int
        Seeds the data draws and the fault maps.
    """

    method: str = "clipact"
    site: str = "weight_memory"
    model: str = "flip"
    count_mode: str = "exact"
    rates: tuple[float, ...] = PAPER_RATES
    trials: int = 5
    tune_images: int = 500
    profile_images: int = 512
    percentile: float | None = None
    search: SearchSettings = SearchSettings()
    seed: int = 0

    def __post_init__(self) -> None:
        check_method(self.method)
        for name, allowed in (("site", SITES), ("model", MODELS), ("count_mode", COUNT_MODES)):
            if getattr(self, name) not in allowed:
                raise AccelSimError(f"tuning {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        rates = tuple(self.rates)
        if not rates or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1 for r in rates):
            raise AccelSimError(f"tuning rates must be a non-empty list of numbers in [0, 1], got {self.rates!r}")
        if list(rates) != sorted(set(rates)):
            raise AccelSimError(f"tuning rates must be distinct and ascending, got {list(rates)}")
        object.__setattr__(self, "rates", tuple(float(r) for r in rates))
        for name, low, high in (("trials", 1, 10_000), ("tune_images", 1, 1_000_000),
                                ("profile_images", 1, 1_000_000), ("seed", 0, 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AccelSimError(f"tuning {name} must be an integer in {low}..{high}, got {value!r}")
        if self.percentile is not None and (isinstance(self.percentile, bool) or not 0 < self.percentile <= 100):
            raise AccelSimError(f"tuning percentile must lie in (0, 100], got {self.percentile!r}")

    def to_dict(self) -> dict:
        """The settings as plain values (the search's flattened in), e.g. for a threshold file."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "search"}
        out["rates"] = list(self.rates)
        out.update(dataclasses.asdict(self.search))
        return out


def draw_tuning_data(train: ImageSet, settings: TuneSettings) -> tuple[ImageSet, ImageSet]:
    """The profiling and the tuning images: two seeded draws from the training set ``train``."""
    rng = np.random.default_rng(settings.seed)
    profile = draw_sample(train, min(settings.profile_images, len(train)), rng)
    tune = draw_sample(train, min(settings.tune_images, len(train)), rng)
    return profile, tune


def tuning_key(base: Image, accelerator: Accelerator, settings: TuneSettings, profile: ImageSet,
               tune: ImageSet) -> str:
    """SHA-256 over what decides the answer: the ReLU image ``base``, the hardware, the settings,
    the data."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"image": base.content_hash(),
                              "hardware": accelerator.hw.config_hash(), "engine": accelerator.engine,
                              "settings": settings.to_dict()}, sort_keys=True).encode())
    for data in (profile, tune):
        digest.update(np.ascontiguousarray(data.images).tobytes())
        digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()


def tune_thresholds(image: Image, accelerator: Accelerator, profile: ImageSet, tune: ImageSet,
                    settings: TuneSettings, mode: str = "fast", state_path: str | os.PathLike | None = None,
                    progress: bool = False, cache_mib: int = 2048) -> Thresholds:
    """Tune the thresholds of every activation layer of ``image`` (see the module docstring).

    Parameters
    ----------
    image : Image
        The network; its activation units are replaced (it is not changed).
    accelerator : Accelerator
        Hardware, engine and batch size of every run.
    profile, tune : ImageSet
        Profiling and tuning images (:func:`draw_tuning_data`).
    settings : TuneSettings
    mode : {"fast", "naive"}
    state_path : path, optional
        JSON state file for resuming; written after every layer.
    progress : bool
        A progress bar per layer over its rounds.
    cache_mib : int
        Memory (MiB) for keeping each fault map's activation-unit inputs from round to round
        (fast mode); past it they are recomputed each round.

    Returns
    -------
    Thresholds
        Source ``tuned`` for every layer, with the ACT_max each was searched under.
    """
    if mode not in MODES:
        raise AccelSimError(f"tuning mode must be one of {', '.join(MODES)}, got {mode!r}")
    targets = activation_layers(image)
    if not targets:
        raise AccelSimError(f"image {image.model} {image.format_name} has no activation layer to tune")
    accelerator.check_image(image)
    base = with_activation(image, "relu")
    state = _load_state(state_path, tuning_key(base, accelerator, settings, profile, tune))
    tuned = {int(k): v["threshold"] for k, v in state["layers"].items()}
    bounds = {int(k): v["act_max"] for k, v in state["layers"].items()}
    profiler = TailProfiler(profile.images, accelerator, settings.percentile) if mode == "fast" else None
    for layer in targets:
        if layer in tuned:
            continue
        started = time.perf_counter()
        tail = [i for i in targets if i >= layer]
        current = with_thresholds(base, settings.method, tuned)
        act_max = (profiler.act_max(current, tail) if profiler is not None else
                   profile_act_max(current, profile.images, accelerator, tail, settings.percentile))
        network = with_thresholds(base, settings.method, {**tuned, **act_max})
        scorer = _LayerScorer(network, layer, accelerator, tune, settings, mode, cache_mib)
        bar = tqdm(total=settings.search.max_rounds, desc=f"tune layer {layer} ({image.layers[layer].name})",
                   disable=not progress, leave=True, unit="round")
        scorer.on_round = bar.update
        try:
            threshold, rounds = interval_search(scorer.score, act_max[layer], settings.search, reuse=mode == "fast")
        finally:
            bar.close()
        tuned[layer], bounds[layer] = threshold, act_max[layer]
        seconds = time.perf_counter() - started
        logger.info("layer %d (%s): ACT_max %.6g, tuned T %.6g after %d rounds in %.0f s (%d candidates scored, "
                    "%d suffix image-runs of %d)", layer, image.layers[layer].name, act_max[layer], threshold,
                    len(rounds), seconds, scorer.scored, scorer.suffix_runs, scorer.suffix_possible)
        state["layers"][str(layer)] = {"threshold": threshold, "act_max": act_max[layer], "seconds": seconds,
                                       "rounds": [dataclasses.asdict(r) for r in rounds]}
        _save_state(state_path, state)
    return Thresholds(settings.method, tuned, {i: "tuned" for i in tuned}, bounds, base.content_hash(),
                      {**settings.to_dict(), "profile_data": profile.name, "tune_data": tune.name})


class _LayerScorer:
    """Scores thresholds of one layer: AUC over the rates of the mean top-1 over the trials."""

    def __init__(self, network: Image, layer: int, accelerator: Accelerator, tune: ImageSet,
                 settings: TuneSettings, mode: str, cache_mib: int):
        self.network, self.layer, self.accelerator, self.tune = network, layer, accelerator, tune
        self.settings, self.mode = settings, mode
        self.maps = [(rate, trial, self._draw(rate, trial)) for rate in settings.rates for trial in range(settings.trials)]
        self.cache_bytes = cache_mib * 2**20
        self._pre: dict[int, torch.Tensor] = {}  # map → activation-unit inputs of all tuning images
        self._ready: dict[int, object] = {}  # map → its prepared faulty layers
        self._correct: dict[int, dict[float, np.ndarray]] = {m: {} for m in range(len(self.maps))}
        self.on_round = lambda n: None
        self.scored = self.suffix_runs = self.suffix_possible = 0

    def _draw(self, rate: float, trial: int):
        s = self.settings
        spec = DrawSpec(s.site, rate, s.model, "permanent", s.count_mode)
        rng = job_rng(s.seed, f"tune/{self.layer}/{rate!r}/{trial}")
        return draw_fault_map(self.network, self.accelerator.hw, spec, rng, len(self.tune))

    def score(self, thresholds: list[float]) -> list[float]:
        """AUC (percent) of each threshold."""
        correct = self._naive(thresholds) if self.mode == "naive" else self._fast(thresholds)
        self.scored += len(thresholds)
        self.on_round(1)
        aucs = []
        for t in thresholds:
            per_rate = [np.mean([100.0 * correct[m][t].mean() for m, (r, _, _) in enumerate(self.maps) if r == rate])
                        for rate in self.settings.rates]
            aucs.append(area_under_curve(per_rate))
        logger.debug("layer %d: %s", self.layer, {f"{t:.5g}": round(a, 3) for t, a in zip(thresholds, aucs)})
        return aucs

    def _candidate(self, threshold: float):
        return self.network.layers[self.layer].with_activation(self.settings.method, threshold)

    def _naive(self, thresholds: list[float]) -> dict[int, dict[float, np.ndarray]]:
        """Every threshold, every map: the whole faulty network from its input."""
        out: dict[int, dict[float, np.ndarray]] = {m: {} for m in range(len(self.maps))}
        for t in thresholds:
            layers = list(self.network.layers)
            layers[self.layer] = self._candidate(t)
            candidate = dataclasses.replace(self.network, layers=tuple(layers))
            for m, (_, _, fmap) in enumerate(self.maps):
                ready = prepare_permanent_faults(self.accelerator, candidate, fmap)
                run = self.accelerator.run(candidate, self.tune.images, ready.prepared, ready.layer_faults)
                out[m][t] = run.predictions == self.tune.labels
        return out

    def _fast(self, thresholds: list[float]) -> dict[int, dict[float, np.ndarray]]:
        acc = self.accelerator
        for m, (_, _, fmap) in enumerate(self.maps):
            ready = self._ready.get(m)
            if ready is None:  # kept from round to round: the network and the map stay
                ready = self._ready[m] = prepare_permanent_faults(acc, self.network, fmap)
            pre = self._pre.get(m)
            if pre is None:
                pre = self._prefix(ready)
                if (len(self._pre) + 1) * pre.numel() * pre.element_size() <= self.cache_bytes:
                    self._pre[m] = pre
            scored = self._correct[m]
            for t in thresholds:
                correct = np.zeros(len(self.tune), dtype=bool)
                todo = np.arange(len(self.tune))
                if scored:
                    ref = min(scored, key=lambda s: abs(s - t))
                    differs = self._may_differ(pre, t, ref)
                    correct[~differs] = scored[ref][~differs]
                    todo = np.flatnonzero(differs)
                words = acc.activate(self._candidate(t), pre[torch.from_numpy(todo)])
                # images whose output words are all zero (every one at T = 0) share one prediction
                silent = (words == 0).flatten(1).all(dim=1).numpy()
                if silent.sum() > 1:
                    first = int(np.flatnonzero(silent)[0])
                    shared = self._suffix(words[first:first + 1], ready)[0]
                    correct[todo[silent]] = shared == self.tune.labels[todo[silent]]
                    self.suffix_runs += 1
                    words, todo = words[torch.from_numpy(~silent)], todo[~silent]
                for start in range(0, todo.size, acc.batch_size):
                    rows = todo[start:start + acc.batch_size]
                    correct[rows] = self._suffix(words[start:start + acc.batch_size], ready) == self.tune.labels[rows]
                self.suffix_runs += todo.size
                self.suffix_possible += len(self.tune)
                scored[t] = correct
        return self._correct

    def _may_differ(self, pre: torch.Tensor, t: float, ref: float) -> np.ndarray:
        """Per image (bool (N,)): whether the tuned layer's output words under thresholds ``t`` and
        ``ref`` can differ, from its activation-unit inputs ``pre``. With T1 < T2, clipact outputs
        differ only where T1 < x ≤ T2 and clamp outputs only where x > T1 (NaN takes neither
        branch: both give 0, or both NaN); compared in the unit's own terms (float32 values, or
        accumulator integers)."""
        low, high = sorted(threshold_in_accumulator(self._candidate(v)) for v in (t, ref))
        changed = pre > low
        if self.settings.method == "clipact":
            changed &= pre <= high
        return changed.flatten(1).any(dim=1).numpy()

    def _suffix(self, words: torch.Tensor, ready) -> np.ndarray:
        """Predictions of the layers after the tuned one on its output words (a batch)."""
        logits = self.accelerator.run_layers(self.network, words, ready.prepared, ready.layer_faults,
                                             start=self.layer + 1)
        return self.accelerator.output(self.network, logits.numpy()).predictions

    def _prefix(self, ready) -> torch.Tensor:
        """The activation-unit inputs of the tuned layer for every tuning image under one map."""
        acc, parts = self.accelerator, []
        for start in range(0, len(self.tune), acc.batch_size):
            x = acc.input_words(self.network, self.tune.images[start:start + acc.batch_size])
            x = acc.run_layers(self.network, x, ready.prepared, ready.layer_faults, start=0, stop=self.layer)
            parts.append(acc.pre_activation(self.network, self.layer, x, ready.prepared, ready.layer_faults))
        return torch.cat(parts)


def _load_state(path: str | os.PathLike | None, key: str) -> dict:
    fresh = {"version": STATE_VERSION, "key": key, "layers": {}}
    if path is None or not Path(path).is_file():
        return fresh
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AccelSimError(f"tuning state file {str(path)!r} cannot be read ({exc}); remove it to start over") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or not isinstance(state.get("layers"), dict):
        raise AccelSimError(f"tuning state file {str(path)!r} is not an accel-sim tuning state; remove it to start over")
    if state.get("key") != key:
        logger.warning("tuning state %s belongs to another image, data or settings: starting over", path)
        return fresh
    logger.info("resuming tuning from %s: layers %s done", path, sorted(int(k) for k in state["layers"]))
    return state


def _save_state(path: str | os.PathLike | None, state: dict) -> None:
    if path is None:
        return
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["MODES", "PAPER_RATES", "Round", "TuneSettings", "draw_tuning_data", "tune_thresholds", "tuning_key"]
