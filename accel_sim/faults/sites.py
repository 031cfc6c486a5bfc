"""The bits of each fault site for a given image on a given accelerator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.faults.model import SITES
from accel_sim.hardware import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.hardware.redundancy import register_codes, register_kind
from accel_sim.hardware.memory import BUFFERS, act_word_bits, buffer, stored_bits, weight_word_bits
from accel_sim.image import Image, WeightedLayer


@dataclass(frozen=True)
class Segment:
    """A run of equal words of a site: ``words`` words of ``word_bits`` bits.

    ``layer`` (image layer index, -1 for a buffer or a PE register shared by all layers),
    ``tensor`` (weight memory: 0 weight, 1 bias) and ``register`` (PEs) say what the words are.
    """

    layer: int
    tensor: int
    register: int
    words: int
    word_bits: int


def buffer_capacity(image: Image, hw: HardwareConfig, site: str) -> tuple[int, int]:
    """(capacity in words, word bits) of the weight or activation buffer for this image."""
    if site not in BUFFERS:
        raise AccelSimError(f"{site} is not a buffer site")
    held = buffer(image, hw, site)
    return held.capacity, held.word_bits


def register_bits(image: Image, hw: HardwareConfig) -> dict[int, int]:
    """Width in bits of each PE register for this image, by register code
    (:mod:`accel_sim.hardware.redundancy`): float32 words for fp32 images; otherwise the weight
    word, the product of weight and activation words, and the accumulator (a TMR voter's output:
    the accumulator), for each replica."""
    if image.input_format.is_float:
        return {code: 32 for code in register_codes(hw.pe_redundancy)}
    w, a = weight_word_bits(image), act_word_bits(image)
    widths = {"weight": w, "product": w + a, "psum": hw.acc_bits, "voter": hw.acc_bits}
    return {code: widths[register_kind(code)] for code in register_codes(hw.pe_redundancy)}


def segments(image: Image, hw: HardwareConfig, site: str, layers: tuple[int, ...] | None = None) -> list[Segment]:
    """The words of ``site``; ``layers`` (image layer indices) restricts the weight memory."""
    if site not in SITES:
        raise AccelSimError(f"fault site must be one of {', '.join(SITES)}, got {site!r}")
    if site == "weight_memory":
        out = []
        for i, layer in enumerate(image.layers):
            if isinstance(layer, WeightedLayer) and (layers is None or i in layers):
                out.append(Segment(i, 0, -1, layer.weight.size, stored_bits(layer.weight_format.word_bits, hw)))
                out.append(Segment(i, 1, -1, layer.bias.size, stored_bits(layer.bias_format.word_bits, hw)))
        return out
    if site == "pe":
        return [Segment(-1, -1, code, hw.rows * hw.cols, bits) for code, bits in register_bits(image, hw).items()]
    capacity, bits = buffer_capacity(image, hw, site)
    return [Segment(-1, -1, -1, capacity, bits)]


def site_bits(image: Image, hw: HardwareConfig, site: str) -> int:
    """Total bits of a site (for ``weight_memory``: what ``accel-sim inspect`` reports)."""
    return sum(s.words * s.word_bits for s in segments(image, hw, site))


def weighted_layer_indices(image: Image) -> np.ndarray:
    return np.array([i for i, layer in enumerate(image.layers) if isinstance(layer, WeightedLayer)])


def pe_mac_axes(layer: WeightedLayer, hw: HardwareConfig, row: int, col: int) -> tuple[np.ndarray, ...]:
    """Pixels, window elements and filters whose MACs PE (row, col) performs in ``layer`` (one
    image); every combination of the three is one MAC of that PE."""
    return get_dataflow(hw.dataflow).pe_macs(gemm_shape(layer), row, col, hw.rows, hw.cols)
