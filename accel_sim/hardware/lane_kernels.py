"""Numba kernel for WS partial-sum register faults, computed as corrections to the clean sums.

A partial-sum fault of PE (r, c) acts on the running sum after every MAC k ≡ r (mod rows) of the
filters n ≡ c, and what it does depends on that sum's bits, so the running sums must be formed:
1/cols of the layer's MACs. Where the faults touch bits below 31 this happens in int32 lanes: a
lane holds the true running sum modulo 2**32, which has the same bits there, so the lanes
follow the faulty running sums bit-exactly while what the faults change is counted beside them.
Faults on higher bits use float64 lanes, exact below 2**53. The result is the whole answer while
no partial sum saturates (the caller bounds them) or when the accumulator wraps (the difference
then wraps with the sum).

Lanes are the (output column, image) pairs of one output row: with the input batch-last
(H, C, W, B), a kernel position of a stride-1 layer reads one contiguous run of lanes, so the
multiply-adds vectorise without gathers. Words of at most 16 bits are stored as pairs of
channels in one int32, and a pair is multiplied and added in one step (x86: ``vpdpwssd``, 32
MACs per 512-bit instruction against 16 for a 32-bit multiply): numba's loops do not emit that,
so :func:`_lane_block` writes the LLVM vector IR itself, for blocks of 4 filters × 64 lanes held in
registers through a run. Pairs start at an even channel or, with ``offset`` 1, at an odd one:
the caller picks the pairing that puts the fault points between pairs, so that no run shares a
pair with the next and its weights are read where they lie. The Python that checks inputs, picks the
lane type and splits the work is :func:`accel_sim.hardware.pe_faults.faulty_column_blocks`."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_VECTOR = 16  # lanes per vector (int32: one 512-bit register)
LANE_STEP = _VECTOR  # lane counts (the padded batch) are multiples of it
_HIGH = np.int32(-65536)  # 0xFFFF0000: keeps a weight pair's high half (its later channel)
_LOW = np.int32(0xFFFF)  # keeps its low half (its earlier channel)


@njit(cache=True, parallel=True)
def batch_last_pairs(x, offset, out):
    """Pack float64 (B, H, W, C) words, exact 16-bit integers, into int32 ``out``
    (H, ⌈(C + offset)/2⌉, W, B'), B' ≥ B: channel c in pair (c + offset) // 2, the low half for
    even c + offset, zeros where there is no channel or image (``offset`` 0 or 1)."""
    nb, h, wd, ch = x.shape
    for t in prange(h * wd):
        y, xx = t // wd, t % wd
        for p in range(out.shape[1]):
            c = 2 * p - offset  # the low half's channel; c + 1 the high half's
            if 0 <= c and c + 1 < ch:
                for b in range(nb):  # strided reads, contiguous writes: faster than the reverse here
                    high, low = np.int64(x[b, y, xx, c + 1]), np.int64(x[b, y, xx, c])
                    out[y, p, xx, b] = np.int32(np.int32(high << 16) | (low & 0xFFFF))
            elif c < 0:
                for b in range(nb):
                    out[y, p, xx, b] = np.int32(np.int64(x[b, y, xx, c + 1]) << 16)
            else:
                for b in range(nb):
                    out[y, p, xx, b] = np.int32(np.int64(x[b, y, xx, c]) & 0xFFFF)
            for b in range(nb, out.shape[3]):
                out[y, p, xx, b] = 0


@njit(cache=True)
def column_pairs(weights, positions, offset):
    """int64 (J, positions · C) words of at most 16 bits (K in im2col order: kernel position,
    then channel) as int32 (positions, ⌈(C + offset)/2⌉, J) channel pairs, packed as
    :func:`batch_last_pairs` packs the input."""
    n, depth = weights.shape
    ch = depth // positions
    out = np.zeros((positions, (ch + offset + 1) // 2, n), dtype=np.int32)
    for position in range(positions):
        for c in range(ch):
            p, half = (c + offset) // 2, (c + offset) % 2
            for j in range(n):
                word = np.int32(weights[j, position * ch + c] & 0xFFFF) << (16 * half)
                out[position, p, j] |= np.int32(word)
    return out


def _splat(builder, value, vector):
    """LLVM IR: ``value`` in every element of ``vector`` (a type)."""
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count)
    return builder.shuffle_vector(one, one, zeros)


def _pair_sums(builder, lanes, x_pairs, w_pair):
    """LLVM IR: the lanes' a₀·w₀ + a₁·w₁ from int32 words of (a₀, a₁) 16-bit pairs and one int32
    (w₀, w₁) pair, in the lanes' type. Plain vector IR that x86 lowers to ``pmaddwd`` (int32)
    and any target can compile; int32 sums wrap like the lanes."""
    n = lanes.count
    halves = [builder.bitcast(v, ir.VectorType(ir.IntType(16), 2 * n))
              for v in (x_pairs, _splat(builder, w_pair, ir.VectorType(ir.IntType(32), n)))]
    wide = ir.VectorType(lanes.element, 2 * n)
    if isinstance(lanes.element, ir.IntType):
        products = builder.mul(*(builder.sext(v, wide) for v in halves))
    else:  # exact: products below 2**31, sums below 2**53 (the caller checks)
        products = builder.fmul(*(builder.sitofp(v, wide) for v in halves))
    even, odd = (builder.shuffle_vector(products, products, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                                        list(range(k, 2 * n, 2)))) for k in (0, 1))
    return _add(builder, even, odd)


def _add(builder, a, b):
    return builder.add(a, b) if isinstance(a.type.element, ir.IntType) else builder.fadd(a, b)


def _fault_point(builder, sums, units, masks, low):
    """LLVM IR: a partial-sum register's (and, or, xor) ``masks`` (int64 values, applied in that
    order) on lanes ``sums``
    (int32: modulo 2**32, the masks' low bits; float64: exact integers, through int64); returns
    (the faulty sums, ``units`` plus their change in units of 2**``low``)."""
    n, element = sums.type.count, sums.type.element
    as_int = ir.IntType(32) if isinstance(element, ir.IntType) else ir.IntType(64)
    vector = ir.VectorType(as_int, n)
    before = sums if as_int is element else builder.fptosi(sums, vector)
    and_, or_, xor = masks
    # (v & and) | or == (v & (and & ~or)) ^ or: one ternary bit operation with the xor
    keep, toggle, shift = (_splat(builder, builder.trunc(v, as_int) if as_int.width < 64 else v, vector)
                           for v in (builder.and_(and_, builder.not_(or_)), builder.xor(or_, xor), low))
    after = builder.xor(builder.and_(before, keep), toggle)
    change = builder.ashr(builder.sub(after, before), shift)
    if as_int is element:
        return after, builder.add(units, change)
    return builder.sitofp(after, sums.type), builder.fadd(units, builder.sitofp(change, sums.type))


def _lane_block(filters: int, vectors: int):
    """An intrinsic ``run(sums, units, row, lane, x, first, count, src, weights, w_first, w_col,
    fault, s_and, s_or, s_xor, low)``: a run of channel pairs into a block of lanes, ``filters``
    rows ``row`` … of ``sums`` by ``vectors`` vectors of _VECTOR lanes from ``lane`` on, then, if
    ``fault``, the partial-sum register's masks on them (``units`` gaining the change in units
    of 2**``low``)::

        sums[row + f, lane + q] += Σ_i pair_sum(x[first + i, src + q],
                                                weights[w_first + i, w_col + f]),  i < count

    The block stays in registers meanwhile (filters·vectors independent chains of multiply-adds;
    each x vector is loaded once for all the block's filters). ``sums``, ``units`` 2-D int32 or
    float64; ``x`` 2-D (pairs, lanes) int32; ``weights`` 2-D (pairs, filters) int32 pairs; all
    C-contiguous. Masks and ``low`` int64."""

    @intrinsic
    def run(typingctx, sums, units, row, lane, x, first, count, src, weights, w_first, w_col, fault, s_and, s_or, s_xor,
            low):
        arrays = (sums, units, x, weights)
        if not (all(isinstance(a, types.Array) and a.ndim == 2 for a in arrays) and units == sums
                and sums.dtype in (types.int32, types.float64) and x.dtype == weights.dtype == types.int32):
            return None
        sig = types.void(sums, units, row, lane, x, first, count, src, weights, w_first, w_col, fault, s_and, s_or, s_xor,
                         low)

        def codegen(context, builder, signature, args):
            intp = context.get_value_type(types.intp)

            def constant(value):
                return ir.Constant(intp, value)

            lane_vector = ir.VectorType(context.get_value_type(signature.args[0].dtype), _VECTOR)
            pair_vector = ir.VectorType(ir.IntType(32), _VECTOR)
            sums_array, units_array, x_array, weight_array = (
                context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 1, 4, 8))
            row, lane_index, first, count, src, w_first, w_col = (
                context.cast(builder, args[i], signature.args[i], types.intp) for i in (2, 3, 5, 6, 7, 9, 10))
            masks = [context.cast(builder, args[i], signature.args[i], types.int64) for i in (12, 13, 14)]
            low = context.cast(builder, args[15], signature.args[15], types.int64)
            sums_row, x_row, weight_row = (cgutils.unpack_tuple(builder, a.shape, 2)[1]
                                           for a in (sums_array, x_array, weight_array))

            def block(array):  # pointers to the block's vectors, filter-major
                starts = [builder.add(builder.mul(builder.add(row, constant(f)), sums_row), lane_index)
                          for f in range(filters)]
                return [builder.bitcast(builder.gep(array.data, [builder.add(start, constant(k * _VECTOR))]),
                                        lane_vector.as_pointer()) for start in starts for k in range(vectors)]

            targets = block(sums_array)
            totals = [cgutils.alloca_once_value(builder, builder.load(t, align=4)) for t in targets]
            with cgutils.for_range(builder, count, intp=intp) as loop:
                x_start = builder.add(builder.mul(builder.add(first, loop.index), x_row), src)
                x_pairs = [builder.load(builder.bitcast(builder.gep(x_array.data, [builder.add(x_start, constant(k * _VECTOR))]),
                                                        pair_vector.as_pointer()), align=4) for k in range(vectors)]
                w_start = builder.add(builder.mul(builder.add(w_first, loop.index), weight_row), w_col)
                for f in range(filters):
                    weight = builder.load(builder.gep(weight_array.data, [builder.add(w_start, constant(f))]))
                    for k in range(vectors):
                        total = totals[f * vectors + k]
                        products = _pair_sums(builder, lane_vector, x_pairs[k], weight)
                        builder.store(_add(builder, builder.load(total), products), total)
            fault_flag = context.cast(builder, args[11], signature.args[11], types.boolean)
            with builder.if_then(builder.trunc(fault_flag, ir.IntType(1)) if fault_flag.type.width > 1 else fault_flag):
                for total, unit in zip(totals, block(units_array)):
                    after, changed = _fault_point(builder, builder.load(total), builder.load(unit, align=4), masks, low)
                    builder.store(after, total)
                    builder.store(changed, unit, align=4)
            for target, total in zip(targets, totals):
                builder.store(builder.load(total), target, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return run


# 4 filters × 4 vectors: 16 accumulators in registers, 4 x loads per 16 multiply-adds (A/B on
# captured VGG-16 calls: 2, 6 or 8 filters and 1 or 2 vectors were no faster)
_BLOCK_FILTERS, _BLOCK_VECTORS = 4, 4
_run_block = _lane_block(_BLOCK_FILTERS, _BLOCK_VECTORS)
_run_filters = _lane_block(_BLOCK_FILTERS, 1)  # the last lanes of a run, one vector at a time
_run_lanes = _lane_block(1, _BLOCK_VECTORS)  # filters left over from the blocks of four
_run_vector = _lane_block(1, 1)


@njit(cache=True, inline="always")
def _accumulate(acc, units, scratch, x, c, count, wp, offset, channels, j0, lane, src, n, fault, m, low):
    """Clean MACs of channels c .. c + count − 1 at one kernel position into lanes
    ``lane .. lane + n − 1`` (n a multiple of LANE_STEP) of the column's filters j0 … (``acc``
    row j: filter j0 + j, whose weight pairs at this position are ``wp[:, j0 + j]``), with ``x``
    (pairs, lanes) the input row, then, if ``fault``, the partial-sum masks ``m`` (and, or, xor)
    on those lanes (``units`` gains their change in units of 2**low); blocks of _BLOCK_FILTERS
    filters share each load of ``x``. A pair that the run shares with a channel of another run
    has that channel's weight zeroed (``scratch``: (pairs, _BLOCK_FILTERS) for such a run's
    weight pairs); the pairs of other runs are read in place."""
    first = (c + offset) // 2
    words = (c + count - 1 + offset) // 2 + 1 - first
    # a pair shared with a channel of another run has that channel's weight zeroed in scratch
    split_first = (c + offset) % 2 == 1 and c > 0
    split_last = (c + count + offset) % 2 == 1 and c + count < channels
    step = _BLOCK_VECTORS * _VECTOR
    for jb in range(0, acc.shape[0], _BLOCK_FILTERS):
        size = min(_BLOCK_FILTERS, acc.shape[0] - jb)
        weights, w_first, w_col = wp, first, j0 + jb
        if split_first or split_last:
            weights, w_first, w_col = scratch, 0, 0
            for f in range(size):
                for i in range(words):
                    scratch[i, f] = wp[first + i, j0 + jb + f]
                if split_first:
                    scratch[0, f] &= _HIGH
                if split_last:
                    scratch[words - 1, f] &= _LOW
        if size == _BLOCK_FILTERS:
            q = 0
            while q + step <= n:
                _run_block(acc, units, jb, lane + q, x, first, words, src + q, weights, w_first, w_col, fault,
                           m[0], m[1], m[2], low)
                q += step
            for q in range(q, n, _VECTOR):
                _run_filters(acc, units, jb, lane + q, x, first, words, src + q, weights, w_first, w_col, fault,
                             m[0], m[1], m[2], low)
            continue
        for f in range(size):
            q = 0
            while q + step <= n:
                _run_lanes(acc, units, jb + f, lane + q, x, first, words, src + q, weights, w_first, w_col + f, fault,
                           m[0], m[1], m[2], low)
                q += step
            for q in range(q, n, _VECTOR):
                _run_vector(acc, units, jb + f, lane + q, x, first, words, src + q, weights, w_first, w_col + f,
                            fault, m[0], m[1], m[2], low)


@njit(cache=True, inline="always")
def _add_faulty_products(sums, diff, xs, half, weight, faulty_weight, p_and, p_or, p_xor, shift):
    """Products through faulty weight/product registers, in int32 (``shift`` = 32 − product
    bits), into lanes ``sums``; ``diff`` gains faulty − clean product. The activations are the
    ``half`` (0 low, 1 high) of the pairs ``xs``."""
    for q in range(xs.shape[0]):
        a = np.int32(xs[q] << (16 - 16 * half)) >> 16
        product = np.int32((np.int32(a * faulty_weight) & p_and) | p_or) ^ p_xor
        product = np.int32(product << shift) >> shift
        diff[q] += np.int64(product) - np.int64(np.int32(a * weight))
        sums[q] += product


@njit(cache=True, inline="always")
def _fault_lanes(sums, units, j, lo, hi, x, weights, m, low):
    """The partial-sum masks ``m`` (and, or, xor) alone on lanes ``lo .. hi − 1`` (multiples of
    LANE_STEP) of row ``j`` of ``sums``: a run of no pairs (``x``, ``weights``: any)."""
    for q in range(lo, hi, _VECTOR):
        _run_vector(sums, units, j, q, x, 0, 0, 0, weights, 0, 0, True, m[0], m[1], m[2], low)


@njit(cache=True, parallel=True, fastmath=True)
def partial_sum_corrections(x, images, channels, offset, wp, lane_type, oh, ow, block_cols, group, kh, kw, sh, sw,
                            ph, pw, period, has_fault, masks, weight_bits, product_bits, low):
    """Faulty − clean accumulators of the outputs one faulty PE column touches under WS, exact.

    Parameters
    ----------
    x : int32 (H, ⌈(C + offset)/2⌉, W, B')
        Input words of at most 16 bits in channel pairs, batch last, from :func:`batch_last_pairs`
        (a linear layer: H = W = 1); B' is a multiple of LANE_STEP.
    images, channels : int
        B and C: the real images and channels.
    offset : int
        0 or 1: how ``x`` and ``wp`` pair the channels (:func:`batch_last_pairs`).
    wp : int32 (kh · kw, ⌈(C + offset)/2⌉, J)
        The weights of the faulty column's J filters (words of at most 16 bits) in the same
        channel pairs, per kernel position (kernel row, kernel col), that is im2col order
        (:func:`column_pairs`).
    lane_type : int32 or float64 (0,)
        Gives the lanes' type: int32 lanes hold running sums modulo 2**32; float64 lanes hold them
        exactly (the caller guarantees every partial sum is below 2**53).
    oh, ow : int
        Output height and width (1, 1 for a linear layer).
    block_cols, group : int
        A parallel task is ``block_cols`` output columns of one output row (its lanes: their
        (column, image) pairs) and ``group`` filters.
    kh, kw, sh, sw, ph, pw : int
        Kernel, stride and padding (1, 1, 1, 1, 0, 0 for a linear layer).
    period, has_fault : int, bool (period,)
        MAC k passes a faulty PE when ``has_fault[k % period]`` (period = array rows).
    masks : int64 (period, 3, 3)
        Per residue and register (weight, product, partial sum): the (and, or, xor) masks of the
        composed faults; identity (-1, 0, 0). Partial-sum masks touch only bits below the sign
        bits of the lanes and of the accumulator (the caller checks).
    weight_bits, product_bits : int
        Widths of the weight and product registers (bits); products are formed in int32, so
        ``product_bits`` ≤ 32.
    low : int
        The lowest bit the partial-sum masks touch: their changes are counted in units of 2**low
        in lanes of ``lane_type``, which the caller checks cannot overflow.

    Returns
    -------
    int64 (oh · ow · B, J)
        What the faults add to each output's accumulator, rows pixel-major (pixel · B + image);
        valid while no partial sum saturates (or, for a wrapping accumulator, before the final
        wrap).
    """
    h, pairs, wd, nb = x.shape
    ch = channels
    flat = x.reshape((h, pairs, wd * nb))
    n_filters = wp.shape[2]
    out = np.empty((images * oh * ow, n_filters), dtype=np.int64)
    clean_run, registers_clean = _clean_runs(period, has_fault, masks)
    groups = (n_filters + group - 1) // group
    col_blocks = (ow + block_cols - 1) // block_cols
    for task in prange(oh * col_blocks * groups):
        j0 = task % groups * group
        oy, oxa = task // groups // col_blocks, task // groups % col_blocks * block_cols
        oxb = min(ow, oxa + block_cols)
        lanes = (oxb - oxa) * nb  # lane (ox − oxa)·nb + image
        jn = min(n_filters - j0, group)  # row j: filter j0 + j
        scratch = np.empty((pairs, _BLOCK_FILTERS), dtype=np.int32)  # a run's weight pairs with a half zeroed
        acc = np.zeros((jn, lanes), dtype=lane_type.dtype)  # the faulty running sums (int32: modulo 2**32)
        units = np.zeros((jn, lanes), dtype=lane_type.dtype)  # partial-sum changes / 2**low
        diff = np.zeros((jn, 0 if registers_clean else lanes), dtype=np.int64)  # faulty − clean products
        r = 0
        for ki in range(kh):
            y = oy * sh + ki - ph
            for kj in range(kw):
                segments, size, first_src, first_lane, covered = _window_lanes(oxa, oxb, y, h, wd, kj, sw, pw, nb)
                r = _position_macs(acc, units, diff, scratch, flat, y, wp[ki * kw + kj], offset, ch, j0, jn, r,
                                   period, clean_run, registers_clean, has_fault, masks, weight_bits,
                                   product_bits, low, segments, size, first_src, first_lane, sw * nb, covered, lanes)
        _write_rows(out, units, diff, registers_clean, low, oy, oxa, oxb, ow, images, nb, j0, jn)
    return out


@njit(cache=True, inline="always")
def _window_lanes(oxa, oxb, y, h, wd, kj, sw, pw, nb):
    """Where output columns ``oxa .. oxb − 1`` of input row ``y`` read at kernel column ``kj``:
    (segments, lanes per segment, first source lane, first lane, end of the covered lanes).
    Columns whose window reads padding are left out; stride 1 gives one segment of lanes,
    otherwise one segment of ``nb`` lanes per output column."""
    ox0 = max(oxa, -((kj - pw) // sw))
    ox1 = min(oxb, (wd - 1 + pw - kj) // sw + 1)
    if y < 0 or y >= h or ox1 <= ox0:
        ox0, ox1 = oxa, oxa
    segments = (1 if sw == 1 else ox1 - ox0) if ox1 > ox0 else 0
    size = (ox1 - ox0) * nb if sw == 1 else nb
    first_lane = (ox0 - oxa) * nb
    return segments, size, (ox0 * sw + kj - pw) * nb, first_lane, first_lane + (ox1 - ox0) * nb


@njit(cache=True, inline="always")
def _position_macs(acc, units, diff, scratch, flat, y, wp_position, offset, ch, j0, jn, r, period, clean_run,
                   registers_clean, has_fault, masks, weight_bits, product_bits, low, segments, size, first_src,
                   first_lane, src_step, covered, lanes):
    """The MACs of every channel at one kernel position (weights ``wp_position``), the first on
    array row residue ``r``: clean runs in lanes, then the MAC at each fault point. Returns the
    residue after the last channel."""
    c = 0
    while c < ch:
        # clean registers: the MAC at a fault point is a clean one, so it joins the run
        count = min(ch - c, clean_run[r] + (1 if registers_clean else 0))
        last = (r + count - 1) % period  # residue of the run's last MAC
        fault = registers_clean and has_fault[last]  # else: a faulty product follows first
        m = masks[last, 2]
        for s in range(segments):
            _accumulate(acc, units, scratch, flat[y], c, count, wp_position, offset, ch, j0,
                        first_lane + s * size, first_src + s * src_step, size, fault, m, low)
        c += count
        r = (r + count) % period
        if registers_clean:
            if fault:  # the lanes of outputs whose window has padding here
                for j in range(jn):
                    for lo, hi in ((0, first_lane), (covered, lanes)):
                        _fault_lanes(acc, units, j, lo, hi, flat[0], scratch, m, low)
            continue
        if c == ch:
            break
        _faulty_mac(acc, units, diff, scratch, flat, y, wp_position, (c + offset) // 2, (c + offset) % 2, j0, jn,
                    masks[r], weight_bits, product_bits, low, segments, first_src, first_lane, size, src_step,
                    covered, lanes)
        c += 1
        r = (r + 1) % period
    return r


@njit(cache=True)
def _clean_runs(period, has_fault, masks):
    """Per residue r, the MACs from r up to the next fault point (int64 (period,)), and whether
    the weight and product registers are clean (every product is then the clean one)."""
    clean_run = np.zeros(period, dtype=np.int64)
    registers_clean = True
    for r in range(period):
        while clean_run[r] < period and not has_fault[(r + clean_run[r]) % period]:
            clean_run[r] += 1
        for reg in range(2):
            registers_clean &= masks[r, reg, 0] == -1 and masks[r, reg, 1] == 0 and masks[r, reg, 2] == 0
    return clean_run, registers_clean


@njit(cache=True, inline="always")
def _faulty_mac(acc, units, diff, scratch, flat, y, wp_position, pair, half, j0, jn, m, weight_bits, product_bits,
                low, segments, first_src, first_lane, size, src_step, covered, lanes):
    """One MAC through a PE with weight- or product-register faults (masks ``m``, (3, 3)), for
    the ``jn`` filters from ``j0``: the faulty products join the running sums (``diff`` keeps
    faulty − clean), padding lanes get a zero activation's faulty product, then the partial-sum
    register's faults act."""
    p_and, p_or, p_xor = np.int32(m[1, 0]), np.int32(m[1, 1]), np.int32(m[1, 2])
    shift = 32 - product_bits
    zero_product = np.int32(np.int32(p_or ^ p_xor) << shift) >> shift  # a zero activation's product
    for j in range(jn):
        weight = np.int64(wp_position[pair, j0 + j]) << (48 - 16 * half) >> 48
        faulty_weight = ((weight & m[0, 0]) | m[0, 1]) ^ m[0, 2]
        faulty_weight = (faulty_weight << (64 - weight_bits)) >> (64 - weight_bits)
        for s in range(segments):
            src, lane = first_src + s * src_step, first_lane + s * size
            _add_faulty_products(acc[j, lane:lane + size], diff[j, lane:lane + size], flat[y, pair, src:src + size],
                                 half, np.int32(weight), np.int32(faulty_weight), p_and, p_or, p_xor, shift)
        if zero_product != 0:  # padding lanes: the product register's faults still act
            for lo, hi in ((0, first_lane), (covered, lanes)):
                for q in range(lo, hi):
                    diff[j, q] += zero_product
                    acc[j, q] += zero_product
        _fault_lanes(acc, units, j, 0, lanes, flat[0], scratch, m[2], low)


@njit(cache=True, inline="always")
def _write_rows(out, units, diff, registers_clean, low, oy, oxa, oxb, ow, images, nb, j0, jn):
    """A task's corrections (units of 2**low, plus faulty − clean products) into its block of
    result rows, pixel-major."""
    for ox in range(oxa, oxb):
        for b in range(images):
            row = (oy * ow + ox) * images + b  # pixel-major: a task writes one block of rows
            q = (ox - oxa) * nb + b
            for j in range(jn):
                total = np.int64(units[j, q]) << low
                out[row, j0 + j] = total if registers_clean else total + diff[j, q]
