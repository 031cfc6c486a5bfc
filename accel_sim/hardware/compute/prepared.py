"""A weighted layer's tensors in the forms the compute paths need, built once per run; faulty
weight words arrive as a :class:`WeightPatch` over the stored words.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from accel_sim.hardware import int8_gemm, lane_kernels
from accel_sim.hardware.activation_unit import threshold_in_accumulator
from accel_sim.image import Conv2d, Linear, WeightedLayer


@dataclass(frozen=True)
class WeightPatch:
    """Replacement words for a few weights of a layer (faults): flat indices (sorted, unique)
    into the layer's weight array and their new raw words."""

    index: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class PreparedLayer:
    """A weighted layer's tensors in the forms the compute paths need (built once per run).

    The weights are the layer's stored words with an optional :class:`WeightPatch`; the full
    faulty array and the GEMM forms derived from it are built on first use only, so a patched
    layer that only the int8 path reads costs no copy of its weights.
    """

    layer: WeightedLayer
    bias: torch.Tensor  # at the accumulator's scale: int64 (fixed point) or float32
    abs_col_sums: np.ndarray  # float64 (N,): Σ_k |B[k, n]| per filter
    threshold_acc: int | float | None
    weight_digits: int8_gemm.WeightDigits | None = None  # B (K × N), im2col order, words ≤ 16 bits
    patch: WeightPatch | None = None
    # the same layer prepared from its stored words, when this one was prepared from it: its
    # cached GEMM forms serve every fault map (only the patched words are redone on their own)
    clean: PreparedLayer | None = None

    @property
    def stored(self) -> PreparedLayer:
        """The layer prepared from its stored (fault-free) weight words: ``clean``, or itself."""
        return self.clean if self.clean is not None else self

    @property
    def abs_col_sum_max(self) -> float:
        return float(self.abs_col_sums.max()) if self.abs_col_sums.size else 0.0

    @functools.cached_property
    def weight(self) -> np.ndarray:
        """Raw words in the layer's weight shape, patched."""
        return _patched(self.layer, self.patch)

    @property
    def weight_tensor(self) -> torch.Tensor:
        """The patched words in the layer's weight shape as a tensor of their own (float32 for
        fp32 images, float64 otherwise)."""
        return self._unpatched_form("_weight_tensor")

    @functools.cached_property
    def _weight_tensor(self) -> torch.Tensor:
        dtype = torch.float32 if self.layer.weight_format.is_float else torch.float64
        return torch.from_numpy(np.array(self.weight)).to(dtype)

    @property
    def weight_2d(self) -> torch.Tensor:
        """(N, C·kh·kw) in unfold order (channel, kernel row, kernel col); float64 or float32."""
        return self._unpatched_form("_weight_2d")

    @functools.cached_property
    def _weight_2d(self) -> torch.Tensor:
        dtype = torch.float32 if self.layer.weight_format.is_float else torch.float64
        return torch.from_numpy(np.array(self.weight.reshape(self.weight.shape[0], -1))).to(dtype)

    def _unpatched_form(self, name: str):
        """A cached weight form, taken from ``clean`` when this layer's weights are its stored
        words (only the bias is faulty), so that no fault map copies them again."""
        return getattr(self.stored if self.patch is None else self, name)

    @functools.cached_property
    def weight_t_hwc(self) -> np.ndarray:
        """(N, K) in im2col order (kernel row, kernel col, channel); int64 or float32."""
        w = self.weight.transpose(0, 2, 3, 1) if self.weight.ndim == 4 else self.weight
        dtype = np.float32 if self.layer.weight_format.is_float else np.int64
        return np.ascontiguousarray(w.reshape(w.shape[0], -1)).astype(dtype)

    @functools.cached_property
    def _column_forms(self) -> dict[tuple, np.ndarray]:
        return {}

    def column_words(self, col: int, cols: int) -> np.ndarray:
        """int32 (K, J): the integer words of the filters col, col + cols, … (J of them), K in
        im2col order (the int32 lanes' form), made once per (col, cols)."""
        key = ("words", col, cols)
        if key not in self._column_forms:
            self._column_forms[key] = np.ascontiguousarray(self.weight_t_hwc[col::cols].T, dtype=np.int32)
        return self._column_forms[key]

    def column_pairs(self, col: int, cols: int, offset: int) -> np.ndarray:
        """int32 (kernel positions, ⌈(C + offset)/2⌉, J) channel pairs of the integer words (at
        most 16 bits) of the filters col, col + cols, … (J of them; the WS partial-sum lanes'
        form, :func:`accel_sim.hardware.lane_kernels.column_pairs`; one position for a linear
        layer), made once per (col, cols, offset)."""
        key = ("pairs", col, cols, offset)
        if key not in self._column_forms:
            positions = self.layer.kernel[0] * self.layer.kernel[1] if isinstance(self.layer, Conv2d) else 1
            self._column_forms[key] = lane_kernels.column_pairs(self.weight_t_hwc[col::cols], positions, offset)
        return self._column_forms[key]


def _patched(layer: WeightedLayer, patch: WeightPatch | None) -> np.ndarray:
    """The layer's weight words with ``patch`` applied (a copy; the layer is not changed)."""
    if patch is None:
        return layer.weight
    flat = np.array(layer.weight).reshape(-1)
    flat[patch.index] = patch.values
    return flat.reshape(layer.weight.shape)


def _hwc_matrix(w: np.ndarray) -> np.ndarray:
    """Weights as B (K × N), K in im2col order."""
    w = w.transpose(0, 2, 3, 1) if w.ndim == 4 else w
    return w.reshape(w.shape[0], -1).T


def prepare_layer(layer: WeightedLayer, patch: WeightPatch | None = None, bias: np.ndarray | None = None,
                  base: PreparedLayer | None = None) -> PreparedLayer:
    """Precompute what the layer's GEMMs need; ``patch`` and ``bias`` replace stored words (faults;
    the image itself is never changed). With ``base`` (the same layer prepared from its clean
    words), only the patched words are redone."""
    bias = layer.accumulator_bias(bias)
    is_float = layer.weight_format.is_float
    if base is not None and patch is None:  # only the bias changes
        digits, abs_sums = base.weight_digits, base.abs_col_sums
    elif base is not None and not is_float:
        k, n = gemm_position(layer, patch.index)
        digits = None if base.weight_digits is None else int8_gemm.patch_weights(
            base.weight_digits, k, n, torch.from_numpy(np.asarray(patch.values)), layer.weight_format.signed_width)
        abs_sums = base.abs_col_sums.copy()
        old = np.abs(layer.weight.reshape(-1)[patch.index].astype(np.float64))
        np.add.at(abs_sums, n, np.abs(np.asarray(patch.values, np.float64)) - old)  # exact: integers
    else:
        w = _patched(layer, patch)
        digits = None
        if not is_float and layer.weight_format.signed_width <= int8_gemm.MAX_WORD_BITS:
            digits = int8_gemm.prepare_weights(torch.from_numpy(np.array(_hwc_matrix(w))),
                                               layer.weight_format.signed_width)
        abs_sums = np.abs(w.reshape(w.shape[0], -1).astype(np.float64)).sum(axis=1)
    return PreparedLayer(layer=layer, bias=torch.from_numpy(np.array(bias)), abs_col_sums=abs_sums,
                         threshold_acc=threshold_in_accumulator(layer), weight_digits=digits, patch=patch,
                         clean=base)


def gemm_position(layer: WeightedLayer, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k in im2col order, n) of flat indices into the layer's weight array."""
    if isinstance(layer, Linear):
        return np.divmod(flat, layer.in_shape[0])[::-1]
    c = layer.in_shape[0]
    kh, kw = layer.kernel
    n, rest = np.divmod(flat, c * kh * kw)
    ch, rest = np.divmod(rest, kh * kw)
    i, j = np.divmod(rest, kw)
    return (i * kw + j) * c + ch, n
