"""Fault-aware training: weight bit flips injected into each training batch's forward pass.

Each step draws fresh faults: every parameter tensor (weights and biases) is stored as words of
the training's fault format, ``fp32`` (IEEE-754 binary32) or ``fixedW`` (fake quantisation: one
``Fixed(W, f)`` per tensor, f chosen as the exporter chooses a weight tensor's, so that its largest
magnitude fits), and each stored bit flips with probability ``rate``. The forward and backward pass
run on the faulty values; the gradient then updates the clean weights (the faults of a step are
gone at the next one, as in Zahid et al.'s FAT). The faults come from a ``numpy.random.Generator``
the training seeds per epoch, so a resumed run draws the same faults as an uninterrupted one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from accel_sim.errors import AccelSimError
from accel_sim.numerics import Float32, format_for, quantize
from accel_sim.numerics.formats import dequantize, fault_rounds, flip

FORMAT_PATTERN = r"fp32|fixed(\d+)"


@dataclass(frozen=True)
class TrainingFaults:
    """Weight bit flips per training step.

    Attributes
    ----------
    rate : float
        Per-bit flip probability of every stored parameter word, in [0, 1]; 0 trains without faults.
    format : str
        ``fp32`` or ``fixedW`` (W in 2..32 bits): the words the flips act on.
    """

    rate: float = 0.0
    format: str = "fp32"

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 <= self.rate <= 1:
            raise AccelSimError(f"fault rate must be a number in [0, 1], got {self.rate!r}")
        match = re.fullmatch(FORMAT_PATTERN, self.format) if isinstance(self.format, str) else None
        if not match or (match.group(1) is not None and not 2 <= int(match.group(1)) <= 32):
            raise AccelSimError(f"fault format must be fp32 or fixedW with W in 2..32, got {self.format!r}")

    @property
    def word_bits(self) -> int | None:
        """W of ``fixedW``; None for fp32."""
        return None if self.format == "fp32" else int(self.format[5:])


def faulty_values(values: np.ndarray, faults: TrainingFaults, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``values`` (float32, any shape) stored in the fault format with each bit flipped with
    probability ``faults.rate``, read back as float32; and the number of flips. In ``fixedW`` the
    values come back quantised even without a flip (the fake quantisation)."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    fmt = Float32() if faults.word_bits is None else format_for(flat, faults.word_bits)
    raw = flat.copy() if fmt.is_float else quantize(fmt, flat)
    total_bits = flat.size * fmt.word_bits
    count = int(rng.binomial(total_bits, faults.rate)) if faults.rate > 0 else 0
    # distinct bit positions (a repeated draw would flip a bit back)
    positions = np.unique(rng.integers(0, total_bits, size=count)) if count else np.zeros(0, np.int64)
    word, bit = np.divmod(positions, fmt.word_bits)
    for now in fault_rounds(word):  # a word hit twice gets one flip per round
        raw[word[now]] = flip(fmt, raw[word[now]], bit[now])
    return dequantize(fmt, raw).astype(np.float32).reshape(values.shape), int(positions.size)


class InjectedFaults:
    """Context manager: the parameters of ``model`` hold faulty values inside the block and their
    clean values again after it (gradients computed inside are kept). ``flips`` counts the bits
    flipped. With a rate of 0 it leaves the parameters alone (no fake quantisation either)."""

    def __init__(self, model: nn.Module, faults: TrainingFaults, rng: np.random.Generator):
        self.model, self.faults, self.rng = model, faults, rng
        self.clean: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.flips = 0

    def __enter__(self) -> "InjectedFaults":
        if not self.faults.rate:
            return self
        with torch.no_grad():
            for p in self.model.parameters():
                values, n = faulty_values(p.detach().float().cpu().numpy(), self.faults, self.rng)
                self.clean.append((p, p.detach().clone()))
                p.copy_(torch.from_numpy(values).to(p.device, p.dtype))
                self.flips += n
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for p, clean in self.clean:
                p.copy_(clean)
        self.clean = []
