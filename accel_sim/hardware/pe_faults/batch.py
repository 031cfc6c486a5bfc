"""What every PE-fault strategy reads for one layer and one batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from accel_sim.hardware import int8_gemm, lane_kernels
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.pe_faults.table import FaultGroup


@dataclass(frozen=True, eq=False)
class LayerBatch:
    """A layer's input words and weights on one batch, in the forms the strategies read.

    Attributes
    ----------
    x_hwc : float64 (B, H, W, C)
        The input feature maps (words), channels last; (B, 1, 1, F) for a linear layer.
    weight_t_hwc : int64 (N, K)
        Weights, one row per filter, K in im2col order.
    column_words, column_pairs : callable
        ``column_words(col)``: int32 (K, J) words of the filters col, col + cols, …;
        ``column_pairs(col, offset)``: their channel pairs (:func:`lane_kernels.column_pairs`);
        both made once per run by the caller.
    geometry : (kh, kw, sh, sw, ph, pw, ow)
        Kernel, stride, padding and output width (1×1, stride 1, no padding, width 1 for a
        linear layer).
    pixels : int
        Output pixels per image.
    weight_bits, product_bits : int
        Widths of the weight and product registers (bits).
    input_digits : callable or None
        The int8 digits of the im2col matrix (the clean path's), where that path is exact.
    """

    x_hwc: np.ndarray
    weight_t_hwc: np.ndarray
    column_words: Callable[[int], np.ndarray]
    column_pairs: Callable[[int, int], np.ndarray]
    geometry: tuple[int, ...]
    pixels: int
    hw: HardwareConfig
    weight_bits: int
    product_bits: int
    input_digits: Callable[[], int8_gemm.Digits] | None
    _pairs: dict = field(default_factory=dict, repr=False)  # x_pairs per offset

    @property
    def in_bits(self) -> int:
        """The activations' word width (bits)."""
        return self.product_bits - self.weight_bits

    def column_weights(self, group: FaultGroup) -> np.ndarray:
        """(J, K) a view: the weights of the group's filters."""
        return self.weight_t_hwc[group.col::self.hw.cols]

    def x_pairs(self, offset: int) -> np.ndarray:
        """The input as int32 (H, ⌈(C + offset)/2⌉, W, B') channel pairs
        (:func:`lane_kernels.batch_last_pairs`), B' = B rounded up to a whole vector step of
        lanes; made once per batch and offset."""
        if offset not in self._pairs:
            step = lane_kernels.LANE_STEP
            b, h, w, c = self.x_hwc.shape
            out = np.empty((h, (c + offset + 1) // 2, w, -(-b // step) * step), dtype=np.int32)
            lane_kernels.batch_last_pairs(self.x_hwc, offset, out)
            self._pairs[offset] = out
        return self._pairs[offset]
