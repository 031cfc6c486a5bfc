"""The run API: an emulated accelerator running an image on a batch of images."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from accel_sim.errors import AccelSimError
from accel_sim.hardware.activation_unit import activate, threshold_in_accumulator
from accel_sim.hardware.clean_prefix import CleanPrefixes
from accel_sim.hardware.compute import PreparedLayer, WeightPatch, biased_accumulators, prepare_layer, run_layer
from accel_sim.hardware.config import HardwareConfig
from accel_sim.hardware.pe_faults import PeFaults
from accel_sim.image import Image, WeightedLayer
from accel_sim.image.reference import RunOutput, make_output, quantize_input, run_reference

logger = logging.getLogger(__name__)

ENGINES = ("fast", "faithful", "reference")


@dataclass(frozen=True)
class LayerFaults:
    """Faults acting while one layer runs.

    Attributes
    ----------
    pe : PeFaults or None
        Faulty PEs (the affected outputs are recomputed MAC by MAC).
    corrupt_input : callable or None
        ``x -> x'``: corrupts the layer's input feature map (words as stored in the activation
        buffer) before the array reads it; must not modify ``x`` in place.
    """

    pe: PeFaults | None = None
    corrupt_input: Callable[[torch.Tensor], torch.Tensor] | None = None


class Accelerator:
    """An emulated systolic-array accelerator.

    Parameters
    ----------
    hw : HardwareConfig
    engine : {"fast", "faithful", "reference"}
        ``fast``: exact BLAS path, falling back to the faithful kernel where its bounds fail or a
        PE is faulty; ``faithful``: every MAC through the faithful kernel; ``reference``: the
        golden reference (slow, for debugging).
    batch_size : int
        Images per batch.
    progress : bool
        Show a progress bar over batches.
    prefix_cache_bytes : int
        Memory (bytes) for the fault-free prefixes of runs (:mod:`accel_sim.hardware.clean_prefix`):
        a run whose faults start in layer L takes the input of L from an earlier run of the same
        image on the same batch when one is kept. 0 turns it off.
    """

    def __init__(self, hw: HardwareConfig, engine: str = "fast", batch_size: int = 50, progress: bool = False,
                 prefix_cache_bytes: int = 512 << 20):
        if engine not in ENGINES:
            raise AccelSimError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise AccelSimError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.hw = hw
        self.engine = engine
        self.batch_size = batch_size
        self.progress = progress
        self._clean: tuple[Image, list] | None = None  # clean prepared layers of the last image
        self.prefixes = CleanPrefixes(prefix_cache_bytes)

    def check_image(self, image: Image) -> None:
        """Refuse an image whose words are wider than this hardware's multipliers, or whose biases
        do not fit its accumulator."""
        for layer in image.weighted_layers:
            if not layer.weight_format.is_float:
                self.hw.check_image_fits(layer.weight_format.word_bits, layer.in_format.word_bits)
                self.hw.datapath.check_operands(layer.weight_format.word_bits, layer.in_format.word_bits,
                                                layer.bias_acc_bits, f"layer {layer.name}")

    def prepare(self, image: Image, weights: dict[int, WeightPatch] | None = None,
                biases: dict[int, np.ndarray] | None = None) -> list[PreparedLayer | None]:
        """Per-layer tensors for :meth:`run`; ``weights`` maps layer index → a patch of faulty
        weight words, ``biases`` layer index → faulty bias words."""
        weights, biases = weights or {}, biases or {}
        if self._clean is None or self._clean[0] is not image:
            self._clean = (image, [prepare_layer(layer) if isinstance(layer, WeightedLayer) else None
                                   for layer in image.layers])
        clean = self._clean[1]
        return [prepare_layer(layer, weights.get(i), biases.get(i), base=clean[i])
                if i in weights or i in biases else clean[i] for i, layer in enumerate(image.layers)]

    def run(self, image: Image, images: np.ndarray, prepared: list[PreparedLayer | None] | None = None,
            layer_faults: dict[int, LayerFaults] | None = None) -> RunOutput:
        """Run ``image`` on ``uint8`` images ``(N, C, H, W)``; returns logits and predictions.

        ``prepared`` (from :meth:`prepare`) may carry faulty weight copies; ``layer_faults`` maps a
        layer index to the faults acting while that layer runs.
        """
        self.check_image(image)
        if self.engine == "reference":
            if layer_faults or prepared is not None:
                raise AccelSimError("the reference engine runs fault-free images only")
            return run_reference(image, images, self.hw.datapath, self.batch_size)
        prepared = prepared if prepared is not None else self.prepare(image)
        first = self.first_faulty_layer(image, prepared, layer_faults)
        # a fault-free run has no prefix to skip; without a cache there is nothing to skip it with
        begin = first if first < len(image.layers) and self.prefixes.max_bytes else 0
        outputs = []
        flagged = np.zeros(len(images), dtype=np.bool_)
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc=f"{image.model} {image.format_name}", disable=not self.progress, leave=False):
            batch = images[start:start + self.batch_size]
            x = self._clean_prefix(image, batch, prepared, begin)
            outputs.append(self.run_layers(image, x, prepared, layer_faults, start=begin,
                                           flagged=flagged[start:start + self.batch_size]).numpy())
        raw = np.concatenate(outputs) if outputs else np.zeros((0, len(image.class_names)))
        return self.output(image, raw, flagged)

    def first_faulty_layer(self, image: Image, prepared: list[PreparedLayer | None],
                           layer_faults: dict[int, LayerFaults] | None) -> int:
        """The first layer a fault acts in: the first whose prepared weights are not this
        accelerator's clean ones for ``image`` or that has layer faults; 0 when the clean ones are
        not known (nothing before it can then be taken as fault-free), the number of layers for a
        fault-free run."""
        if self._clean is None or self._clean[0] is not image:
            return 0
        clean = self._clean[1]
        for i in range(len(image.layers)):
            if prepared[i] is not clean[i] or (layer_faults and i in layer_faults):
                return i
        return len(image.layers)

    def _clean_prefix(self, image: Image, batch: np.ndarray, prepared: list[PreparedLayer | None],
                      begin: int) -> torch.Tensor:
        """The input words of layer ``begin`` for ``batch``, fault-free: kept from an earlier run,
        or computed (and kept); the batch's input words for ``begin = 0``."""
        if begin == 0:
            return self.input_words(image, batch)
        key = self.prefixes.key(image, batch, begin)
        x = self.prefixes.get(key)
        if x is None:
            x = self.run_layers(image, self.input_words(image, batch), prepared, stop=begin)
            self.prefixes.put(key, image, x)
        return x

    # Stages of a run, for callers that reuse part of it (profiling, threshold tuning): the words
    # they pass between stages are those :meth:`run` passes between layers.

    def input_words(self, image: Image, images: np.ndarray) -> torch.Tensor:
        """``uint8`` images ``(N, C, H, W)`` → the first layer's input words (float64 tensors of
        exact integers for fixed point; float32 for fp32, channels-last in memory, the layout in
        which torch's convolutions and max-pooling run fastest here)."""
        words = torch.from_numpy(quantize_input(image, images))
        if image.input_format.is_float:
            return words.to(torch.float32).contiguous(memory_format=torch.channels_last)
        return words.to(torch.float64)

    def run_layers(self, image: Image, x: torch.Tensor, prepared: list[PreparedLayer | None],
                   layer_faults: dict[int, LayerFaults] | None = None, start: int = 0,
                   stop: int | None = None, flagged: np.ndarray | None = None) -> torch.Tensor:
        """Layers ``start .. stop - 1`` of ``image`` on the batch of words ``x`` (the input of layer
        ``start``); returns the output of layer ``stop - 1`` (the logits' accumulators for the last
        layer). ``flagged`` (bool (N,), written in place) is set for the images a DMR comparator
        flags."""
        if self.engine == "reference":
            raise AccelSimError("the reference engine runs whole images only (use run)")
        layer_faults = layer_faults or {}
        stop = len(image.layers) if stop is None else stop
        for i in range(start, stop):
            faults = layer_faults.get(i)
            if faults is not None and faults.corrupt_input is not None:
                x = faults.corrupt_input(x)
            x = run_layer(image.layers[i], prepared[i], x, self.hw, self.engine,
                          faults.pe if faults is not None else None, flagged)
        return x

    def pre_activation(self, image: Image, index: int, x: torch.Tensor, prepared: list[PreparedLayer | None],
                       layer_faults: dict[int, LayerFaults] | None = None) -> torch.Tensor:
        """What the activation unit of weighted layer ``index`` sees for the input words ``x``: the
        exact accumulators plus bias, after the accumulator's overflow mode (float32 sums for
        fp32). :meth:`activate` turns them into the layer's output words; the two together equal
        :meth:`run_layers` over that layer."""
        layer = image.layers[index]
        if not isinstance(layer, WeightedLayer):
            raise AccelSimError(f"layer {index} ({layer.name}) is a {layer.op} layer: it has no activation unit")
        if self.engine == "reference":
            raise AccelSimError("the reference engine runs whole images only (use run)")
        faults = (layer_faults or {}).get(index)
        if faults is not None and faults.corrupt_input is not None:
            x = faults.corrupt_input(x)
        return biased_accumulators(prepared[index], x, self.hw, self.engine, faults.pe if faults is not None else None)

    def activate(self, layer: WeightedLayer, acc: torch.Tensor) -> torch.Tensor:
        """The activation unit of ``layer`` (its activation and threshold, which may differ from the
        layer the accumulators came from) on :meth:`pre_activation`'s output."""
        return activate(layer, acc, self.hw, threshold_in_accumulator(layer))

    def output(self, image: Image, raw_logits: np.ndarray, flagged: np.ndarray | None = None) -> RunOutput:
        """The last layer's accumulators ``(N, classes)`` (and the images flagged) as a :class:`RunOutput`."""
        raw = np.asarray(raw_logits)
        raw = raw.astype(np.float32) if image.input_format.is_float else raw.astype(np.int64)
        return make_output(image, raw, flagged)
