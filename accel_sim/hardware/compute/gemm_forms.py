"""Layouts shared by the compute paths: window sums by convolution, im2col columns, GEMM outputs
back to feature maps, and the cheap bounds (largest word, max |x|) that decide when a float64 sum is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from accel_sim.image import Linear, WeightedLayer


def window_sums(layer: WeightedLayer, weight_2d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Σ_k W[o, k]·a[k]`` over every output's window, in the logical output shape (N, O, OH, OW)
    or (N, O), through torch's convolution or matrix product (no im2col matrix: several times
    faster than :func:`unfold` and a GEMM on these CPUs).

    ``weight_2d`` is (O, C·kh·kw) in unfold order (the convolution's own weight layout). For
    integer-valued float64 operands whose partial sums all stay below 2**53 (the callers bound
    ``max|x| · max_o Σ_k |W[o, k]|``) the sums are exact in any summation order.
    """
    if isinstance(layer, Linear):
        return torch.matmul(x.reshape(x.shape[0], -1), weight_2d.T)
    weight = weight_2d.reshape(weight_2d.shape[0], layer.in_shape[0], *layer.kernel)
    return F.conv2d(x, weight, stride=layer.stride, padding=layer.padding)


def unfold(layer: WeightedLayer, x: torch.Tensor) -> torch.Tensor:
    """The activations as (N, K, pixels) columns, K in unfold order (channel, kernel row, col)."""
    if isinstance(layer, Linear):
        return x.unsqueeze(2)
    return F.unfold(x, layer.kernel, padding=layer.padding, stride=layer.stride)


def from_rows(layer: WeightedLayer, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """GEMM output (N·pixels, O), pixel-major → logical (N, O, OH, OW) (channels-last) or (N, O)."""
    if isinstance(layer, Linear):
        return rows.reshape(batch, -1)
    _, oh, ow = layer.out_shape
    return rows.reshape(batch, oh, ow, -1).permute(0, 3, 1, 2)


def from_columns(layer: WeightedLayer, cols: torch.Tensor) -> torch.Tensor:
    """GEMM output (N, O, pixels) → logical (N, O, OH, OW) or (N, O)."""
    if isinstance(layer, Linear):
        return cols.reshape(cols.shape[0], -1)
    return cols.reshape(cols.shape[0], *layer.out_shape)


def largest_word(layer: WeightedLayer) -> float:
    """max |word| of the layer's input format: a bound of max |x| that costs no pass over x."""
    return float(max(-layer.in_format.raw_min, layer.in_format.raw_max))


def abs_max(x: torch.Tensor) -> float:
    """max |x| in one pass over memory (a channels-last map is reduced in its memory order,
    which is several times faster than the strided logical order)."""
    if not x.numel():
        return 0.0
    if x.dim() == 4 and x.permute(0, 2, 3, 1).is_contiguous():
        x = x.permute(0, 2, 3, 1)
    lo, hi = torch.aminmax(x)
    return max(-float(lo), float(hi))
