"""A plain-Python, MAC-by-MAC reference of PE-fault semantics (Python integers, no numpy maths),
the yardstick for the numba faithful kernel and the fast strategies.

Per MAC of output (m, n) and window element k, in window order, on the PE the dataflow assigns:
the weight register may be corrupted, then the product register, then the accumulator adds the
product through its overflow mode and the partial-sum register may be corrupted. A fault acts on
the register's two's complement pattern (weight, product or accumulator width) and the result is
read back as a signed number; a PE's faults apply in table order; a transient fault acts at one
MAC ``(m·K + k)·N + n`` only.

Under DMR and TMR each of two or three replicas does that from the same partial sum with its own
registers (register code ``3 · replica + r``). Under DMR the PE's output is replica 0's and the
output row is flagged where the replicas' patterns differ; under TMR it is the bitwise majority
of the three patterns, then the voter's faults (code 9) act on it.
"""

from __future__ import annotations

FLIP, STUCK_AT_0, STUCK_AT_1 = 0, 1, 2


def signed(value: int, width: int) -> int:
    """The ``width``-bit two's complement pattern of ``value`` read as a signed number."""
    pattern = value & ((1 << width) - 1)
    return pattern - (1 << width) if pattern >> (width - 1) else pattern


def corrupt(value: int, width: int, bit: int, model: int) -> int:
    if model == FLIP:
        value ^= 1 << bit
    elif model == STUCK_AT_0:
        value &= ~(1 << bit)
    else:
        value |= 1 << bit
    return signed(value, width)


def accumulate(acc: int, term: int, acc_bits: int, overflow: str) -> int:
    low, high = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    total = acc + term
    if overflow == "wrap":
        return signed(total, acc_bits)
    return min(max(total, low), high)


def im2col(x: list, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> list[list[int]]:
    """One image (C, H, W) nested lists → rows per output pixel, columns in (kernel row, kernel
    col, channel) order, zeros outside the image."""
    c_in, h, w = len(x), len(x[0]), len(x[0][0])
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    rows = []
    for i in range(oh):
        for j in range(ow):
            row = []
            for u in range(kh):
                for v in range(kw):
                    for c in range(c_in):
                        y, z = i * sh - ph + u, j * sw - pw + v
                        row.append(x[c][y][z] if 0 <= y < h and 0 <= z < w else 0)
            rows.append(row)
    return rows


def majority(a: int, b: int, c: int, width: int) -> int:
    """Bit by bit, the value two of the three ``width``-bit patterns agree on (signed)."""
    mask = (1 << width) - 1
    a, b, c = a & mask, b & mask, c & mask
    return signed((a & b) | (a & c) | (b & c), width)


def replica_mac(acc: int, x: int, w: int, live: list, replica: int, widths: tuple[int, int, int],
                overflow: str) -> int:
    """One replica's partial-sum output for ``acc + x · w`` with its faults among ``live``."""
    mine = [f for f in live if f[2] != 9 and f[2] // 3 == replica]
    for f in mine:
        if f[2] % 3 == 0:
            w = corrupt(w, widths[0], f[3], f[4])
    product = x * w
    for f in mine:
        if f[2] % 3 == 1:
            product = corrupt(product, widths[1], f[3], f[4])
    acc = accumulate(acc, product, widths[2], overflow)
    for f in mine:
        if f[2] % 3 == 2:
            acc = corrupt(acc, widths[2], f[3], f[4])
    return acc


def faulty_sums(a: list[list[int]], b: list[list[int]], pixels: int, dataflow, rows: int, cols: int,
                faults: list[tuple[int, ...]], widths: tuple[int, int, int], overflow: str,
                replicas: int = 1, mismatched: set | None = None) -> list[list[int]]:
    """Σ_k over ``a`` (M × K, im2col rows of every image, ``pixels`` per image) and ``b`` (K × N),
    MAC by MAC with ``faults`` = [(pe row, pe col, register, bit, model, mac or -1), …];
    ``widths`` = (weight, product, accumulator) bits; ``dataflow.pe_of`` places each MAC;
    ``replicas`` 2 for DMR (the rows ``m`` where a comparison failed go into ``mismatched``),
    3 for TMR."""
    depth, filters = len(b), len(b[0])
    out = []
    for m, a_row in enumerate(a):
        out_row = []
        for n in range(filters):
            acc = 0
            for k in range(depth):
                r, c = (int(v) for v in dataflow.pe_of(m % pixels, k, n, rows, cols))
                mac = (m * depth + k) * filters + n
                live = [f for f in faults if (f[0], f[1]) == (r, c) and f[5] in (-1, mac)]
                outputs = [replica_mac(acc, a_row[k], b[k][n], live, i, widths, overflow) for i in range(replicas)]
                if replicas == 2 and outputs[0] != outputs[1] and mismatched is not None:
                    mismatched.add(m)
                acc = majority(*outputs, widths[2]) if replicas == 3 else outputs[0]
                for f in live:
                    if f[2] == 9:
                        acc = corrupt(acc, widths[2], f[3], f[4])
            out_row.append(acc)
        out.append(out_row)
    return out
