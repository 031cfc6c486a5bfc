"""Replacing the activation units of an image: ReLU → FT-ClipAct clipping or Ranger-style clamping.

FT-ClipAct replaces every unbounded activation (ReLU) by ``x if 0 <= x <= T else 0``; Ranger-style
clamping, ``min(max(x, 0), T)``, is offered for comparison. Thresholds are real values stored in
the image's layer records; the activation unit compares exactly in the accumulator domain. The
image given is never changed: every function returns a new image (whose content hash differs as
soon as an activation or threshold does).
"""

from __future__ import annotations

import dataclasses
import json

from accel_sim.errors import AccelSimError
from accel_sim.image import Image, WeightedLayer

ACTIVATIONS = ("relu", "clipact", "clamp")  # what a variant or a hardened image may use
METHODS = ("clipact", "clamp")  # the bounded ones, which need a threshold per layer


def activation_layers(image: Image) -> list[int]:
    """Indices of the layers with an activation unit to bound: conv/linear layers whose
    activation is not ``none`` (every layer but the last, in the zoo models)."""
    return [i for i, layer in enumerate(image.layers) if isinstance(layer, WeightedLayer) and layer.activation != "none"]


def check_method(method: str, allowed: tuple[str, ...] = METHODS) -> None:
    if method not in allowed:
        raise AccelSimError(f"activation method must be one of {', '.join(allowed)}, got {method!r}")


def with_thresholds(image: Image, method: str, thresholds: dict[int, float]) -> Image:
    """A copy of ``image`` in which each layer of ``thresholds`` (layer index → T, real units)
    uses ``method`` with its T and every other activation layer uses ReLU."""
    check_method(method)
    targets = set(activation_layers(image))
    unknown = sorted(set(thresholds) - targets)
    if unknown:
        raise AccelSimError(f"thresholds name layers {unknown}, which have no activation unit "
                         f"(the activation layers of {image.model} are {sorted(targets)})")
    layers = list(image.layers)
    for i in targets:
        layers[i] = (layers[i].with_activation(method, float(thresholds[i])) if i in thresholds
                     else layers[i].with_activation("relu", None))
    return dataclasses.replace(image, layers=tuple(layers), hardening="")


def with_activation(image: Image, kind: str, thresholds: dict[int, float] | None = None) -> Image:
    """A copy of ``image`` whose activation layers all use ``kind`` (``relu``, ``clipact`` or
    ``clamp``); ``thresholds`` (layer index → T) must cover every activation layer for the last
    two."""
    check_method(kind, ACTIVATIONS)
    if kind == "relu":
        return with_thresholds(image, "clipact", {})
    missing = [i for i in activation_layers(image) if thresholds is None or i not in thresholds]
    if missing:
        raise AccelSimError(f"activation {kind} needs a threshold for every activation layer; missing: {missing}")
    return with_thresholds(image, kind, dict(thresholds))  # refuses thresholds of other layers


def harden(image: Image, method: str, thresholds: dict[int, float], sources: dict[int, str],
           settings: dict | None = None) -> Image:
    """``image`` with ``method`` and ``thresholds`` on every activation layer, recording in the
    image where each threshold came from (``sources``: layer → e.g. ``act_max``, ``tuned``,
    ``file``) and the ``settings`` that chose them (see :func:`hardening_of`)."""
    hardened = with_activation(image, method, thresholds)
    record = {
        "method": method,
        "base_image_hash": with_activation(image, "relu").content_hash(),
        "layers": {str(i): {"threshold": float(thresholds[i]), "source": sources.get(i, "given")}
                   for i in activation_layers(image)},
        "settings": settings or {},
    }
    return dataclasses.replace(hardened, hardening=json.dumps(record, sort_keys=True))


def hardening_of(image: Image) -> dict:
    """The provenance :func:`harden` recorded in ``image`` (``{}`` for an image not hardened by
    it): ``method``, ``base_image_hash`` (the ReLU image), ``layers`` (index as text →
    ``threshold``, ``source``) and ``settings``."""
    if not image.hardening:
        return {}
    try:
        record = json.loads(image.hardening)
    except json.JSONDecodeError as exc:
        raise AccelSimError(f"image {image.model}: its hardening record is not JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("layers"), dict):
        raise AccelSimError(f"image {image.model}: its hardening record lacks a layers table")
    return record
