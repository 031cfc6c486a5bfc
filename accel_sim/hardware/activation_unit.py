"""The activation unit behind the array: the bias (the accumulator's last addition), the
activation (none, relu, clipact, clamp) in the accumulator domain, and the rescaling to the next
layer's word with rounding and saturation, on whole feature maps.

Accumulators travel as float64 tensors of exact integers up to :data:`FLOAT64_ACC_BITS` bits, as
``int64`` tensors past that (their operations are :mod:`accel_sim.numerics`' own, the golden
reference's), and as float32 for fp32 images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from accel_sim.errors import AccelSimError
from accel_sim.hardware.config import HardwareConfig
from accel_sim.image import WeightedLayer
from accel_sim.numerics import apply_activation, requantize, threshold_to_acc

if TYPE_CHECKING:
    from accel_sim.hardware.compute import PreparedLayer

FLOAT64_ACC_BITS = 53  # accumulators up to this width travel as float64 (exact integers)


def threshold_in_accumulator(layer: WeightedLayer) -> int | float | None:
    """The layer's activation threshold as the activation unit compares it: the real value for
    float32, the accumulator integer (:func:`accel_sim.numerics.threshold_to_acc`) for fixed
    point; None without a threshold."""
    if layer.threshold is None:
        return None
    if layer.weight_format.is_float:
        return float(layer.threshold)
    return threshold_to_acc(layer.threshold, layer.acc_frac_bits)


def int64_accumulators(layer: WeightedLayer, hw: HardwareConfig) -> bool:
    """Whether the layer's accumulators travel as ``int64`` (wider than float64's exact integers)."""
    return not layer.weight_format.is_float and hw.datapath.acc_bits > FLOAT64_ACC_BITS


def wrap_float(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Exact integers (float64, |v| < 2**53) reduced to a ``bits``-bit two's complement range.
    At 53 bits too: a 53-bit accumulator plus its bias can reach past 2**52."""
    if bits > FLOAT64_ACC_BITS:
        return values  # |v| < 2**53 already lies in the range
    as_int = values.to(torch.int64)
    half = 1 << (bits - 1)
    return (torch.remainder(as_int + half, 1 << bits) - half).to(values.dtype)


def _channels_view(values: torch.Tensor, dims: int) -> torch.Tensor:
    """Per-channel values (C,) shaped to broadcast against a (N, C, ...) map of ``dims`` dimensions."""
    return values.view(1, -1, *([1] * (dims - 2)))


def add_bias(prepared: PreparedLayer, acc: torch.Tensor, hw: HardwareConfig,
             filters: np.ndarray | None = None) -> torch.Tensor:
    """The accumulator's last addition, the bias, with the accumulator's overflow mode (fixed
    point): the value the activation unit sees. Shapes as ``acc`` (channels in dimension 1; only
    the channels ``filters`` when given)."""
    bias = prepared.bias if filters is None else prepared.bias[torch.from_numpy(np.asarray(filters))]
    bias = _channels_view(bias, acc.dim())
    if prepared.layer.weight_format.is_float:
        return acc + bias
    dp = hw.datapath
    if acc.dtype == torch.int64:
        return torch.from_numpy(dp.add(acc.numpy(), bias.numpy()))
    acc = acc + bias.to(torch.float64)  # exact: both are integers inside the accumulator's ±2**52
    if dp.overflow == "saturate":
        return torch.clamp(acc, float(dp.acc_min), float(dp.acc_max))
    return wrap_float(acc, dp.acc_bits)


def activate(layer: WeightedLayer, acc: torch.Tensor, hw: HardwareConfig,
             threshold_acc: int | float | None, overwrite: bool = False) -> torch.Tensor:
    """The activation unit after the bias: ``layer.activation`` with ``threshold_acc`` (see
    :func:`threshold_in_accumulator`) in the accumulator domain, then rescaling with rounding and
    saturation to the output word (fixed point; a last layer's accumulators pass unchanged).
    ``overwrite``: fp32 ``acc`` may be overwritten with the result (a tensor nothing else reads)."""
    if layer.weight_format.is_float:
        return _activation(acc, layer.activation, threshold_acc, overwrite)
    if layer.out_format is None:
        return acc
    if acc.dtype == torch.int64:  # wider than float64's integers: numpy's integer operations
        acc = apply_activation(acc.numpy(), layer.activation, threshold_acc)
        words = requantize(acc, layer.acc_frac_bits, layer.out_format, hw.datapath.rounding)
        return torch.from_numpy(words.astype(np.float64))
    acc = _activation(acc, layer.activation, threshold_acc)
    return _requantize(acc, layer.acc_frac_bits - layer.out_format.frac_bits, hw.datapath.rounding,
                       layer.out_format.raw_min, layer.out_format.raw_max)


def _activation(x: torch.Tensor, kind: str, threshold: float | None, overwrite: bool = False) -> torch.Tensor:
    """The activation unit (in place with ``overwrite``); in float32, relu and clamp pass NaN on
    (as torch does)."""
    if kind == "none":
        return x
    if kind == "relu":
        return x.clamp_min_(0) if overwrite else torch.clamp_min(x, 0)
    if kind == "clipact":  # NaN fails both comparisons and becomes 0
        outside = ~((x >= 0) & (x <= threshold))
        return x.masked_fill_(outside, 0) if overwrite else x.masked_fill(outside, 0)
    if kind == "clamp":
        return x.clamp_(0, threshold) if overwrite else torch.clamp(x, 0, threshold)
    raise AccelSimError(f"layer activation {kind!r} is not one of none, relu, clipact, clamp")


def _requantize(acc: torch.Tensor, shift: int, rounding: str, lo: int, hi: int) -> torch.Tensor:
    """Exact ``acc / 2**shift`` rounded, then saturated; ``acc`` holds exact integers (float64)."""
    if shift <= 0:
        return torch.clamp(acc * 2.0 ** (-shift), float(lo), float(hi))
    scaled = acc * 2.0 ** (-shift)  # exact: a power-of-two scale of an integer below 2**53
    if rounding == "floor":
        rounded = torch.floor(scaled)
    elif rounding == "nearest_even":
        rounded = torch.round(scaled)  # ties to even
    else:
        down = torch.floor(scaled)
        rounded = down + ((scaled - down) >= 0.5).to(scaled.dtype)
    return torch.clamp(rounded, float(lo), float(hi))
