"""The products of a layer's patched weight words (faults in weight memory), added to the sums
of its stored words: a fault map changes a few words of a layer, so its exact sums are the
fault-free GEMM, shared by every fault map, plus ``(new − stored) · a`` for each changed word.
"""

from __future__ import annotations

import numpy as np
import torch

from accel_sim.image import Conv2d, WeightedLayer


def add_patch_products(sums: np.ndarray, layer: WeightedLayer, index: np.ndarray, values: np.ndarray,
                       x: torch.Tensor) -> None:
    """Add ``(values − stored) · a`` to ``sums`` in place, modulo 2**64.

    Parameters
    ----------
    sums : int64 (N, O, pixels)
        Σ w·a of the stored words, GEMM output order (image, filter, output pixel; one pixel for
        a linear layer).
    layer : WeightedLayer
        The layer; its stored words are ``layer.weight`` (integer words).
    index, values : int64 (F,)
        Flat indices into ``layer.weight`` and the words that replace them.
    x : torch.Tensor
        The layer's input words, float64 holding integers, (N, C, H, W) or (N, features).
    """
    index = np.asarray(index, dtype=np.int64)
    delta = np.asarray(values, dtype=np.int64) - layer.weight.reshape(-1)[index].astype(np.int64)
    index, delta = index[delta != 0], delta[delta != 0]
    if not index.size:
        return
    filters, k = np.divmod(index, layer.weight[0].size)  # k in unfold order (channel, kernel row, col)
    with np.errstate(over="ignore"):  # int64 products and sums wrap modulo 2**64, as the GEMM's do
        if not isinstance(layer, Conv2d):
            a = x.reshape(x.shape[0], -1).numpy().astype(np.int64)  # (N, features)
            np.add.at(sums[:, :, 0], (slice(None), filters), a[:, k] * delta)
            return
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
        _, oh, ow = layer.out_shape
        channel, position = np.divmod(k, kh * kw)
        ky, kx = np.divmod(position, kw)
        channels, which = np.unique(channel, return_inverse=True)
        # the faulty channels only, zero-padded: (N, len(channels), H + 2·ph, W + 2·pw)
        padded = np.pad(x[:, torch.from_numpy(channels)].numpy().astype(np.int64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        for f, c, y, z, d in zip(filters, which, ky, kx, delta):
            # the inputs a word at kernel position (y, z) meets: one strided window per output pixel
            window = padded[:, c, y:y + sh * (oh - 1) + 1:sh, z:z + sw * (ow - 1) + 1:sw]
            sums[:, f, :] += window.reshape(window.shape[0], -1) * d
