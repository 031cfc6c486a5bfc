"""ACT_max profiling: the largest value each activation unit sees on fault-free training images.

Profiling runs the image on the emulated datapath through the accelerator's public stages
(:meth:`~accel_sim.hardware.Accelerator.pre_activation` and
:meth:`~accel_sim.hardware.Accelerator.activate`) and records, per activation layer, what the
activation unit compares with its threshold: the exact accumulator plus bias (fixed point) or the
float32 sum (fp32). A threshold of exactly that value therefore keeps every profiled activation.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from accel_sim.errors import AccelSimError
from accel_sim.hardware import Accelerator
from accel_sim.image import Image, WeightedLayer
from accel_sim.mitigation.apply import activation_layers

logger = logging.getLogger(__name__)


def profile_act_max(image: Image, images: np.ndarray, accelerator: Accelerator, layers: list[int] | None = None,
                    percentile: float | None = None) -> dict[int, float]:
    """ACT_max of each activation layer of ``image`` on ``uint8`` images ``(N, C, H, W)``.

    Parameters
    ----------
    image : Image
        The network as it runs (its activation units act while profiling: profile a ReLU image for
        unbounded activations).
    images : numpy.ndarray
        ``uint8`` profiling images (training data), ``(N, C, H, W)``.
    accelerator : Accelerator
        Hardware and engine to profile on (``fast`` or ``faithful``); batches of its batch size.
    layers : list of int, optional
        Activation layers to report (default: all of them).
    percentile : float, optional
        Report this percentile (0 < q <= 100) of each layer's positive pre-activation values
        instead of their maximum (all of them are kept in memory: 8 bytes per positive value).

    Returns
    -------
    dict of int to float
        Layer index → ACT_max in real units (0.0 for a layer that is never positive).
    """
    targets = _check(image, images, accelerator, layers, percentile)
    batches = [accelerator.input_words(image, images[start:start + accelerator.batch_size])
               for start in range(0, len(images), accelerator.batch_size)]
    return _profile(image, accelerator, batches, 0, targets, percentile, len(images))


class TailProfiler:
    """ACT_max of the layers from L on, for L rising while the thresholds before it are fixed.

    Keeps the profiling images' input words of the last layer profiled from, so each call runs
    only the layers from there on: a call for layers from L on needs the layers before L final
    since the previous call (the threshold tuning fixes them in network order). Gives what
    :func:`profile_act_max` gives for the same image and layers.
    """

    def __init__(self, images: np.ndarray, accelerator: Accelerator, percentile: float | None = None):
        self.images, self.accelerator, self.percentile = images, accelerator, percentile
        self._start, self._words = 0, None  # input words (per batch) of layer self._start

    def act_max(self, image: Image, layers: list[int]) -> dict[int, float]:
        """ACT_max of ``layers`` (activation layers, all at or after every earlier call's first)."""
        acc = self.accelerator
        targets = _check(image, self.images, acc, layers, self.percentile)
        first = min(targets)
        if self._words is None or first < self._start:
            self._start = 0
            self._words = [acc.input_words(image, self.images[start:start + acc.batch_size])
                           for start in range(0, len(self.images), acc.batch_size)]
        if first > self._start:
            prepared = acc.prepare(image)
            self._words = [acc.run_layers(image, x, prepared, start=self._start, stop=first) for x in self._words]
            self._start = first
        return _profile(image, acc, self._words, first, targets, self.percentile, len(self.images))


def _check(image: Image, images: np.ndarray, accelerator: Accelerator, layers: list[int] | None,
           percentile: float | None) -> list[int]:
    targets = activation_layers(image) if layers is None else list(layers)
    bad = sorted(set(targets) - set(activation_layers(image)))
    if bad:
        raise AccelSimError(f"layers {bad} of {image.model} have no activation unit to profile")
    if not targets:
        raise AccelSimError(f"image {image.model} {image.format_name} has no activation layer to profile")
    if percentile is not None and not 0 < percentile <= 100:
        raise AccelSimError(f"percentile must lie in (0, 100], got {percentile!r}")
    if len(images) == 0:
        raise AccelSimError("profiling needs at least one image")
    accelerator.check_image(image)
    return targets


def _profile(image: Image, accelerator: Accelerator, batches: list[torch.Tensor], start: int, targets: list[int],
             percentile: float | None, count: int) -> dict[int, float]:
    """Peaks of the activation-unit inputs of ``targets`` over ``batches`` (input words of layer
    ``start``, which precedes every target)."""
    prepared = accelerator.prepare(image)
    peaks: dict[int, float] = {i: 0.0 for i in targets}
    positives: dict[int, list[np.ndarray]] = {i: [] for i in targets}
    last = max(targets)
    for x in batches:
        for i in range(start, last + 1):
            if i not in peaks:
                x = accelerator.run_layers(image, x, prepared, start=i, stop=i + 1)
                continue
            acc = accelerator.pre_activation(image, i, x, prepared)
            _record(acc, i, peaks, positives if percentile is not None else None)
            x = accelerator.activate(image.layers[i], acc)
    act_max = {i: _real(image.layers[i], _percentile(positives[i], percentile) if percentile is not None else peaks[i])
               for i in targets}
    logger.info("ACT_max of %s %s on %d images%s: %s", image.model, image.format_name, count,
                f" (percentile {percentile:g})" if percentile is not None else "",
                {i: round(v, 4) for i, v in act_max.items()})
    return act_max


def _record(acc: torch.Tensor, layer: int, peaks: dict[int, float], positives: dict[int, list] | None) -> None:
    finite = acc[torch.isfinite(acc)]  # an fp32 NaN or Inf is no activation a threshold can keep
    if finite.numel():
        peaks[layer] = max(peaks[layer], float(finite.max()))
    if positives is not None:
        positives[layer].append(finite[finite > 0].double().numpy())


def _percentile(chunks: list[np.ndarray], q: float) -> float:
    values = np.concatenate(chunks) if chunks else np.zeros(0)
    return float(np.percentile(values, q, method="higher")) if values.size else 0.0  # an observed value


def _real(layer: WeightedLayer, value: float) -> float:
    """An activation-unit input (accumulator integer or float32 value) in real units."""
    if layer.weight_format.is_float:
        return float(value)
    return float(np.ldexp(value, -layer.acc_frac_bits))  # exact: a power-of-two scale
