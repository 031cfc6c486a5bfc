"""Replacing the activation units of an image (ReLU → FT-ClipAct clipping or Ranger-style clamping).

FT-ClipAct replaces every unbounded activation (ReLU) by ``x if 0 <= x <= T else 0`` with
``T = ACT_max``, the largest activation the layer produces on training data. Ranger-style
clamping, ``min(max(x, 0), T)``, is offered for comparison. Thresholds are real values stored in
the image's layer records; the activation unit compares exactly in the accumulator domain.
"""

from __future__ import annotations

import dataclasses

from accel_sim.image.records import Image, WeightedLayer

MITIGATIONS = ("relu", "clipact", "clamp")


def with_activation(image: Image, kind: str, thresholds: dict[int, float] | None = None) -> Image:
    """A copy of ``image`` whose ReLU layers use ``kind`` (``relu``, ``clipact`` or ``clamp``).

    ``thresholds`` maps layer index → T (needed for clipact and clamp, one per ReLU layer).
    """
    if kind not in MITIGATIONS:
        raise ValueError(f"activation must be one of {', '.join(MITIGATIONS)}, got {kind!r}")
    layers = list(image.layers)
    for i, layer in enumerate(layers):
        if not isinstance(layer, WeightedLayer) or layer.activation == "none":
            continue
        if kind == "relu":
            layers[i] = layer.with_activation("relu", None)
            continue
        if thresholds is None or i not in thresholds:
            raise ValueError(f"activation {kind} needs a threshold for layer {i} ({layer.name})")
        layers[i] = layer.with_activation(kind, float(thresholds[i]))
    return dataclasses.replace(image, layers=tuple(layers))
