"""Error-correcting codes on the accelerator's memories: SEC-DED (an extended Hamming code).

A ``d``-bit data word is stored as an ``n = d + r + 1``-bit code word, ``r`` the smallest number
of check bits with ``2**r ≥ d + r + 1``: a 16-bit word takes 22 bits, a 32-bit word 39 (the
(39, 32) code of many SRAM macros). Code bit 0 holds the overall parity; bits 1 … n − 1 are the
Hamming positions, check bits at the powers of two and the data bits, lowest first, at the
others. On a read the decoder forms the syndrome (the XOR of the positions of the set bits) and
the overall parity:

- syndrome 0, parity even: the word is read as stored;
- parity odd: one bit is taken to be wrong and flipped back (the position the syndrome names,
  bit 0 when it is 0): a single error is **corrected**; three or more errors with odd parity are
  mis-corrected, as the code dictates;
- syndrome ≠ 0 with even parity, or a syndrome naming no bit of the word: the error is
  **detected** and cannot be corrected (two errors always are; more may be). What the memory then
  returns is the design's choice: here a zero word (the read is flagged, and the accelerator
  computes with 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.numerics.formats import fault_rounds

ECC_MODES = ("none", "secded")
CLEAN, CORRECTED, DETECTED = 0, 1, 2  # decoder outcomes


@dataclass(frozen=True)
class SecDed:
    """The SEC-DED code of ``data_bits``-bit words (1..57 bits, so that code words fit 64 bits)."""

    data_bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.data_bits, int) or isinstance(self.data_bits, bool) or not 1 <= self.data_bits <= 57:
            raise AccelSimError(f"SEC-DED data_bits must be an integer in 1..57, got {self.data_bits!r}")

    @property
    def check_bits(self) -> int:
        """Hamming check bits r (the overall parity bit not counted)."""
        r = 1
        while 2**r < self.data_bits + r + 1:
            r += 1
        return r

    @property
    def code_bits(self) -> int:
        """Bits of a stored code word: data, check bits and the overall parity bit."""
        return self.data_bits + self.check_bits + 1

    @property
    def data_positions(self) -> np.ndarray:
        """uint64 (data_bits,): the code bit holding each data bit (the non-powers of two ≥ 3)."""
        positions = [p for p in range(1, self.code_bits) if p & (p - 1)]
        return np.array(positions[:self.data_bits], dtype=np.uint64)

    def encode(self, data: np.ndarray) -> np.ndarray:
        """uint64 code words of the unsigned data patterns ``data`` (low ``data_bits`` bits read)."""
        data = np.asarray(data, dtype=np.uint64)
        code = np.zeros(data.shape, dtype=np.uint64)
        for i, p in enumerate(self.data_positions):
            code |= ((data >> np.uint64(i)) & np.uint64(1)) << p
        syndrome = self._syndrome(code)
        for j in range(self.check_bits):  # each check bit cancels its bit of the syndrome
            code |= ((syndrome >> np.uint64(j)) & np.uint64(1)) << np.uint64(1 << j)
        return code | _parity(code)

    def decode(self, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint64 data patterns, int8 outcome per word: CLEAN, CORRECTED or DETECTED) of the code
        words ``code``; a detected word's data is 0."""
        code = np.asarray(code, dtype=np.uint64) & np.uint64((1 << self.code_bits) - 1)
        syndrome, odd = self._syndrome(code), _parity(code).astype(bool)
        named = syndrome < np.uint64(self.code_bits)  # the syndrome names a bit of the word
        corrected = odd & named
        fixed = np.where(corrected, code ^ (np.uint64(1) << np.where(named, syndrome, 0)), code)
        detected = (~odd & (syndrome != 0)) | (odd & ~named)
        data = np.zeros(code.shape, dtype=np.uint64)
        for i, p in enumerate(self.data_positions):
            data |= ((fixed >> p) & np.uint64(1)) << np.uint64(i)
        outcome = np.where(detected, DETECTED, np.where(corrected, CORRECTED, CLEAN)).astype(np.int8)
        return np.where(detected, np.uint64(0), data), outcome

    def _syndrome(self, code: np.ndarray) -> np.ndarray:
        syndrome = np.zeros(code.shape, dtype=np.uint64)
        for p in range(1, self.code_bits):
            syndrome ^= ((code >> np.uint64(p)) & np.uint64(1)) * np.uint64(p)
        return syndrome


def _parity(words: np.ndarray) -> np.ndarray:
    """uint64: 1 where ``words`` has an odd number of set bits."""
    x = np.asarray(words, dtype=np.uint64).copy()
    for shift in (32, 16, 8, 4, 2, 1):
        x ^= x >> np.uint64(shift)
    return x & np.uint64(1)


def apply_code_faults(code: np.ndarray, index: np.ndarray, bit: np.ndarray, model: np.ndarray) -> np.ndarray:
    """A copy of the uint64 code words ``code`` with each (word index, bit, model) fault applied
    (model 0 flip, 1 stuck-at-0, 2 stuck-at-1); several faults on one word act one after another
    in the order given."""
    out = np.array(code, dtype=np.uint64, copy=True)
    index, bit, model = (np.asarray(v, dtype=np.int64) for v in (index, bit, model))
    for now in fault_rounds(index):  # the next fault on a word acts on what the last left
        mask = np.uint64(1) << bit[now].astype(np.uint64)
        word = out[index[now]]
        out[index[now]] = np.where(model[now] == 0, word ^ mask, np.where(model[now] == 1, word & ~mask, word | mask))
    return out
