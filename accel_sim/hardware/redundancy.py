"""Redundant PEs on the systolic array: duplication with comparison (DMR) and triple modular
redundancy (TMR).

Under ``pe_redundancy = "dmr"`` every PE is two replicas and a comparator. Both replicas perform
the MAC on the same inputs, each with its own weight, product and partial-sum registers; replica
0's partial-sum output is passed on, and the comparator checks it against replica 1's, bit for bit,
at every MAC. A mismatch flags the image (the comparator detects; it does not correct):

- faults in one replica of a PE are detected at the first MAC where they change that replica's
  output; the image carries on with replica 0's values (the fault-free ones if replica 0 is the
  fault-free replica) and is flagged;
- faults that change both replicas' outputs the same way (the same stuck-at on the same bit of
  both) go undetected: silent, as on an unprotected PE;
- what a flag does is ``dmr_mismatch``: ``flag`` keeps the result and marks the image;
  ``recompute`` runs a flagged image once more, on which transient faults (those of one image)
  do not recur and permanent ones do, and keeps the second run's result and flag.

The comparator itself is taken to be fault-free: a fault there raises a false alarm or masks a
detection, it never changes a value.

Under ``pe_redundancy = "tmr"`` every PE is three replicas and a voter. Each replica has its own
weight, product and partial-sum registers and performs the MAC on the same inputs: the weight,
the activation and the voted partial sum of the PE before it. The voter takes the bitwise
majority of the three replicas' partial-sum outputs (on their two's complement or IEEE-754
pattern) and passes it on through its own output register, which faults may hit too.

What follows, exactly:

- faults in one replica only are outvoted on every bit: the PE computes the fault-free value;
- faults in two or three replicas of one PE act bit by bit: the voted output differs from the
  fault-free one on the bits where at least two replicas' outputs differ from it (two replicas
  with a stuck-at-1 on the same partial-sum bit force that bit; two with different bits are
  still outvoted on each);
- a fault in the voter's output register acts on the PE's output as a partial-sum fault would
  on an unprotected PE.

Fault codes: a PE fault's ``register`` is ``3 · replica + r`` (r: 0 weight, 1 product,
2 partial sum; replica 0 has the codes of an unprotected PE) or, under TMR, :data:`VOTER`.
"""

from __future__ import annotations

import numpy as np

PE_REDUNDANCY_MODES = ("none", "dmr", "tmr")
DMR_MISMATCH_ACTIONS = ("flag", "recompute")  # what a DMR comparator's mismatch does
PE_REGISTERS = ("weight", "product", "psum")  # the registers of one PE (replica)
VOTER = 9  # register code of a TMR voter's output register


def replicas(mode: str) -> int:
    """PE replicas per array position (1, 2 under DMR, 3 under TMR)."""
    return {"none": 1, "dmr": 2, "tmr": 3}[mode]


def register_codes(mode: str) -> tuple[int, ...]:
    """The PE register codes faults may name under ``mode``."""
    codes = tuple(range(3 * replicas(mode)))
    return codes + (VOTER,) if mode == "tmr" else codes


def register_name(code: int) -> str:
    """``weight``, ``product``, ``psum`` (replica 0), ``weight.1`` … ``psum.2``, or ``voter``."""
    if code == VOTER:
        return "voter"
    replica, register = divmod(int(code), 3)
    return PE_REGISTERS[register] + (f".{replica}" if replica else "")


def register_kind(code: int) -> str:
    """What the register is, whichever replica: ``weight``, ``product``, ``psum`` or ``voter``."""
    return "voter" if code == VOTER else PE_REGISTERS[int(code) % 3]


def outvoted(pe: np.ndarray, register: np.ndarray) -> np.ndarray:
    """bool per fault: whether TMR's vote hides it, that is, its PE has faults in one replica
    only and none in its voter. ``pe`` (flat PE index) and ``register`` (codes) per fault."""
    pe, register = np.asarray(pe, np.int64), np.asarray(register, np.int64)
    hidden = np.zeros(pe.size, dtype=np.bool_)
    for p in np.unique(pe):
        here = pe == p
        codes = register[here]
        hidden[here] = not (codes == VOTER).any() and np.unique(codes // 3).size == 1
    return hidden


def array_cost(rows: int, cols: int, mode: str) -> dict[str, int]:
    """The array's PEs (MAC units with their registers), voters (TMR) and comparators (DMR). The
    model assumes a voter (one majority gate per partial-sum bit) or a comparator fits in the PE's
    cycle, so cycles are those of the unprotected array (DMR's recomputations aside)."""
    checkers = rows * cols if mode != "none" else 0
    return {"pe_replicas": replicas(mode) * rows * cols, "voters": checkers if mode == "tmr" else 0,
            "comparators": checkers if mode == "dmr" else 0}
