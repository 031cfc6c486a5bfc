"""Applying a fault map to a run (mechanism: how faults act).

* ``weight_memory``: bit operations on a copy of the layer's stored words.
* ``weight_buffer``: the layer's weights stream through the buffer in the dataflow's order; word
  ``j`` of the stream sits at address ``j mod capacity``, so a faulty cell corrupts every weight
  streamed through it (vectorised address arithmetic; applied after the memory faults).
* ``activation_buffer``: the input feature map of each conv/linear layer is stored in (row,
  column, channel) order at address ``j mod capacity``; a faulty cell corrupts the words stored
  there before the array reads them, for every image.
* ``pe``: the outputs a faulty PE works on are recomputed MAC by MAC with the fault; all other
  outputs stay on the fast path.

Permanent faults act on every image; a transient fault acts on one image (and one layer, and for
PEs one MAC): the images it hits are run again on their own with it. The golden image is never
modified.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from accel_sim.faults.io import check_fault_map
from accel_sim.faults.model import MODELS, FaultMap
from accel_sim.hardware import Accelerator, HardwareConfig, LayerFaults, PeFaults, WeightPatch
from accel_sim.hardware import memory
from accel_sim.hardware.dataflows import get_dataflow
from accel_sim.hardware.ecc import DETECTED, SecDed, apply_code_faults
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.hardware.redundancy import outvoted
from accel_sim.image import Image, WeightedLayer
from accel_sim.image.reference import RunOutput, make_output
from accel_sim.numerics import BIT_OPERATIONS, Format
from accel_sim.numerics.formats import fault_rounds, from_bits, to_bits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PermanentFaults:
    """A fault map's permanent faults made ready for :meth:`Accelerator.run`: ``prepared`` (the
    layers with patched weight and bias copies, for its ``prepared`` argument) and
    ``layer_faults`` (activation-buffer and PE faults per layer), with the patches behind them."""

    fmap: FaultMap
    weights: dict[int, WeightPatch]
    biases: dict[int, np.ndarray]
    prepared: list
    layer_faults: dict[int, LayerFaults]


def prepare_permanent_faults(accelerator: Accelerator, image: Image, fmap: FaultMap) -> PermanentFaults:
    """The permanent faults of ``fmap`` (image -1) ready to run, batch after batch if need be
    (``fmap`` is not checked here: see :func:`accel_sim.faults.check_fault_map`)."""
    permanent = fmap.select(fmap.image == -1)
    weights, biases = corrupted_parameters(image, accelerator.hw, permanent)
    return PermanentFaults(permanent, weights, biases, accelerator.prepare(image, weights, biases),
                           layer_faults(image, accelerator.hw, permanent))


def run_with_faults(accelerator: Accelerator, image: Image, images: np.ndarray, fmap: FaultMap) -> RunOutput:
    """Run ``image`` on ``images`` with the faults of ``fmap`` (checked against image and hardware).

    Under DMR with ``dmr_mismatch = "recompute"`` a flagged image runs once more with the
    permanent faults alone (a transient fault struck the first run and does not recur); the
    second run's result and flag are kept."""
    hw = accelerator.hw
    check_fault_map(fmap, image, hw, n_images=len(images))
    ready = prepare_permanent_faults(accelerator, image, fmap)
    out = accelerator.run(image, images, ready.prepared, ready.layer_faults)
    raw, flagged = out.raw_logits.copy(), out.flagged.copy()
    transient = fmap.select(fmap.image >= 0)
    for img in np.unique(transient.image):
        single = _run_transient(accelerator, image, images[int(img):int(img) + 1], ready,
                                transient.select(transient.image == img))
        raw[int(img)], flagged[int(img)] = single.raw_logits[0], single.flagged[0]
    recomputed = np.zeros(len(images), dtype=np.bool_)
    if hw.dmr_mismatch == "recompute" and flagged.any():
        recomputed = flagged.copy()
        # without transient faults the second run repeats the first exactly: its result stands
        rerun = recomputed & np.isin(np.arange(len(images)), transient.image)
        if rerun.any():
            again = accelerator.run(image, images[rerun], ready.prepared, ready.layer_faults)
            raw[rerun], flagged[rerun] = again.raw_logits, again.flagged
    return make_output(image, raw, flagged, recomputed)


def _run_transient(accelerator: Accelerator, image: Image, one_image: np.ndarray, ready: PermanentFaults,
                   hits: FaultMap) -> RunOutput:
    """One image (1, C, H, W) with the permanent faults and its transient faults ``hits``."""
    hw = accelerator.hw
    # the image runs alone, so its transient faults hit batch index 0
    local = FaultMap.concat([ready.fmap, hits.with_image(0)])
    weights, biases = corrupted_parameters(image, hw, local)
    changed = {i for i in set(weights) | set(biases)
               if not (_same_patch(weights.get(i), ready.weights.get(i))
                       and np.array_equal(biases.get(i), ready.biases.get(i)))}
    fresh = accelerator.prepare(image, {i: weights[i] for i in changed if i in weights},
                                {i: biases[i] for i in changed if i in biases})
    rerun = [fresh[i] if i in changed else p for i, p in enumerate(ready.prepared)]
    return accelerator.run(image, one_image, rerun, layer_faults(image, hw, local))


def _same_patch(a: WeightPatch | None, b: WeightPatch | None) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(a.index, b.index) and np.array_equal(a.values, b.values)


def corrupted_parameters(image: Image, hw: HardwareConfig, fmap: FaultMap) -> tuple[dict, dict]:
    """The words changed by memory, weight-buffer and WS weight-register faults:
    ``({layer index: WeightPatch}, {layer index: faulty bias words})``."""
    patches: dict[int, WeightPatch] = {}
    biases: dict[int, np.ndarray] = {}
    stored = fmap.of_site("weight_memory")
    for i in np.unique(stored.layer):
        layer = image.layers[int(i)]
        faults = stored.select(stored.layer == i)
        w, b = faults.tensor == 0, faults.tensor == 1
        if w.any():
            _patch(patches, int(i), layer, faults.index[w], faults.bit[w], faults.model[w],
                   memory.stored_code(layer.weight_format.word_bits, hw))
        if b.any():
            biases[int(i)] = read_faulty_words(layer.bias_format, layer.bias, faults.index[b], faults.bit[b],
                                               faults.model[b], memory.stored_code(layer.bias_format.word_bits, hw))
    buffer = fmap.of_site("weight_buffer")
    held = memory.buffer(image, hw, "weight_buffer") if len(buffer) else None
    for i, layer in enumerate(image.layers):
        if not isinstance(layer, WeightedLayer):
            continue
        stationary = _stationary_weight_faults(fmap, hw, i)
        if stationary is not None and len(stationary):
            _patch(patches, i, layer, *_pe_weight_words(layer, hw, stationary))
        faults = buffer.select((buffer.layer == -1) | (buffer.layer == i))
        if len(faults):
            _patch(patches, i, layer, *addresses_to_words(memory.weight_stream(layer, hw), held.capacity, faults)[:3],
                   held.code)
    return patches, biases


def _patch(patches: dict, i: int, layer: WeightedLayer, index: np.ndarray, bit: np.ndarray, model: np.ndarray,
           code: SecDed | None = None) -> None:
    """Apply faults (flat weight index, bit, model) on top of the layer's current patch; with
    ``code``, the faults hit the words' code words and the words are read through its decoder."""
    width = layer.weight_format.word_bits if code is None else code.code_bits
    keep = np.asarray(bit) < width  # a narrower word has no such bit
    index, bit, model = np.asarray(index)[keep], np.asarray(bit)[keep], np.asarray(model)[keep]
    old = patches.get(i)
    union = np.sort(index if old is None else np.concatenate([index, old.index]))
    first = np.ones(union.size, dtype=np.bool_)  # unique without np.unique, which hashes: slower here
    first[1:] = union[1:] != union[:-1]
    union = union[first]
    values = layer.weight.reshape(-1)[union].copy()
    if old is not None:
        values[np.searchsorted(union, old.index)] = old.values
    values = read_faulty_words(layer.weight_format, values, np.searchsorted(union, index), bit, model, code)
    patches[i] = WeightPatch(union, values)


def layer_faults(image: Image, hw: HardwareConfig, fmap: FaultMap) -> dict[int, LayerFaults]:
    """Activation-buffer and PE faults per layer, for :meth:`Accelerator.run`."""
    act = fmap.of_site("activation_buffer")
    pe = fmap.of_site("pe")
    held = memory.buffer(image, hw, "activation_buffer") if len(act) else None
    out = {}
    for i, layer in enumerate(image.layers):
        if not isinstance(layer, WeightedLayer):
            continue
        here_act = act.select((act.layer == -1) | (act.layer == i))
        here_pe = pe.select((pe.layer == -1) | (pe.layer == i))
        corrupt = None
        if len(here_act):
            index, bit, model, images = addresses_to_words(memory.activation_stream(layer.in_shape), held.capacity,
                                                           here_act)
            keep = bit < (layer.in_format.word_bits if held.code is None else held.code.code_bits)
            corrupt = functools.partial(_corrupt_feature_map, fmt=layer.in_format, index=index[keep],
                                        bit=bit[keep], model=model[keep], image=images[keep], code=held.code)
        pe_faults = None
        stationary = _stationary_weight_faults(fmap, hw, i)
        if stationary is not None:  # already folded into the weights by corrupted_parameters
            here_pe = here_pe.select(~((here_pe.register == 0) & (here_pe.image == -1)))
        if len(here_pe) and hw.pe_redundancy == "tmr":  # faults of one replica alone are outvoted exactly
            here_pe = here_pe.select(~outvoted(here_pe.row.astype(np.int64) * hw.cols + here_pe.col,
                                               here_pe.register))
        if len(here_pe):
            live = here_pe.select((here_pe.image == -1) | (here_pe.access >= 0))
            pe_faults = PeFaults.build(hw.rows, hw.cols, live.row, live.col, live.register, live.bit, live.model,
                                       np.where(live.image >= 0, live.access, -1))
        if corrupt is not None or pe_faults is not None:
            out[i] = LayerFaults(pe=pe_faults, corrupt_input=corrupt)
    return out


def _stationary_weight_faults(fmap: FaultMap, hw: HardwareConfig, layer_index: int) -> FaultMap | None:
    """Permanent faults of PE weight registers under WS, active in layer ``layer_index``.

    In a weight-stationary array a PE's weight register holds the same weight for every pixel of
    a fold, so such a fault is exactly a corrupted copy of the weights the PE holds: weights
    (k, n) with k ≡ row (mod rows) and n ≡ col (mod cols). Applying it to the weights keeps the
    layer on the fast path. None when the dataflow does not hold weights in its PEs, or under
    TMR (a replica's weight register is voted with the others' per MAC).
    """
    if not get_dataflow(hw.dataflow).holds_weights or hw.pe_redundancy != "none":
        return None
    pe = fmap.of_site("pe")
    return pe.select((pe.register == 0) & (pe.image == -1) & ((pe.layer == -1) | (pe.layer == layer_index)))


def _pe_weight_words(layer: WeightedLayer, hw: HardwareConfig, faults: FaultMap) -> tuple[np.ndarray, ...]:
    """(flat weight index, bit, model) of every weight held by the faulty PEs' registers."""
    shape = gemm_shape(layer)
    index, bit, model = [], [], []
    for r, c, b, m in zip(faults.row, faults.col, faults.bit, faults.model):
        k, n = np.meshgrid(np.arange(r, shape.k, hw.rows), np.arange(c, shape.n, hw.cols), indexing="ij")
        flat = memory.flat_weight_index(layer, k.ravel(), n.ravel())
        index.append(flat)
        bit.append(np.full(flat.size, b, np.int64))
        model.append(np.full(flat.size, m, np.int64))
    if not index:
        return (np.zeros(0, np.int64),) * 3
    return np.concatenate(index), np.concatenate(bit), np.concatenate(model)


def addresses_to_words(order: np.ndarray, capacity: int, faults: FaultMap) -> tuple[np.ndarray, ...]:
    """Every word a faulty buffer cell corrupts (:func:`accel_sim.hardware.memory.words_at`):
    (word index, bit, model, image) with one entry per (fault, word)."""
    words, fault_of = memory.words_at(order, capacity, faults.index)
    return (words, *(getattr(faults, name)[fault_of].astype(np.int64) for name in ("bit", "model", "image")))


def apply_bit_faults(fmt: Format, words: np.ndarray, index: np.ndarray, bit: np.ndarray,
                     model: np.ndarray) -> np.ndarray:
    """A copy of ``words`` with each (index, bit, model) fault applied; several faults on one word
    are applied one after another."""
    out = np.array(words, copy=True)
    index, bit, model = np.asarray(index), np.asarray(bit), np.asarray(model)
    for now in fault_rounds(index):
        for code, name in enumerate(MODELS):
            sel = now[model[now] == code]
            if sel.size:
                out[index[sel]] = BIT_OPERATIONS[name](fmt, out[index[sel]], bit[sel])
    return out


def read_faulty_words(fmt: Format, words: np.ndarray, index: np.ndarray, bit: np.ndarray, model: np.ndarray,
                      code: SecDed | None) -> np.ndarray:
    """What a memory returns for ``words`` (raw words of ``fmt``) when faults (index into
    ``words``, bit, model code) hit them as stored: the words themselves without ``code``
    (:func:`apply_bit_faults`); with it their code words, which are encoded, corrupted and decoded
    (single errors corrected, detected errors read as 0, see :mod:`accel_sim.hardware.ecc`)."""
    if code is None:
        return apply_bit_faults(fmt, words, index, bit, model)
    out = np.array(words, copy=True)
    index = np.asarray(index, dtype=np.int64)
    touched = np.unique(index)
    stored = code.encode(to_bits(fmt, out[touched]))
    faulty = apply_code_faults(stored, np.searchsorted(touched, index), bit, model)
    data, outcome = code.decode(faulty)
    out[touched] = from_bits(fmt, data)
    if (outcome == DETECTED).any():
        logger.debug("%d of %d faulty %s words detected uncorrectable (read as 0)", int((outcome == DETECTED).sum()),
                     touched.size, fmt.name)
    return out


def _corrupt_feature_map(x: torch.Tensor, fmt: Format, index: np.ndarray, bit: np.ndarray, model: np.ndarray,
                         image: np.ndarray, code: SecDed | None = None) -> torch.Tensor:
    """Apply buffer faults to the stored words of each image's input feature map (read through
    ``code`` when the buffer has ECC)."""
    flat = x.contiguous().reshape(x.shape[0], -1)
    words = flat.numpy().astype(np.float32 if fmt.is_float else np.int64)
    for b in range(words.shape[0]):
        sel = (image == -1) | (image == b)
        if sel.any():
            words[b] = read_faulty_words(fmt, words[b], index[sel], bit[sel], model[sel], code)
    return torch.from_numpy(words.astype(flat.numpy().dtype)).reshape(x.shape)
