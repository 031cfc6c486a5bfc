"""TMR on the PE array: the vote against a plain-Python reference, one faulty replica is the
fault-free array bit for bit, two faulty replicas and the voter as documented."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from accel_sim.data import load_bundled_sample
from accel_sim.errors import AccelSimError
from accel_sim.faults import draw_fault_map, run_with_faults
from accel_sim.faults.draw import DrawSpec
from accel_sim.faults.io import check_fault_map
from accel_sim.faults.model import FaultMap
from accel_sim.faults.sites import segments
from accel_sim.hardware import Accelerator, HardwareConfig, LayerFaults, PeFaults, load_preset
from accel_sim.hardware.compute import prepare_layer, weighted_accumulators
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.hardware.redundancy import VOTER, outvoted, register_codes, register_name
from accel_sim.image import Linear
from tests.test_hardware import _reference_pe_sums, random_layer


def _widths(layer, hw):
    return {0: layer.weight_format.word_bits, 1: layer.weight_format.word_bits + layer.in_format.word_bits,
            2: hw.datapath.acc_bits}


def _table(faults, hw):
    """PeFaults from [(pe row, pe col, register code, bit, model, mac), …]."""
    return PeFaults.build(hw.rows, hw.cols, *(np.array(v, dtype=np.int64) for v in zip(*faults)))


def _sums(layer, x, hw, faults, engine="faithful"):
    got = weighted_accumulators(prepare_layer(layer), torch.from_numpy(x).double(), hw, engine, faults)
    return (got.permute(0, 2, 3, 1) if got.dim() == 4 else got).reshape(-1, layer.out_channels).numpy().astype(np.int64)


@settings(max_examples=40, deadline=None)
@given(random_layer(max_bits=10), st.sampled_from(["ws", "os"]), st.sampled_from([(2, 3), (3, 1), (1, 1)]),
       st.sampled_from(["saturate", "wrap"]), st.sampled_from([24, 32]), st.data())
def test_tmr_equals_the_plain_python_vote(case, dataflow, array, overflow, acc_bits, data):
    """Faults on any replica's registers and on voters, several per PE (so that two or three
    replicas of one PE are often faulty), all permanent (the mask kernel) or some at one MAC (the
    fault-table kernel): both engines equal the plain-Python vote."""
    layer, x = case
    assume(layer.weight_format.word_bits + layer.in_format.word_bits <= acc_bits)
    assume(layer.weight.size * x.shape[0] <= 1500)  # the reference is plain Python, three replicas
    hw = HardwareConfig("t", *array, dataflow=dataflow, weight_bits=10, act_bits=10, acc_bits=acc_bits,
                        overflow=overflow, pe_redundancy="tmr")
    widths = _widths(layer, hw)
    pixels = 1 if isinstance(layer, Linear) else layer.out_shape[1] * layer.out_shape[2]
    macs = x.shape[0] * pixels * gemm_shape(layer).k * layer.out_channels
    pe = (data.draw(st.integers(0, hw.rows - 1)), data.draw(st.integers(0, hw.cols - 1)))
    faults = []
    transient = data.draw(st.booleans())  # permanent faults alone take the mask kernel
    for _ in range(data.draw(st.integers(2, 6))):
        code = data.draw(st.sampled_from(register_codes("tmr")))
        width = widths[2] if code == VOTER else widths[code % 3]
        where = pe if data.draw(st.booleans()) else (data.draw(st.integers(0, hw.rows - 1)),
                                                      data.draw(st.integers(0, hw.cols - 1)))
        mac = data.draw(st.integers(0, macs - 1)) if transient and data.draw(st.booleans()) else -1
        faults.append((*where, code, data.draw(st.integers(0, width - 1)), data.draw(st.integers(0, 2)), mac))
    expected = np.array(_reference_pe_sums(layer, x, hw, faults), dtype=np.int64)
    for engine in ("faithful", "fast"):
        np.testing.assert_array_equal(_sums(layer, x, hw, _table(faults, hw), engine), expected, err_msg=engine)


@settings(max_examples=25, deadline=None)
@given(random_layer(max_bits=10), st.sampled_from(["ws", "os"]), st.data())
def test_two_faulty_replicas_and_the_voter_act_as_documented(case, dataflow, data):
    """The same stuck-at on the same partial-sum bit of two replicas, or a fault on the voter,
    equals that fault on the partial sum of an unprotected PE; flips on different partial-sum
    bits of two replicas are outvoted bit by bit (the fault-free sums)."""
    layer, x = case
    plain = HardwareConfig("t", 2, 2, dataflow=dataflow, weight_bits=10, act_bits=10, acc_bits=32)
    tmr = dataclasses.replace(plain, pe_redundancy="tmr")
    bit, other = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 31))
    assume(bit != other)
    model = data.draw(st.integers(0, 2))
    unprotected = _sums(layer, x, plain, _table([(0, 1, 2, bit, model, -1)], plain))
    two = _table([(0, 1, 2 + 3, bit, model, -1), (0, 1, 2 + 6, bit, model, -1)], tmr)
    np.testing.assert_array_equal(_sums(layer, x, tmr, two), unprotected)
    np.testing.assert_array_equal(_sums(layer, x, tmr, _table([(0, 1, VOTER, bit, model, -1)], tmr)), unprotected)
    different = _table([(0, 1, 2, bit, 0, -1), (0, 1, 2 + 3, other, 0, -1)], tmr)
    np.testing.assert_array_equal(_sums(layer, x, tmr, different), _sums(layer, x, plain, None))


@pytest.mark.parametrize("bits", [16, None])
def test_one_faulty_replica_per_pe_is_the_fault_free_array_bit_for_bit(bits, zoo_image):
    """Many faults on every register of one replica of each of several PEs, through the faithful
    kernel (not the map's outvoted filter): the logits are the fault-free ones, in fixed point
    and float32; the same faults on an unprotected array change them."""
    image = zoo_image("alexnet", bits)
    plain = HardwareConfig("t", 16, 16, dataflow="os", weight_bits=16, act_bits=16, acc_bits=48)
    tmr = dataclasses.replace(plain, pe_redundancy="tmr")
    x = load_bundled_sample().images[:2]
    pes = (((0, 0), 0), ((1, 2), 1), ((13, 15), 2))
    faults = [(r, c, 3 * replica + register, bit, 0, -1) for (r, c), replica in pes
              for register in range(3) for bit in (3, 9, 14)]
    weighted = [i for i, layer in enumerate(image.layers) if hasattr(layer, "weight")]
    # the fault-free run of the same outputs in the same (MAC by MAC) order: a voter flipped twice
    identity = [(r, c, VOTER, 5, 0, -1) for (r, c), _ in pes] * 2
    clean = Accelerator(tmr).run(image, x, layer_faults={i: LayerFaults(pe=_table(identity, tmr)) for i in weighted})
    if bits is not None:  # in fixed point every order gives the same sums
        np.testing.assert_array_equal(clean.raw_logits, Accelerator(plain).run(image, x).raw_logits)
    layers = {i: LayerFaults(pe=_table(faults, tmr)) for i in weighted}
    np.testing.assert_array_equal(Accelerator(tmr).run(image, x, layer_faults=layers).raw_logits, clean.raw_logits)
    replica0 = [(r, c, register % 3, bit, model, mac) for r, c, register, bit, model, mac in faults]
    layers = {i: LayerFaults(pe=_table(replica0, plain)) for i in weighted}
    assert not np.array_equal(Accelerator(plain).run(image, x, layer_faults=layers).raw_logits, clean.raw_logits)


def test_drawn_tmr_maps_cover_replicas_and_voters_and_single_replica_faults_vanish(zoo_image):
    """The PE site of a TMR array has three replicas' registers and a voter per PE; a drawn map
    hits them all; faults of single replicas are dropped before the run (outvoted) and the
    logits are the fault-free ones; codes of replicas are refused on an unprotected array."""
    image = zoo_image("alexnet", 16)
    plain = load_preset("edge16")
    tmr = dataclasses.replace(plain, pe_redundancy="tmr")
    assert "pe_redundancy" not in plain.to_dict() and tmr.config_hash() != plain.config_hash()
    codes = [s.register for s in segments(image, tmr, "pe")]
    assert codes == list(register_codes("tmr")) and [s.register for s in segments(image, plain, "pe")] == [0, 1, 2]
    assert sum(s.words * s.word_bits for s in segments(image, tmr, "pe")) == 256 * (3 * (16 + 32 + 48) + 48)
    fmap = draw_fault_map(image, tmr, DrawSpec(site="pe", rate=2e-4, count_mode="exact"), np.random.default_rng(1), 4)
    assert {int(c) // 3 for c in fmap.register if c != VOTER} == {0, 1, 2}  # every replica is hit
    assert [register_name(c) for c in (0, 5, 7, VOTER)] == ["weight", "psum.1", "product.2", "voter"]
    pe = fmap.row.astype(np.int64) * tmr.cols + fmap.col
    single = fmap.select(outvoted(pe, fmap.register))
    assert 0 < len(single) < len(fmap)
    x = load_bundled_sample().images[:4]
    clean = Accelerator(tmr).run(image, x).raw_logits
    np.testing.assert_array_equal(run_with_faults(Accelerator(tmr), image, x, single).raw_logits, clean)
    voter = draw_fault_map(image, tmr, DrawSpec(site="pe", rate=1e-3, registers=("voter",)), np.random.default_rng(2), 4)
    assert len(voter) and set(voter.register.tolist()) == {VOTER}
    with pytest.raises(AccelSimError, match=r"registers \['voter'\] name no PE register of hardware edge16"):
        draw_fault_map(image, plain, DrawSpec(site="pe", rate=1e-3, registers=("voter",)), np.random.default_rng(2), 4)
    foreign = FaultMap(site=[3], layer=[-1], tensor=[-1], index=[-1], row=[0], col=[0], register=[5], bit=[0],
                       model=[0], image=[-1], access=[-1])
    check_fault_map(foreign, image, tmr)
    with pytest.raises(AccelSimError, match="register.*not a PE register of edge16"):
        check_fault_map(foreign, image, plain)


def test_outvoted_marks_pes_with_one_faulty_replica_and_no_voter_fault():
    pe = [0, 0, 1, 1, 2, 3, 3]
    register = [0, 2, 1, 4, VOTER, 6, 8]
    np.testing.assert_array_equal(outvoted(pe, register), [True, True, False, False, False, True, True])
