"""Immutable layer records of an accelerator image, and the image itself.

Shapes are per image, channel-major: a feature map is ``(C, H, W)``, a vector ``(F,)``. Weight and
bias arrays hold raw words (``int64`` for fixed point, ``float32`` for ``fp32``) and are read-only.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from accel_sim.data import CIFAR10_MEAN, CIFAR10_STD
from accel_sim.errors import AccelSimError
from accel_sim.numerics import ACTIVATIONS, Format, parse_format

SCHEMA_NAME = "accel-sim-image"
SCHEMA_VERSION = 2
_HASH_LAYOUT = 1  # what content_hash digests; unchanged by schema versions that store the same computation


def conv_output_hw(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of a convolution or pooling window (floor mode)."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def _check_window(name: str, kernel, stride, padding) -> None:
    """Kernel and stride of at least 1, padding of at least 0, two of each."""
    for what, values, low in (("kernel", kernel, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if len(tuple(values)) != 2 or min(values) < low:
            raise AccelSimError(f"layer {name}: {what} must be two integers >= {low}, got {tuple(values)}")


def _frozen_array(values: np.ndarray, dtype) -> np.ndarray:
    arr = np.array(values, dtype=dtype)  # a private copy: the caller cannot mutate the record
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class WeightedLayer:
    """A convolution or fully connected layer with its activation unit.

    Attributes
    ----------
    name : str
        The layer's name in the source model.
    in_shape, out_shape : tuple of int
        ``(C, H, W)`` for conv2d, ``(F,)`` for linear.
    weight : numpy.ndarray
        Raw words, ``(O, C, kh, kw)`` for conv2d, ``(O, F)`` for linear.
    bias : numpy.ndarray
        Raw words, ``(O,)``. A fixed-point bias has at most the accumulator's fractional bits
        (``weight_format.frac_bits + in_format.frac_bits``) and enters the accumulator shifted left
        by the difference (:attr:`bias_shift`).
    weight_format, bias_format, in_format : Format
        Formats of the stored weights, the bias, and the input activations.
    out_format : Format or None
        Format of the output activations; None for the last layer, whose accumulator values are
        the logits.
    activation : {"none", "relu", "clipact", "clamp"}
    threshold : float or None
        Real-valued threshold ``T`` of ``clipact`` / ``clamp``; None otherwise.
    """

    op: ClassVar[str] = ""
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: np.ndarray
    bias: np.ndarray
    weight_format: Format
    bias_format: Format
    in_format: Format
    out_format: Format | None
    activation: str = "none"
    threshold: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _frozen_array(self.weight, np.float32 if self.weight_format.is_float else np.int64))
        object.__setattr__(self, "bias", _frozen_array(self.bias, np.float32 if self.bias_format.is_float else np.int64))
        object.__setattr__(self, "in_shape", tuple(int(v) for v in self.in_shape))
        object.__setattr__(self, "out_shape", tuple(int(v) for v in self.out_shape))
        if self.weight.ndim not in (2, 4) or 0 in self.weight.shape:
            raise AccelSimError(f"layer {self.name}: weight must be a non-empty (O, F) or (O, C, kh, kw) array, got "
                                f"shape {self.weight.shape}")
        if self.activation not in ACTIVATIONS:
            raise AccelSimError(f"layer {self.name}: activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        needs_threshold = self.activation in ("clipact", "clamp")
        if needs_threshold and (self.threshold is None or not np.isfinite(self.threshold) or self.threshold < 0):
            raise AccelSimError(f"layer {self.name}: activation {self.activation} needs a finite threshold >= 0, got {self.threshold!r}")
        if not needs_threshold and self.threshold is not None:
            raise AccelSimError(f"layer {self.name}: activation {self.activation} takes no threshold")
        if self.weight_format.is_float != self.bias_format.is_float or \
                self.weight_format.is_float != self.in_format.is_float:
            raise AccelSimError(f"layer {self.name}: weight, bias and input formats must be all fp32 or all fixed "
                                f"point, got {self.weight_format.name}, {self.bias_format.name}, {self.in_format.name}")
        if not self.bias_format.is_float and not 0 <= self.bias_shift <= 64 - self.bias_format.word_bits:
            raise AccelSimError(
                f"layer {self.name}: the bias enters the accumulator shifted left to its scale, so its format needs "
                f"{max(0, self.acc_frac_bits - 64 + self.bias_format.word_bits)}..{self.acc_frac_bits} fractional "
                f"bits (at most the weight's plus the input's), got {self.bias_format.name}")
        if self.bias.shape != (self.out_channels,):
            raise AccelSimError(f"layer {self.name}: bias has shape {self.bias.shape}, expected ({self.out_channels},)")

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def acc_frac_bits(self) -> int:
        """Fractional bits of the accumulator (fixed point only)."""
        return self.weight_format.frac_bits + self.in_format.frac_bits

    @property
    def bias_shift(self) -> int:
        """Left shift (bits) that brings a bias word to the accumulator's scale (fixed point only)."""
        return self.acc_frac_bits - self.bias_format.frac_bits

    @property
    def bias_acc_bits(self) -> int:
        """Width of a bias word at the accumulator's scale (bits): what the accumulator must hold."""
        return self.bias_format.word_bits + self.bias_shift

    def accumulator_bias(self, words: np.ndarray | None = None) -> np.ndarray:
        """Bias words (default: the stored ones) at the accumulator's scale (``int64`` (O,); the
        words themselves for fp32)."""
        words = self.bias if words is None else np.asarray(words)
        if self.bias_format.is_float:
            return words
        return np.asarray(words, dtype=np.int64) << np.int64(self.bias_shift)

    @property
    def weight_bits(self) -> int:
        """Bits of stored weights and biases (the layer's share of the weight-memory fault site)."""
        return self.weight.size * self.weight_format.word_bits + self.bias.size * self.bias_format.word_bits

    def with_activation(self, activation: str, threshold: float | None) -> "WeightedLayer":
        """A copy with another activation unit setting."""
        return dataclasses.replace(self, activation=activation, threshold=threshold)


@dataclass(frozen=True)
class Conv2d(WeightedLayer):
    """2-D convolution (groups = 1). BatchNorm is already folded into weight and bias."""

    op: ClassVar[str] = "conv2d"
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_window(self.name, self.kernel if self.weight.ndim == 4 else (1, 1), self.stride, self.padding)
        if self.weight.ndim != 4:
            raise AccelSimError(f"layer {self.name}: conv2d weight must be (O, C, kh, kw), got shape {self.weight.shape}")
        c, h, w = self.in_shape
        if self.weight.shape[1] != c:
            raise AccelSimError(f"layer {self.name}: weight has {self.weight.shape[1]} input channels, input has {c}")
        oh, ow = conv_output_hw(h, w, self.kernel, self.stride, self.padding)
        if self.out_shape != (self.out_channels, oh, ow):
            raise AccelSimError(f"layer {self.name}: out_shape {self.out_shape} does not follow from the geometry "
                             f"(expected {(self.out_channels, oh, ow)})")

    @property
    def kernel(self) -> tuple[int, int]:
        return (int(self.weight.shape[2]), int(self.weight.shape[3]))


@dataclass(frozen=True)
class Linear(WeightedLayer):
    """Fully connected layer ``y = W x + b``."""

    op: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight.ndim != 2 or self.in_shape != (self.weight.shape[1],):
            raise AccelSimError(f"layer {self.name}: linear weight {self.weight.shape} does not fit input {self.in_shape}")
        if self.out_shape != (self.out_channels,):
            raise AccelSimError(f"layer {self.name}: out_shape {self.out_shape}, expected ({self.out_channels},)")


@dataclass(frozen=True)
class MaxPool2d:
    """Max-pooling over activation words (padding counts as the smallest word)."""

    op: ClassVar[str] = "maxpool2d"
    name: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    format: Format

    def __post_init__(self) -> None:
        _check_window(self.name, self.kernel, self.stride, self.padding)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise AccelSimError(f"layer {self.name}: max-pool padding {tuple(self.padding)} is more than half the "
                                f"kernel {tuple(self.kernel)}")
        c, h, w = self.in_shape
        oh, ow = conv_output_hw(h, w, self.kernel, self.stride, self.padding)
        if tuple(self.out_shape) != (c, oh, ow):
            raise AccelSimError(f"layer {self.name}: out_shape {self.out_shape} does not follow from the geometry "
                             f"(expected {(c, oh, ow)})")


@dataclass(frozen=True)
class Flatten:
    """``(C, H, W)`` → ``(C·H·W,)`` in channel-major order, as ``torch.flatten``."""

    op: ClassVar[str] = "flatten"
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int]
    format: Format

    def __post_init__(self) -> None:
        if tuple(self.out_shape) != (int(np.prod(self.in_shape)),):
            raise AccelSimError(f"layer {self.name}: flatten of {self.in_shape} cannot give {self.out_shape}")


Layer = Conv2d | Linear | MaxPool2d | Flatten


@dataclass(frozen=True)
class Image:
    """An accelerator image: the layers of a network in execution order with their stored tensors.

    Attributes
    ----------
    model : str
        Name of the source model (e.g. ``vgg16``).
    format_name : str
        The image's nominal number format, e.g. ``fixed16``, ``fixed16a8`` or ``fp32``.
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.
    input_format : Format
        Format the normalised input pixels are quantised to.
    class_names : tuple of str
    layers : tuple of Layer
    source_sha256 : str
        SHA-256 of the weights file the image was exported from ("" if unknown).
    tool_version : str
        accel-sim version that wrote the image.
    hardening : str
        Provenance of the activation thresholds (JSON written by :mod:`accel_sim.mitigation`:
        method, where each threshold came from, the settings that chose it); "" for an image as
        exported. Not part of :meth:`content_hash`: it describes the computation, it is not one.
    input_mean, input_std : tuple of float
        Per-channel normalisation of the ``uint8`` pixels before quantisation,
        ``(x / 255 - mean) / std`` (default: CIFAR-10's statistics).
    """

    model: str
    format_name: str
    input_shape: tuple[int, ...]
    input_format: Format
    class_names: tuple[str, ...]
    layers: tuple[Layer, ...]
    source_sha256: str = ""
    tool_version: str = ""
    hardening: str = ""
    input_mean: tuple[float, ...] = CIFAR10_MEAN
    input_std: tuple[float, ...] = CIFAR10_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        mean, std = check_normalization(self.input_mean, self.input_std, self.input_shape[0] if self.input_shape else 0)
        object.__setattr__(self, "input_mean", mean)
        object.__setattr__(self, "input_std", std)
        check_chain(self)

    @property
    def default_normalization(self) -> bool:
        """Whether the image normalises its input with CIFAR-10's statistics."""
        return (self.input_mean, self.input_std) == (tuple(CIFAR10_MEAN), tuple(CIFAR10_STD))

    @property
    def weighted_layers(self) -> tuple[WeightedLayer, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, WeightedLayer))

    @property
    def weight_bits(self) -> int:
        """Total bits of stored weights and biases: the size of the ``weight_memory`` fault site."""
        return sum(layer.weight_bits for layer in self.weighted_layers)

    def content_hash(self) -> str:
        """SHA-256 over everything that defines the computation (not the file's bytes); computed
        once per image (the record is immutable)."""
        return self._content_hash

    @functools.cached_property
    def _content_hash(self) -> str:
        digest = hashlib.sha256()
        head = (_HASH_LAYOUT, self.model, self.format_name, self.input_shape, self.input_format.name, self.class_names)
        if not self.default_normalization:  # images with CIFAR-10's (all of schema 1) keep their hash
            head += (self.input_mean, self.input_std)
        digest.update(repr(head).encode())
        for layer in self.layers:
            fields = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)}
            arrays = {k: v for k, v in fields.items() if isinstance(v, np.ndarray)}
            rest = {k: (v.name if hasattr(v, "name") and not isinstance(v, str) else v)
                    for k, v in fields.items() if k not in arrays}
            digest.update(repr((layer.op, sorted(rest.items()))).encode())
            for key in sorted(arrays):
                digest.update(np.ascontiguousarray(arrays[key]).tobytes())
        return digest.hexdigest()


def check_normalization(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel input normalisation, checked: ``channels`` finite means and as many finite
    standard deviations > 0; returned as tuples of float."""
    out = []
    for name, values, low in (("input_mean", mean, -np.inf), ("input_std", std, 0.0)):
        ok = isinstance(values, (tuple, list, np.ndarray)) and len(values) == channels and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and np.isfinite(v) and v > low for v in values)
        if not ok:
            rule = "finite numbers" if name == "input_mean" else "finite numbers > 0"
            raise AccelSimError(f"{name} must be {channels} {rule} (one per input channel), got {values!r}")
        out.append(tuple(float(v) for v in values))
    return out[0], out[1]


def check_chain(image: Image) -> None:
    """Check that the layers form a chain of matching shapes and formats ending in logits."""
    if not image.layers:
        raise AccelSimError("an image needs at least one layer")
    shape, fmt = image.input_shape, image.input_format
    for i, layer in enumerate(image.layers):
        if tuple(layer.in_shape) != tuple(shape):
            raise AccelSimError(f"layer {i} ({layer.name}, {layer.op}) expects input {tuple(layer.in_shape)}, "
                             f"the previous layer gives {tuple(shape)}")
        in_fmt = layer.in_format if isinstance(layer, WeightedLayer) else layer.format
        if in_fmt != fmt:
            raise AccelSimError(f"layer {i} ({layer.name}, {layer.op}) reads {in_fmt.name}, "
                             f"the previous layer writes {fmt.name}")
        last = i == len(image.layers) - 1
        if isinstance(layer, WeightedLayer):
            if last != (layer.out_format is None):
                raise AccelSimError(f"layer {i} ({layer.name}): only the last layer, and it always, "
                                 "leaves its output in the accumulator (out_format None)")
            if last and layer.activation != "none":
                raise AccelSimError(f"layer {i} ({layer.name}): the last layer's accumulator values are the "
                                 f"logits; it cannot have activation {layer.activation}")
            fmt = layer.out_format
        elif last:
            raise AccelSimError(f"the last layer must be conv2d or linear, got {layer.op} ({layer.name})")
        shape = layer.out_shape
    if len(image.class_names) != shape[0] or len(shape) != 1:
        raise AccelSimError(f"the network's output {tuple(shape)} does not match {len(image.class_names)} class names")


def format_from_text(text: str, where: str) -> Format:
    """Parse a format naming where it came from in the error."""
    try:
        return parse_format(text)
    except (ValueError, TypeError) as exc:
        raise AccelSimError(f"{where}: {exc}") from None
