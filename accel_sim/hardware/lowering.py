"""Lowering conv2d and linear layers to GEMMs, the unit every dataflow maps onto the array.

A layer on one image is ``A @ B``: ``A`` is (output pixels × window), one row per output pixel and
columns in (kernel row, kernel column, input channel) order (im2col); ``B`` is (window ×
filters). A linear layer has one output pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

from accel_sim.errors import AccelSimTypeError
from accel_sim.image import Conv2d, Linear, WeightedLayer


@dataclass(frozen=True)
class GemmShape:
    """Sizes of a layer's GEMM for one image.

    Attributes
    ----------
    m : int
        Output pixels (rows of A).
    k : int
        Window size: kernel height × kernel width × input channels (columns of A, rows of B).
    n : int
        Filters (columns of B).
    """

    m: int
    k: int
    n: int

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image."""
        return self.m * self.k * self.n


def gemm_shape(layer: WeightedLayer) -> GemmShape:
    """The GEMM of ``layer`` for one image."""
    if isinstance(layer, Linear):
        return GemmShape(1, layer.in_shape[0], layer.out_channels)
    if isinstance(layer, Conv2d):
        kh, kw = layer.kernel
        return GemmShape(layer.out_shape[1] * layer.out_shape[2], kh * kw * layer.in_shape[0], layer.out_channels)
    raise AccelSimTypeError(f"layer {layer.name} ({layer.op}) is not lowered to a GEMM")
