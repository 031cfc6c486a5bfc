"""The accelerator's on-chip memories: the weight and activation buffers, their capacity, and
where each word of a layer lives in them.

Both buffers hold words of the widest width the image streams through them. A layer's weights
enter the weight buffer in its dataflow's order
(:meth:`accel_sim.hardware.dataflows.Dataflow.weight_stream`), its input feature map enters the
activation buffer in (row, column, channel) order; word ``j`` of a stream is stored at address
``j mod capacity``, so one buffer cell holds the words ``address, address + capacity, …`` of
every stream that passes it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.ecc import SecDed
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.image import Conv2d, Image, WeightedLayer

BUFFERS = ("weight_buffer", "activation_buffer")


@dataclass(frozen=True)
class Buffer:
    """One on-chip buffer for one image: ``capacity`` cells of ``word_bits`` bits (a data word,
    or its SEC-DED code word under ``memory_ecc``), each holding one word at a time."""

    name: str
    capacity: int
    word_bits: int
    code: SecDed | None = None


def weight_word_bits(image: Image) -> int:
    """Widest stored weight word of the image (the weight buffer's word), bits."""
    return max(layer.weight_format.word_bits for layer in image.weighted_layers)


def act_word_bits(image: Image) -> int:
    """Widest activation word the array reads (the activation buffer's word), bits."""
    return max(layer.in_format.word_bits for layer in image.weighted_layers)


def buffer(image: Image, hw: HardwareConfig, name: str) -> Buffer:
    """The ``weight_buffer`` or ``activation_buffer`` of ``hw`` holding ``image``'s words (the
    widest the image streams through it); under ``memory_ecc`` a cell holds a code word, so the
    same KiB hold fewer cells."""
    if name not in BUFFERS:
        raise AccelSimError(f"buffer must be one of {', '.join(BUFFERS)}, got {name!r}")
    bits = weight_word_bits(image) if name == "weight_buffer" else act_word_bits(image)
    kib = hw.weight_buffer_kib if name == "weight_buffer" else hw.activation_buffer_kib
    stored = stored_bits(bits, hw)
    return Buffer(name, hw.buffer_words(kib, stored), stored, stored_code(bits, hw))


def stored_code(word_bits: int, hw: HardwareConfig) -> SecDed | None:
    """The code protecting ``word_bits``-bit words in ``hw``'s memories (weight memory and
    buffers alike; None: stored as is)."""
    return SecDed(word_bits) if hw.memory_ecc == "secded" else None


def stored_bits(word_bits: int, hw: HardwareConfig) -> int:
    """Bits a ``word_bits``-bit word takes in ``hw``'s memories (its code word under ECC)."""
    code = stored_code(word_bits, hw)
    return code.code_bits if code is not None else word_bits


def activation_stream(in_shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices into a ``(C, H, W)`` (or ``(F,)``) input feature map, in buffer order:
    word ``j`` of the result is stored at activation-buffer address ``j mod capacity``."""
    if len(in_shape) == 1:
        return np.arange(in_shape[0])
    c, h, w = in_shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


def weight_stream(layer: WeightedLayer, hw: HardwareConfig) -> np.ndarray:
    """Flat indices into ``layer.weight`` in the order the weights stream through the weight
    buffer under ``hw``'s dataflow and array size."""
    return _weight_stream(gemm_shape(layer), _conv_geometry(layer), hw.dataflow, hw.rows, hw.cols)


@functools.lru_cache(maxsize=64)
def _weight_stream(shape, conv_geometry, dataflow: str, rows: int, cols: int) -> np.ndarray:
    k, n = get_dataflow(dataflow).weight_stream(shape, rows, cols)
    return _flat_index(k, n, conv_geometry, shape.k)


def flat_weight_index(layer: WeightedLayer, k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Flat index into ``layer.weight`` of GEMM element B[k, n] (k in im2col order)."""
    return _flat_index(k, n, _conv_geometry(layer), gemm_shape(layer).k)


def _conv_geometry(layer: WeightedLayer) -> tuple[int, int, int] | None:
    return (layer.in_shape[0], *layer.kernel) if isinstance(layer, Conv2d) else None


def _flat_index(k: np.ndarray, n: np.ndarray, conv_geometry: tuple[int, int, int] | None, depth: int) -> np.ndarray:
    if conv_geometry is None:
        return n * depth + k
    c, kh, kw = conv_geometry
    pos, ch = np.divmod(k, c)  # k = (kernel row · kw + kernel col) · C + channel
    i, j = np.divmod(pos, kw)
    return ((n * c + ch) * kh + i) * kw + j


def words_at(order: np.ndarray, capacity: int, addresses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The words a stream ``order`` (stream position → flat word index) stores in buffer cells
    ``addresses`` (int64 (A,)): positions ``address + j · capacity``. Returns (word index, the
    entry of ``addresses`` holding it), one entry per (address, word)."""
    addresses = np.asarray(addresses, dtype=np.int64)
    reps = np.maximum(0, -(-(order.size - addresses) // capacity))  # stream positions per address
    owner = np.repeat(np.arange(addresses.size), reps)
    step = np.arange(owner.size) - np.repeat(np.cumsum(reps) - reps, reps)
    return order[addresses[owner] + step * capacity], owner
