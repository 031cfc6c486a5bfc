"""ACT_max profiling: the largest activation of each ReLU layer on training images."""

from __future__ import annotations

import logging

import numpy as np
import torch

from accel_sim.hardware import HardwareConfig
from accel_sim.hardware.compute import prepare_layer, run_layer
from accel_sim.image import Image, WeightedLayer
from accel_sim.image.reference import quantize_input
from accel_sim.numerics import dequantize

logger = logging.getLogger(__name__)


def profile_act_max(image: Image, images: np.ndarray, hw: HardwareConfig, batch_size: int = 100) -> dict[int, float]:
    """ACT_max per layer: the largest output of each ReLU layer of ``image`` (real units) on the
    ``uint8`` profiling images, computed on the emulated datapath (fault-free)."""
    targets = [i for i, layer in enumerate(image.layers) if isinstance(layer, WeightedLayer) and layer.activation == "relu"]
    if not targets:
        raise ValueError(f"image {image.model} {image.format_name} has no ReLU layer to profile")
    prepared = [prepare_layer(layer) if isinstance(layer, WeightedLayer) else None for layer in image.layers]
    peaks = {i: -np.inf for i in targets}
    dtype = torch.float32 if image.input_format.is_float else torch.float64
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(quantize_input(image, images[start:start + batch_size])).to(dtype)
        for i, (layer, prep) in enumerate(zip(image.layers, prepared)):
            x = run_layer(layer, prep, x, hw, "fast")
            if i in peaks:
                peaks[i] = max(peaks[i], float(x.max()))
    act_max = {i: float(dequantize(image.layers[i].out_format, np.array([peak]))[0]) for i, peak in peaks.items()}
    logger.info("ACT_max of %s %s on %d images: %s", image.model, image.format_name, len(images),
                {i: round(v, 4) for i, v in act_max.items()})
    return act_max
