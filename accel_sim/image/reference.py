"""The golden reference: a slow, plain implementation of the numeric contract.

Every faster path of the emulator is tested against this module, so it is written to be read:
convolutions are lowered to explicit (output pixel × window) matrices and multiplied in exact
``int64`` arithmetic; the accumulator's overflow mode, the activation unit and the rescaling
follow the numeric contract of ``docs/image-format.md`` step by step.

Canonical accumulation order (it matters only for a saturating accumulator that actually
saturates): the products of one output are added in im2col column order — kernel row, kernel
column, input channel — starting from 0, each addition saturating; the bias is added last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from accel_sim.data import normalize
from accel_sim.errors import AccelSimError, AccelSimTypeError
from accel_sim.image.records import Conv2d, Flatten, Image, Layer, Linear, MaxPool2d, WeightedLayer
from accel_sim.numerics import (
    MARGIN,
    Datapath,
    apply_activation,
    apply_activation_float,
    quantize,
    requantize,
    threshold_to_acc,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutput:
    """What a run of an image returns.

    Attributes
    ----------
    raw_logits : numpy.ndarray
        The last layer's accumulator values, ``int64`` (fixed point) or ``float32``, ``(N, classes)``.
    logits : numpy.ndarray
        The same as real values, ``float64``.
    predictions : numpy.ndarray
        ``int64`` argmax per image (ties to the lowest index); -1 where a logit is NaN or infinite.
    flagged : numpy.ndarray
        ``bool`` per image: the hardware flagged its result as faulty (a DMR comparator's
        mismatch); all false when not given.
    recomputed : numpy.ndarray
        ``bool`` per image: the image ran a second time after a flag (DMR ``recompute``); all
        false when not given.
    """

    raw_logits: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray
    flagged: np.ndarray | None = None
    recomputed: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("flagged", "recomputed"):
            value = getattr(self, name)
            value = np.zeros(len(self.predictions), dtype=np.bool_) if value is None else np.asarray(value, np.bool_)
            if value.shape != self.predictions.shape:
                raise AccelSimError(f"run output field {name} has shape {value.shape}, "
                                    f"not one per image {self.predictions.shape}")
            object.__setattr__(self, name, value)

    def silent_errors(self, labels: np.ndarray) -> int:
        """Images predicted wrong (against ``labels``, int (N,)) that the hardware did not flag."""
        return int(np.sum((self.predictions != labels) & ~self.flagged))

    @property
    def nan_count(self) -> int:
        """Images whose logits hold a NaN or an infinity."""
        return int(np.sum(self.predictions < 0))


def quantize_input(image: Image, images: np.ndarray) -> np.ndarray:
    """``uint8`` images ``(N, C, H, W)`` → raw input words in the image's input format."""
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != image.input_shape:
        raise AccelSimError(f"input images must be uint8 of shape (N, {', '.join(map(str, image.input_shape))}), "
                         f"got {images.dtype} {images.shape}")
    return quantize(image.input_format, normalize(images, image.input_mean, image.input_std))


def make_output(image: Image, raw_logits: np.ndarray, flagged: np.ndarray | None = None,
                recomputed: np.ndarray | None = None) -> RunOutput:
    """Wrap the last layer's accumulators (and the hardware's flags) as a :class:`RunOutput`."""
    last = image.layers[-1]
    if image.input_format.is_float:
        logits = raw_logits.astype(np.float64)
    else:
        logits = np.ldexp(raw_logits.astype(np.float64), -last.acc_frac_bits)
    predictions = np.argmax(raw_logits, axis=1).astype(np.int64)
    predictions[~np.isfinite(logits).all(axis=1)] = -1
    return RunOutput(raw_logits, logits, predictions, flagged, recomputed)


def run_reference(image: Image, images: np.ndarray, datapath: Datapath, batch_size: int = 64) -> RunOutput:
    """Run ``image`` on ``uint8`` images ``(N, C, H, W)`` with the golden reference."""
    outputs = []
    for start in range(0, len(images), batch_size):
        x = quantize_input(image, images[start:start + batch_size])
        for layer in image.layers:
            x = reference_layer(layer, x, datapath)
        outputs.append(x)
    return make_output(image, np.concatenate(outputs))


def reference_layer(layer: Layer, x: np.ndarray, datapath: Datapath) -> np.ndarray:
    """One layer on a batch of raw words ``(N, *layer.in_shape)``.

    Returns raw words of the layer's output format, or the accumulator values for the last layer.
    """
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1)
    if isinstance(layer, MaxPool2d):
        return max_pool(layer, x)
    if isinstance(layer, (Conv2d, Linear)):
        return weighted_layer(layer, x, datapath)
    raise AccelSimTypeError(f"unknown layer type {type(layer).__name__}")


def lower_to_gemm(layer: WeightedLayer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The layer as a matrix product ``A @ B``: A = (output pixels × window), B = (window × filters).

    For conv2d, A's rows run over (image, output row, output column) and its columns over
    (kernel row, kernel column, input channel) — im2col; B's columns are the filters.
    """
    if isinstance(layer, Linear):
        return x, layer.weight.T
    kh, kw = layer.kernel
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw]  # (N, C, OH, OW, kh, kw)
    _, oh, ow = layer.out_shape
    windows = windows[:, :, :oh, :ow]
    a = windows.transpose(0, 2, 3, 4, 5, 1).reshape(len(x) * oh * ow, kh * kw * x.shape[1])
    b = layer.weight.transpose(0, 2, 3, 1).reshape(layer.out_channels, -1).T
    return a, b


def from_gemm(layer: WeightedLayer, y: np.ndarray, batch: int) -> np.ndarray:
    """GEMM output ``(N·OH·OW, O)`` → ``(N, O, OH, OW)`` (conv2d) or ``(N, O)`` (linear)."""
    if isinstance(layer, Linear):
        return y
    _, oh, ow = layer.out_shape
    return y.reshape(batch, oh, ow, layer.out_channels).transpose(0, 3, 1, 2)


def weighted_layer(layer: WeightedLayer, x: np.ndarray, datapath: Datapath) -> np.ndarray:
    a, b = lower_to_gemm(layer, x)
    if layer.weight_format.is_float:
        acc = (a.astype(np.float32) @ b.astype(np.float32)) + layer.bias
        out = apply_activation_float(acc, layer.activation, layer.threshold)
        return from_gemm(layer, out.astype(np.float32), len(x))
    datapath.check_operands(layer.weight_format.word_bits, layer.in_format.word_bits, layer.bias_acc_bits,
                            f"layer {layer.name}")
    acc = accumulate(a.astype(np.int64), b.astype(np.int64), datapath)
    acc = datapath.add(acc, layer.accumulator_bias())  # the bias is the accumulator's last addition
    if layer.out_format is None:
        return from_gemm(layer, acc, len(x))  # logits stay in the accumulator
    t_acc = None if layer.threshold is None else threshold_to_acc(layer.threshold, layer.acc_frac_bits)
    acc = apply_activation(acc, layer.activation, t_acc)
    out = requantize(acc, layer.acc_frac_bits, layer.out_format, datapath.rounding)
    return from_gemm(layer, out, len(x))


def accumulate(a: np.ndarray, b: np.ndarray, datapath: Datapath) -> np.ndarray:
    """Exact ``a @ b`` in the accumulator: ``wrap`` reduces modulo 2**acc_bits, ``saturate``
    clips after every addition in the canonical order."""
    exact = a @ b  # int64 arithmetic wraps modulo 2**64, which is exact for wrap mode
    if datapath.overflow == "wrap":
        return datapath.overflow_acc(exact)
    # No partial sum can leave the range if the sum of |products| stays inside it; only the
    # other outputs need the addition-by-addition walk.
    bound = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    risky = np.nonzero(bound >= datapath.acc_max * MARGIN)
    if risky[0].size:
        exact = exact.copy()
        exact[risky] = _saturating_sums(a[risky[0]], b[:, risky[1]].T, datapath)
    return exact


def _saturating_sums(rows: np.ndarray, cols: np.ndarray, datapath: Datapath) -> np.ndarray:
    """Sums of ``rows[i] * cols[i]`` added one product at a time, saturating after each."""
    wide = datapath.acc_bits > 62  # then int64 could overflow before the clip: use Python ints
    acc = np.zeros(len(rows), dtype=object if wide else np.int64)
    for k in range(rows.shape[1]):
        products = rows[:, k].astype(object) * cols[:, k].astype(object) if wide else rows[:, k] * cols[:, k]
        acc = np.clip(acc + products, datapath.acc_min, datapath.acc_max)
    return acc.astype(np.int64)


def max_pool(layer: MaxPool2d, x: np.ndarray) -> np.ndarray:
    """Max over each window; padding holds the smallest value of the format."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    fill = -np.inf if layer.format.is_float else layer.format.raw_min
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    _, oh, ow = layer.out_shape
    return windows[:, :, :oh, :ow].max(axis=(4, 5))

