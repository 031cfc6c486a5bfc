"""SEC-DED on memory words: the vectorised codec against a plain one, exhaustively on small words."""

import dataclasses
import itertools

import numpy as np
import pytest

from accel_sim.hardware.ecc import CLEAN, CORRECTED, DETECTED, SecDed, apply_code_faults


def plain_encode(data: int, d: int) -> tuple[int, int]:
    """(code word, code bits) of a d-bit word: extended Hamming, written out bit by bit."""
    r = next(r for r in range(1, 8) if 2**r >= d + r + 1)
    n = d + r + 1
    bits = [0] * n
    data_positions = [p for p in range(1, n) if p & (p - 1)]
    for i, p in enumerate(data_positions):
        bits[p] = (data >> i) & 1
    for j in range(r):
        bits[1 << j] = sum(bits[p] for p in range(1, n) if p & (1 << j)) % 2
    bits[0] = sum(bits[1:]) % 2
    return sum(b << p for p, b in enumerate(bits)), n


def plain_decode(code: int, d: int) -> tuple[int, int]:
    """(data, outcome) of a code word, bit by bit."""
    _, n = plain_encode(0, d)
    bits = [(code >> p) & 1 for p in range(n)]
    syndrome = 0
    for p in range(1, n):
        if bits[p]:
            syndrome ^= p
    odd = sum(bits) % 2
    if odd and syndrome < n:
        bits[syndrome] ^= 1
        outcome = CORRECTED
    elif odd or syndrome:
        return 0, DETECTED
    else:
        outcome = CLEAN
    data_positions = [p for p in range(1, n) if p & (p - 1)]
    return sum(bits[p] << i for i, p in enumerate(data_positions)), outcome


@pytest.mark.parametrize("d, n", [(4, 8), (8, 13), (11, 16), (16, 22), (32, 39)])
def test_code_sizes_and_encoding_equal_the_plain_code(d, n):
    code = SecDed(d)
    assert code.code_bits == n
    data = np.random.default_rng(d).integers(0, 2**d, 300, dtype=np.int64).astype(np.uint64)
    assert code.encode(data).tolist() == [plain_encode(int(v), d)[0] for v in data]


@pytest.mark.parametrize("d", [4, 8, 11, 16])
def test_every_single_error_is_corrected_and_every_double_detected(d):
    """Every data word (a sample of 64 for 16 bits), every single-bit error (corrected to the data)
    and every pair of bits (detected, data 0): exhaustive over the code word's positions."""
    code = SecDed(d)
    n = code.code_bits
    words = np.arange(2**d, dtype=np.uint64) if d <= 11 else np.random.default_rng(0).integers(
        0, 2**d, 64, dtype=np.int64).astype(np.uint64)
    stored = code.encode(words)
    data, outcome = code.decode(stored)
    assert np.array_equal(data, words) and (outcome == CLEAN).all()
    for p in range(n):
        data, outcome = code.decode(stored ^ np.uint64(1 << p))
        assert np.array_equal(data, words) and (outcome == CORRECTED).all(), p
    for p, q in itertools.combinations(range(n), 2):
        data, outcome = code.decode(stored ^ np.uint64((1 << p) | (1 << q)))
        assert (outcome == DETECTED).all() and not data.any(), (p, q)


def test_triple_errors_decode_as_the_plain_decoder_does():
    """Three or more errors: mis-corrected or detected, exactly as the code dictates."""
    code = SecDed(16)
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2**16, 200, dtype=np.int64).astype(np.uint64)
    flips = np.array([sum(1 << int(b) for b in rng.choice(22, int(rng.integers(3, 6)), replace=False))
                      for _ in words], dtype=np.uint64)
    data, outcome = code.decode(code.encode(words) ^ flips)
    expected = [plain_decode(int(c) ^ int(f), 16) for c, f in zip(code.encode(words), flips)]
    assert data.tolist() == [e[0] for e in expected] and outcome.tolist() == [e[1] for e in expected]
    assert {CORRECTED, DETECTED} <= set(outcome.tolist())  # both occur: the code cannot tell


def test_code_faults_act_in_order_and_stuck_at_is_idempotent():
    words = np.array([0b1010, 0b0000], dtype=np.uint64)
    out = apply_code_faults(words, [0, 0, 1, 1], [1, 1, 3, 3], [0, 0, 2, 2])  # flip twice; stuck-at-1 twice
    assert out.tolist() == [0b1010, 0b1000]
    assert apply_code_faults(words, [0, 0], [3, 3], [1, 2]).tolist()[0] == 0b1010  # stuck-at-0 then stuck-at-1
    with pytest.raises(ValueError, match="data_bits"):
        SecDed(0)


def _memory_map(layer: int, index: list[int], bit: list[int], model: list[int]):
    from accel_sim.faults.model import FaultMap

    n = len(index)
    return FaultMap(site=[0] * n, layer=[layer] * n, tensor=[0] * n, index=index, row=[-1] * n, col=[-1] * n,
                    register=[-1] * n, bit=bit, model=model, image=[-1] * n, access=[-1] * n)


def test_weight_memory_with_secded_corrects_singles_and_zeroes_detected_words(zoo_image):
    """On hardware with memory_ecc = "secded", weight-memory faults are drawn over 22-bit code
    words of a 16-bit image; a map with at most one fault per word leaves every logit as it was
    (all corrected), while the same rate without ECC changes them; two faults in one word read
    that word as 0, three in another as the plain decoder reads them."""
    from accel_sim.faults import draw_fault_map, run_with_faults
    from accel_sim.faults.apply import corrupted_parameters
    from accel_sim.faults.draw import DrawSpec
    from accel_sim.faults.sites import segments
    from accel_sim.hardware import Accelerator, load_preset
    from accel_sim.data import load_bundled_sample

    image = zoo_image("alexnet", 16)
    plain = load_preset("edge16")
    ecc = dataclasses.replace(plain, memory_ecc="secded")
    assert {s.word_bits for s in segments(image, ecc, "weight_memory") if s.tensor == 0} == {22}
    assert ecc.config_hash() != plain.config_hash() and "memory_ecc" not in plain.to_dict()
    x = load_bundled_sample().images[:16]
    clean = Accelerator(plain).run(image, x).raw_logits
    spec = DrawSpec(site="weight_memory", rate=1e-5, count_mode="exact")
    fmap = draw_fault_map(image, ecc, spec, np.random.default_rng(4), len(x))
    words = set(zip(fmap.layer.tolist(), fmap.tensor.tolist(), fmap.index.tolist()))
    assert len(fmap) > 1500 and len(words) == len(fmap)  # one fault per word
    assert fmap.bit.max() >= 16  # check bits are hit too
    np.testing.assert_array_equal(run_with_faults(Accelerator(ecc), image, x, fmap).raw_logits, clean)
    unprotected = draw_fault_map(image, plain, spec, np.random.default_rng(4), len(x))
    assert not np.array_equal(run_with_faults(Accelerator(plain), image, x, unprotected).raw_logits, clean)

    layer = next(i for i, l in enumerate(image.layers) if hasattr(l, "weight") and l.weight.size > 100)
    words16 = image.layers[layer].weight.reshape(-1)
    patches, _ = corrupted_parameters(image, ecc, _memory_map(layer, [7, 7, 9, 9, 9, 11], [0, 5, 1, 2, 20, 3],
                                                              [0, 0, 0, 0, 0, 0]))
    got = dict(zip(patches[layer].index.tolist(), patches[layer].values.tolist()))
    code = SecDed(16)
    stored9 = int(code.encode(np.array([int(words16[9]) & 0xFFFF], dtype=np.uint64))[0])
    data9, _ = plain_decode(stored9 ^ (1 << 1) ^ (1 << 2) ^ (1 << 20), 16)
    assert got[7] == 0 and got[11] == words16[11]  # double: detected, read as 0; single: corrected
    assert got[9] == (data9 - 2**16 if data9 >= 2**15 else data9)


@pytest.mark.parametrize("site", ["weight_buffer", "activation_buffer"])
def test_buffers_with_secded_correct_one_fault_per_cell_and_zero_two(site, zoo_image):
    """Under memory_ecc the buffers hold code words (fewer cells in the same KiB): one faulty bit
    per cell, whatever it corrupts, changes no logit; two in one cell make every word stored
    there read as 0, which is what the unprotected buffer with those words zeroed computes."""
    from accel_sim.faults import run_with_faults
    from accel_sim.faults.model import FaultMap
    from accel_sim.hardware import Accelerator, load_preset
    from accel_sim.hardware.memory import buffer
    from accel_sim.data import load_bundled_sample

    image = zoo_image("alexnet", 16)
    plain = dataclasses.replace(load_preset("edge16"), weight_buffer_kib=1.0, activation_buffer_kib=1.0)
    ecc = dataclasses.replace(plain, memory_ecc="secded")
    held = buffer(image, ecc, site)
    assert (held.word_bits, held.capacity) == (22, 1024 * 8 // 22)
    x = load_bundled_sample().images[:8]
    clean = Accelerator(plain).run(image, x).raw_logits
    code = 1 if site == "weight_buffer" else 2
    rng = np.random.default_rng(5)
    cells = rng.choice(held.capacity, 40, replace=False)

    def cell_map(index, bit):
        n = len(index)
        return FaultMap(site=[code] * n, layer=[-1] * n, tensor=[-1] * n, index=index, row=[-1] * n, col=[-1] * n,
                        register=[-1] * n, bit=bit, model=[0] * n, image=[-1] * n, access=[-1] * n)

    singles = cell_map(cells.tolist(), rng.integers(0, 22, cells.size).tolist())
    np.testing.assert_array_equal(run_with_faults(Accelerator(ecc), image, x, singles).raw_logits, clean)
    doubles = cell_map([int(cells[0])] * 2, [3, 19])
    faulty = run_with_faults(Accelerator(ecc), image, x, doubles).raw_logits
    assert not np.array_equal(faulty, clean)
    # the same words zeroed without ECC: bits 0..15 of that cell forced to 0 on a 16-bit buffer
    # whose cell holds the same words (equal capacity)
    kib = held.capacity * 16 / 8192
    same_cells = dataclasses.replace(plain, weight_buffer_kib=kib, activation_buffer_kib=kib)
    assert buffer(image, same_cells, site).capacity == held.capacity
    zeroed = cell_map([int(cells[0])] * 16, list(range(16)))
    zeroed = dataclasses.replace(zeroed, model=np.full(16, 1, np.int8))
    np.testing.assert_array_equal(faulty, run_with_faults(Accelerator(same_cells), image, x, zeroed).raw_logits)
