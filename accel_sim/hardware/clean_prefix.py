"""Fault-free prefixes of runs, kept for the next run: when faults first act in layer L, layers
0 .. L−1 compute exactly what they compute without faults, so their output (the input words of
layer L) for the same image and the same batch serves every later run whose faults start at or
after L. A campaign at a low rate draws its first fault in a late, large layer (at 1e-7 none
in AlexNet's first two convolutions or VGG-16's first five), so each fault map then runs from
there.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from accel_sim.errors import AccelSimError
from accel_sim.image import Image


class CleanPrefixes:
    """Input words of layer L of fault-free runs, per (image, batch of images, L), least recently
    used first out.

    Parameters
    ----------
    max_bytes : int
        Memory the kept feature maps may take (bytes); 0 keeps none.
    """

    def __init__(self, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise AccelSimError(f"prefix cache size must be a non-negative number of bytes, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.bytes = 0
        # key → (image, tensor): the image is held so that its id() is not reused while kept
        self._entries: OrderedDict[tuple, tuple[Image, torch.Tensor]] = OrderedDict()

    @staticmethod
    def key(image: Image, batch: np.ndarray, layer: int) -> tuple:
        """What an entry is found by: the image object, the batch's pixels and the layer index."""
        digest = hashlib.blake2b(np.ascontiguousarray(batch).data, digest_size=16).digest()
        return id(image), batch.shape, digest, layer

    def get(self, key: tuple) -> torch.Tensor | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple, image: Image, x: torch.Tensor) -> None:
        """Keep ``x`` (never modified afterwards: runs read their input words without writing
        them) under ``key``, dropping the least recently used entries beyond ``max_bytes``."""
        size = x.element_size() * x.nelement()
        if size > self.max_bytes or key in self._entries:
            return
        while self.bytes + size > self.max_bytes:
            _, (_, old) = self._entries.popitem(last=False)
            self.bytes -= old.element_size() * old.nelement()
        self._entries[key] = (image, x)
        self.bytes += size

    def __len__(self) -> int:
        return len(self._entries)
