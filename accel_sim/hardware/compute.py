"""Executing one layer on the emulated array: the fast exact path and the faithful path.

Feature maps travel between layers as ``torch.float64`` tensors holding exact integers (raw
words) for fixed-point images, or ``torch.float32`` tensors for ``fp32`` images.

**Fast exact path.** Words of up to 16 bits take the fused int8 path: im2col straight into int8
digits, int8 GEMMs (:mod:`accel_sim.hardware.int8_gemm`), and one Numba pass that recombines
the digit products and applies the activation unit. It is exact whatever the size; with a
saturating accumulator it is used when no partial sum can reach the accumulator's range
(``max|a| · max_n Σ_k |B[k, n]|`` below it, from the input format or the batch): then no
addition saturates, so the order of additions cannot matter. Otherwise a float64 GEMM (im2col +
matmul through BLAS), exact when every partial sum is an integer below 2**53, with the same
layer-wide bound; outputs for which it fails get a per-output bound ``|A| @ |B|``, and those
that fail it too are computed by the faithful path. A wrapping accumulator needs only
exactness: wrap(exact sum) = the wrapped accumulation. Outputs touched by faulty PEs are
recomputed or corrected on their own (:mod:`accel_sim.hardware.pe_faults`).

**Accumulators wider than 53 bits** (integers float64 cannot all hold) travel as ``int64``
tensors: sums come from the int8 path, from float64 BLAS under the 2**53 bound, or else from
:mod:`accel_sim.hardware.wide_gemm` (exact modulo 2**64); bias, activation unit and rescaling
then use the integer operations of :mod:`accel_sim.numerics`.

**Faithful path.** :func:`accel_sim.hardware.kernels.gemm_faithful`, MAC by MAC in window order,
with the accumulator's overflow applied after every addition and PE faults applied where the
dataflow places each MAC.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from accel_sim.hardware import int8_gemm, int8_kernels, kernels, lane_kernels, wide_gemm
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.patched_sums import add_patch_products
from accel_sim.hardware.pe_faults import PeFaults, fast_strategies_apply, faulty_column_blocks, fits_float64
from accel_sim.image import Conv2d, Flatten, Layer, Linear, MaxPool2d, WeightedLayer
from accel_sim.hardware.activation_unit import (
    activate,
    add_bias,
    int64_accumulators,
    threshold_in_accumulator,
    wrap_float,
)
from accel_sim.numerics import threshold_to_acc

EXACT_LIMIT = 2.0**53
_MARGIN = 1 - 2.0**-40  # float64 bounds are computed with rounding; stay clear of the edge


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
        return self.clean if self.clean is not None and self.patch is not None else self

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
        source = self.clean if self.clean is not None and self.patch is None else self
        return getattr(source, name)

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
        k, n = _gemm_position(layer, patch.index)
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


def _gemm_position(layer: WeightedLayer, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k in im2col order, n) of flat indices into the layer's weight array."""
    if isinstance(layer, Linear):
        return np.divmod(flat, layer.in_shape[0])[::-1]
    c = layer.in_shape[0]
    kh, kw = layer.kernel
    n, rest = np.divmod(flat, c * kh * kw)
    ch, rest = np.divmod(rest, kh * kw)
    i, j = np.divmod(rest, kw)
    return (i * kw + j) * c + ch, n


def run_layer(layer: Layer, prepared: PreparedLayer | None, x: torch.Tensor, hw: HardwareConfig,
              engine: str, pe_faults: PeFaults | None = None) -> torch.Tensor:
    """One layer on a batch ``x`` (N, C, H, W) or (N, F); returns the next feature map or, for
    the last layer, the logits' accumulators. Fixed-point maps may be channels-last in memory."""
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)  # channel-major order, whatever the memory layout
    if isinstance(layer, MaxPool2d):
        return F.max_pool2d(x, layer.kernel, layer.stride, layer.padding)
    faulty = pe_faults is not None and pe_faults.count
    if engine == "fast" and _fuses(prepared, hw) and (not faulty or _pe_faults_on_fast_path(layer, hw)):
        fused = _fused_int8_layer(prepared, x, hw, pe_faults if faulty else None)
        if fused is not None:
            return fused
    # the biased accumulators are a fresh tensor: the fp32 activation may overwrite it
    return activate(layer, biased_accumulators(prepared, x, hw, engine, pe_faults), hw, prepared.threshold_acc,
                    overwrite=True)


def biased_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, engine: str,
                        pe_faults: PeFaults | None = None) -> torch.Tensor:
    """What the activation unit sees: the exact accumulators plus the bias, after the
    accumulator's overflow mode (fixed point), or the float32 sums with the bias added last (fp32:
    torch's convolution adds it, on the fast path without PE faults)."""
    layer = prepared.layer
    if layer.weight_format.is_float and engine == "fast" and not (pe_faults is not None and pe_faults.count):
        return _float_accumulators(prepared, x, prepared.bias)
    return add_bias(prepared, weighted_accumulators(prepared, x, hw, engine, pe_faults), hw)


def _unfold(layer: WeightedLayer, x: torch.Tensor) -> torch.Tensor:
    """The activations as (N, K, pixels) columns, K in unfold order (channel, kernel row, col)."""
    if isinstance(layer, Linear):
        return x.unsqueeze(2)
    return F.unfold(x, layer.kernel, padding=layer.padding, stride=layer.stride)


def _from_rows(layer: WeightedLayer, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """GEMM output (N·pixels, O), pixel-major → logical (N, O, OH, OW) (channels-last) or (N, O)."""
    if isinstance(layer, Linear):
        return rows.reshape(batch, -1)
    _, oh, ow = layer.out_shape
    return rows.reshape(batch, oh, ow, -1).permute(0, 3, 1, 2)


def _from_columns(layer: WeightedLayer, cols: torch.Tensor) -> torch.Tensor:
    """GEMM output (N, O, pixels) → logical (N, O, OH, OW) or (N, O)."""
    if isinstance(layer, Linear):
        return cols.reshape(cols.shape[0], -1)
    return cols.reshape(cols.shape[0], *layer.out_shape)


def _uses_int8(prepared: PreparedLayer) -> bool:
    layer = prepared.layer
    return (prepared.weight_digits is not None and layer.in_format.signed_width <= int8_gemm.MAX_WORD_BITS
            and prepared.weight_digits.depth <= int8_gemm.MAX_DEPTH and int8_gemm.int8_matmul_is_exact())


def _fuses(prepared: PreparedLayer, hw: HardwareConfig) -> bool:
    """Whether the fused int8 pass can run the layer: its int64 sums plus the bias cannot leave
    int64 (int8 sums stay below 2**48), and its float64 output holds the result exactly (words,
    or the accumulators of a last layer when they fit float64)."""
    layer = prepared.layer
    return (_uses_int8(prepared) and layer.bias_acc_bits <= 62
            and (layer.out_format is not None or not int64_accumulators(layer, hw)))


def _input_digits(layer: WeightedLayer, x: torch.Tensor) -> int8_gemm.Digits:
    """The GEMM's A (im2col rows of the input words) as int8 digits."""
    bits = layer.in_format.signed_width  # unsigned words take one bit more as int8 digits
    if isinstance(layer, Conv2d):
        return int8_gemm.im2col_digits(x.permute(0, 2, 3, 1), layer.kernel, layer.stride, layer.padding,
                                       layer.out_shape[1:], bits)
    return int8_gemm.split(x, bits)


def _int8_accumulators(prepared: PreparedLayer, x: torch.Tensor) -> torch.Tensor:
    """Exact Σ w·a through int8 digit products, float64, logical output shape."""
    layer = prepared.layer
    return _from_rows(layer, int8_gemm.matmul(_input_digits(layer, x), prepared.weight_digits), x.shape[0])


def _fused_int8_layer(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig,
                      pe_faults: PeFaults | None = None) -> torch.Tensor | None:
    """The int8 digit products and the activation unit in one pass over the outputs (no float64
    accumulator map), when no partial sum can saturate; None otherwise (the caller takes the
    general path). Register-fault corrections of faulty PEs are added in the same pass; the
    other outputs faulty PEs touch are recomputed and activated on their own afterwards."""
    layer = prepared.layer
    dp = hw.datapath
    if dp.overflow == "saturate":
        limit = float(dp.acc_max) * _MARGIN
        col_max = prepared.abs_col_sum_max
        if not (_largest_word(layer) * col_max < limit or abs_max(x) * col_max < limit):
            return None
    digits = _input_digits(layer, x)
    products = int8_gemm.digit_products(digits, prepared.weight_digits)
    out = np.empty((products.rows, layer.out_channels), dtype=np.float64)
    blocks = list(_faulty_blocks(prepared, x, hw, pe_faults, None, lambda: digits)) if pe_faults is not None else []
    _recombine(prepared, hw, products, out, *_gathered_corrections([b for b in blocks if b[3]], products.rows))
    for rows, filters, values, _ in (b for b in blocks if not b[3]):
        words = activation_unit(prepared, values, hw, filters).numpy()
        if rows.size == out.shape[0]:  # every row (WS): a column slice is much cheaper
            out[:, filters] = words
        else:
            out[rows[:, None], filters[None, :]] = words
    return _from_rows(layer, torch.from_numpy(out), x.shape[0])


def _largest_word(layer: WeightedLayer) -> float:
    """max |word| of the layer's input format: a bound of max |x| that costs no pass over x."""
    return float(max(-layer.in_format.raw_min, layer.in_format.raw_max))


def _gathered_corrections(blocks: list, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correction blocks (im2col rows, filters, int64 values, True) as one C-contiguous int64
    (R, C) matrix over the R rows they touch, the slot of each of the ``rows`` im2col rows in it
    (int64 (rows,), -1 where untouched) and the C filters its columns belong to (blocks do not
    overlap)."""
    if len(blocks) == 1:  # one faulty column (WS) or PE (OS): no copy
        block_rows, filters, values, _ = blocks[0]
        slot = np.full(rows, -1, dtype=np.int64)
        slot[block_rows] = np.arange(block_rows.size)
        return np.ascontiguousarray(values.numpy()), slot, filters.astype(np.int64)
    touched = np.unique(np.concatenate([r for r, _, _, _ in blocks] or [[]])).astype(np.int64)
    corrected = np.unique(np.concatenate([f for _, f, _, _ in blocks] or [[]])).astype(np.int64)
    correction = np.zeros((touched.size, corrected.size), dtype=np.int64)
    for block_rows, filters, values, _ in blocks:
        at_rows, at_columns = np.searchsorted(touched, block_rows), np.searchsorted(corrected, filters)
        correction[at_rows[:, None], at_columns[None, :]] = values.numpy()
    slot = np.full(rows if touched.size else 0, -1, dtype=np.int64)
    slot[touched] = np.arange(touched.size)
    return correction, slot, corrected


def _recombine(prepared: PreparedLayer, hw: HardwareConfig, products: int8_gemm.DigitProducts,
               out: np.ndarray, correction: np.ndarray, correction_row: np.ndarray, corrected: np.ndarray) -> None:
    """:func:`accel_sim.hardware.int8_kernels.recombine_digits` into ``out``: the activation unit's output words (the
    accumulators plus bias for a last layer), with ``correction[correction_row[m], c]`` (int64
    (R, C)) added to the sum of row m and filter ``corrected[c]`` where ``correction_row[m] ≥ 0``."""
    layer, dp = prepared.layer, hw.datapath
    fmt = layer.out_format
    mode = int8_kernels.EPILOGUE_FULL if fmt is not None else int8_kernels.EPILOGUE_BIAS
    threshold = threshold_to_acc(layer.threshold, layer.acc_frac_bits) if layer.threshold is not None else 0
    int8_kernels.recombine_digits(
        *products.recombine_args(), mode, prepared.bias.numpy().astype(np.int64), dp.acc_min, dp.acc_max,
        dp.acc_bits, int(dp.overflow == "wrap"), int8_kernels.ACTIVATION_CODES[layer.activation], threshold,
        layer.acc_frac_bits - (fmt.frac_bits if fmt is not None else 0), int8_kernels.ROUNDING_CODES[dp.rounding],
        fmt.raw_min if fmt is not None else 0, fmt.raw_max if fmt is not None else 0, correction, correction_row,
        corrected, out)


def weighted_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, engine: str,
                          pe_faults: PeFaults | None = None) -> torch.Tensor:
    """Accumulator values ``Σ w·a`` (bias not added), exact, in the layer's logical output shape."""
    layer = prepared.layer
    if engine == "faithful" and not layer.weight_format.is_float:
        return faithful_accumulators(prepared, x, hw, pe_faults)
    acc = _wide_accumulators(prepared, x, hw) if int64_accumulators(layer, hw) else _fast_accumulators(prepared, x, hw)
    if pe_faults is not None and pe_faults.count:
        acc = _with_pe_faults(prepared, x, hw, pe_faults, acc)
    return acc


def _with_pe_faults(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, pe_faults: PeFaults,
                    acc: torch.Tensor) -> torch.Tensor:
    """Replace the outputs the faulty PEs touch by their exact faulty values; all other outputs
    keep their fast-path values."""
    layer = prepared.layer
    if not _pe_faults_on_fast_path(layer, hw):
        return _recompute_touched(prepared, x, hw, pe_faults, acc)
    by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous().view(-1, layer.out_channels)
    for rows, filters, values, _ in _faulty_blocks(prepared, x, hw, pe_faults, lambda r, f: by_row[r][:, f]):
        by_row[torch.from_numpy(rows)[:, None], torch.from_numpy(filters)[None, :]] = values
    return _from_rows(layer, by_row, x.shape[0])


def _pe_faults_on_fast_path(layer: WeightedLayer, hw: HardwareConfig) -> bool:
    """Whether PE faults of the layer take the fast strategies, which need filters along the array
    columns (:func:`accel_sim.hardware.pe_faults.fast_strategies_apply`) and whose lanes and
    bounds read words as signed (unsigned words and wide accumulators take the faithful kernel
    instead)."""
    weights, inputs = layer.weight_format, layer.in_format
    return (not weights.is_float and weights.signed and inputs.signed and fast_strategies_apply(hw)
            and fits_float64(hw, weights.word_bits + inputs.word_bits))


def _faulty_blocks(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, pe_faults: PeFaults,
                   clean: Callable[[np.ndarray, np.ndarray], torch.Tensor] | None,
                   input_digits: Callable[[], int8_gemm.Digits] | None = None):
    """The exact faulty accumulators (float64 (I, J), bias not added) of the outputs the faulty
    PEs touch, as (im2col rows (I,), filters (J,), values, is_correction) blocks that do not
    overlap.

    In WS a PE (r, c) works on every output of the filters n ≡ c (mod cols); in OS on the
    outputs of pixels ≡ r (mod rows) of those filters. ``clean(rows, filters)`` gives the
    fault-free accumulators of a block, to which register-fault corrections are added; without
    it (None) those blocks come as the corrections themselves (int64, ``is_correction`` true).
    ``input_digits`` gives the int8 digits of the im2col matrix (default: made on demand where
    the int8 path is exact)."""
    layer = prepared.layer
    batch = x.shape[0]
    product_bits = layer.weight_format.word_bits + layer.in_format.word_bits
    if isinstance(layer, Conv2d):
        # a view, not a copy, after the first layer: the fused epilogue writes feature maps channels-last
        x_hwc = x.permute(0, 2, 3, 1).contiguous().numpy()
        geometry = (*layer.kernel, *layer.stride, *layer.padding, layer.out_shape[2])
        pixels = layer.out_shape[1] * layer.out_shape[2]
    else:
        x_hwc = x.reshape(batch, 1, 1, -1).contiguous().numpy()
        geometry, pixels = (1, 1, 1, 1, 0, 0, 1), 1
    x_bounds = (lambda: _largest_word(layer), functools.cache(lambda: abs_max(x)))  # measured at most once
    if input_digits is None and _uses_int8(prepared):
        input_digits = functools.cache(lambda: _input_digits(layer, x))
    for rows, filters, values, correction in faulty_column_blocks(
            x_hwc, prepared.weight_t_hwc, lambda col: prepared.column_words(col, hw.cols),
            lambda col, offset: prepared.column_pairs(col, hw.cols, offset), geometry, pixels, hw, pe_faults,
            layer.weight_format.word_bits, product_bits, x_bounds, prepared.abs_col_sums, input_digits):
        if correction and clean is None:
            yield rows, filters, torch.from_numpy(values), True
            continue
        values = torch.from_numpy(values).to(torch.float64)
        if correction:
            values = clean(rows, filters) + values
            values = values if hw.datapath.overflow == "saturate" else wrap_float(values, hw.datapath.acc_bits)
        yield rows, filters, values, False
    rows, filters = pe_faults.transient_outputs(prepared.weight_t_hwc.shape[1], layer.out_channels)
    for m, n in set(zip(rows.tolist(), filters.tolist())):  # a transient fault hits a single output
        exact = faithful_accumulators(prepared, x, hw, pe_faults, np.array([m]), np.array([n]))
        yield np.array([m]), np.array([n]), torch.from_numpy(exact).to(torch.float64), False


def _recompute_touched(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig, pe_faults: PeFaults,
                       acc: torch.Tensor) -> torch.Tensor:
    """Recompute, MAC by MAC with the faults, every output the faulty PEs touch (float32 images,
    and accumulators too wide for :func:`fits_float64`)."""
    layer = prepared.layer
    batch = x.shape[0]
    pixels = 1 if isinstance(layer, Linear) else layer.out_shape[1] * layer.out_shape[2]
    pe_rows, pe_cols = pe_faults.faulty_pes(hw.cols)
    row_idx, col_idx = get_dataflow(hw.dataflow).touched_outputs(pe_rows, pe_cols, hw.rows, hw.cols, batch, pixels,
                                                                 layer.out_channels)
    if not col_idx.size or not row_idx.size:
        return acc
    exact = faithful_accumulators(prepared, x, hw, pe_faults, row_idx, col_idx)
    by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous().view(-1, layer.out_channels)
    by_row[torch.from_numpy(row_idx)[:, None], torch.from_numpy(col_idx)[None, :]] = torch.from_numpy(exact).to(acc.dtype)
    return _from_rows(layer, by_row, batch)


def _fast_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig) -> torch.Tensor:
    layer = prepared.layer
    if layer.weight_format.is_float:
        return _float_accumulators(prepared, x)
    dp = hw.datapath
    if _uses_int8(prepared):
        acc, exact_limit = _int8_accumulators(prepared, x), math.inf  # exact whatever the size
    else:
        acc = _from_columns(layer, torch.matmul(prepared.weight_2d, _unfold(layer, x)))
        exact_limit = EXACT_LIMIT
    limit = min(exact_limit, float(dp.acc_max)) if dp.overflow == "saturate" else exact_limit
    if abs_max(x) * prepared.abs_col_sum_max < limit * _MARGIN:
        return acc if dp.overflow == "saturate" else wrap_float(acc, dp.acc_bits)
    # Per-output bounds; im2col rows (image, pixel) holding an output that might round or
    # saturate are recomputed by the faithful kernel.
    bound = torch.matmul(prepared.weight_2d.abs(), _unfold(layer, x).abs())  # (N, O, pixels)
    risky_rows = (bound >= limit * _MARGIN).any(dim=1).reshape(-1)  # (N·pixels,)
    if dp.overflow == "wrap":
        acc = wrap_float(torch.where(_from_columns(layer, bound) >= limit * _MARGIN, 0.0, acc), dp.acc_bits)
    if risky_rows.any():
        rows = torch.nonzero(risky_rows).reshape(-1).numpy()
        exact = faithful_accumulators(prepared, x, hw, None, rows, np.arange(layer.out_channels))
        by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous()
        by_row.view(-1, layer.out_channels)[torch.from_numpy(rows)] = torch.from_numpy(exact).to(acc.dtype)
        acc = _from_rows(layer, by_row, x.shape[0])
    return acc


def _wide_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig) -> torch.Tensor:
    """Exact ``int64`` accumulators of an accumulator wider than 53 bits (logical output shape)."""
    layer, dp = prepared.layer, hw.datapath
    x_max = abs_max(x)
    if _uses_int8(prepared):  # int8 sums of words ≤ 16 bits are exact in float64
        acc = _int8_accumulators(prepared, x).to(torch.int64)
    else:
        acc = _wide_sums(prepared, x, x_max)
        if acc is None:
            return faithful_accumulators(prepared, x, hw, None)
    if dp.overflow == "wrap":  # the wrapped sum is the sum modulo 2**acc_bits
        return torch.from_numpy(dp.overflow_acc(acc.numpy()))
    limit = float(dp.acc_max) * _MARGIN
    filters = np.flatnonzero(x_max * prepared.abs_col_sums >= limit)  # only their sums might saturate
    if not filters.size:
        return acc
    # im2col rows holding an output of those filters whose partial sums might saturate: added
    # MAC by MAC
    weights = torch.from_numpy(np.abs(prepared.weight.reshape(layer.out_channels, -1)[filters]).astype(np.float64))
    risky = torch.matmul(weights, _unfold(layer, x).abs()) >= limit
    rows = torch.nonzero(risky.any(dim=1).reshape(-1)).reshape(-1).numpy()
    if rows.size:
        exact = faithful_accumulators(prepared, x, hw, None, rows, filters)
        by_row = (acc.permute(0, 2, 3, 1) if acc.dim() == 4 else acc).contiguous()
        by_row.view(-1, layer.out_channels)[torch.from_numpy(rows)[:, None], torch.from_numpy(filters)[None, :]] = \
            torch.from_numpy(exact)
        acc = _from_rows(layer, by_row, x.shape[0])
    return acc


def _wide_sums(prepared: PreparedLayer, x: torch.Tensor, x_max: float) -> torch.Tensor | None:
    """Σ w·a as ``int64`` (logical output shape), exact modulo 2**64: the stored words' GEMM (one
    float64 product while every partial sum stays below 2**53, two with the activations split
    into 16-bit digits, four with the weights split too), plus the products of the patched words
    (:mod:`accel_sim.hardware.patched_sums`). None when the window is too deep for the GEMMs."""
    layer, stored = prepared.layer, prepared.stored
    w, col_max = stored.weight_2d, stored.abs_col_sum_max
    if x_max * col_max < EXACT_LIMIT * _MARGIN:
        sums = torch.matmul(w, _unfold(layer, x)).to(torch.int64)
    elif wide_gemm.split_matmul_is_exact(col_max):
        hi, lo = wide_gemm.balanced_digits(x)
        sums = wide_gemm.split_matmul(w, _unfold(layer, hi), _unfold(layer, lo))
    elif w.shape[1] <= wide_gemm.MAX_DEPTH:
        sums = wide_gemm.matmul_int64(w, _unfold(layer, x))
    else:
        return None
    if stored is not prepared:
        add_patch_products(sums.numpy(), layer, prepared.patch.index, prepared.patch.values, x)
    return _from_columns(layer, sums)


def _float_accumulators(prepared: PreparedLayer, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """float32 sums through torch's own convolution or matrix product on the (possibly faulty)
    weights, plus ``bias`` if given: IEEE fp32 arithmetic in the library's summation order, which
    the fp32 setting leaves open (the faithful kernel sums in window order; the two differ in the
    last bits)."""
    layer = prepared.layer
    if isinstance(layer, Conv2d):
        return F.conv2d(x, prepared.weight_tensor, bias, stride=layer.stride, padding=layer.padding)
    return F.linear(x, prepared.weight_tensor, bias)


def faithful_accumulators(prepared: PreparedLayer, x: torch.Tensor, hw: HardwareConfig,
                          pe_faults: PeFaults | None, rows: np.ndarray | None = None,
                          cols: np.ndarray | None = None):
    """The faithful kernel on all outputs (returns the logical output shape, float64 or float32),
    or on the im2col rows ``rows`` × filters ``cols`` only (returns an array of that shape)."""
    layer = prepared.layer
    is_float = layer.weight_format.is_float
    xi = (x.to(torch.float32) if is_float else x.to(torch.int64)).contiguous().numpy()
    pixels = 1 if isinstance(layer, Linear) else layer.out_shape[1] * layer.out_shape[2]
    row_idx = np.arange(x.shape[0] * pixels, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    if isinstance(layer, Conv2d):
        _, oh, ow = layer.out_shape
        a = kernels.im2col_hwc(xi, row_idx, *layer.kernel, *layer.stride, *layer.padding, oh, ow)
    else:
        a = np.ascontiguousarray(xi[row_idx])
    faults = pe_faults if pe_faults is not None else PeFaults.none(hw.rows, hw.cols)
    col_idx = np.arange(layer.out_channels, dtype=np.int64) if cols is None else np.asarray(cols, np.int64)
    fault_args = (faults.pe_start, faults.register, faults.bit, faults.model, faults.mac)
    if is_float:
        out = kernels.gemm_faithful_f32(a, prepared.weight_t_hwc, row_idx, col_idx, pixels,
                                        *get_dataflow(hw.dataflow).axis_codes, hw.rows, hw.cols, *fault_args)
    else:
        dp = hw.datapath
        out = kernels.gemm_faithful(
            a, prepared.weight_t_hwc, row_idx, col_idx, pixels, dp.acc_min, dp.acc_max, dp.acc_bits,
            int(dp.overflow == "wrap"), *get_dataflow(hw.dataflow).axis_codes, hw.rows, hw.cols, *fault_args,
            layer.weight_format.word_bits, layer.weight_format.word_bits + layer.in_format.word_bits,
        )
    if rows is not None or cols is not None:
        return out
    dtype = np.float32 if is_float else np.int64 if int64_accumulators(layer, hw) else np.float64
    return _from_rows(layer, torch.from_numpy(out.astype(dtype)), x.shape[0])


def abs_max(x: torch.Tensor) -> float:
    """max |x| in one pass over memory (a channels-last map is reduced in its memory order,
    which is several times faster than the strided logical order)."""
    if not x.numel():
        return 0.0
    if x.dim() == 4 and x.permute(0, 2, 3, 1).is_contiguous():
        x = x.permute(0, 2, 3, 1)
    lo, hi = torch.aminmax(x)
    return max(-float(lo), float(hi))


def activation_unit(prepared: PreparedLayer, acc: torch.Tensor, hw: HardwareConfig,
                    filters: np.ndarray | None = None) -> torch.Tensor:
    """Bias (the accumulator's last addition), activation in the accumulator domain, rescaling
    with rounding, saturation to the next activation word; shapes as ``acc`` (channels in
    dimension 1; only the channels ``filters`` when given)."""
    return activate(prepared.layer, add_bias(prepared, acc, hw, filters), hw, prepared.threshold_acc)
