"""DMR on the PE array: the comparison against a plain-Python reference, one faulty replica is
detected, the same fault on both replicas is silent, and what ``recompute`` does."""

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
from accel_sim.faults.sites import segments
from accel_sim.hardware import Accelerator, HardwareConfig, LayerFaults, PeFaults, load_preset
from accel_sim.hardware.compute import prepare_layer, weighted_accumulators
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.hardware.redundancy import array_cost, register_codes
from accel_sim.image import Linear
from tests.test_hardware import _reference_pe_sums, random_layer


def _table(faults, hw):
    """PeFaults from [(pe row, pe col, register code, bit, model, mac), …]."""
    return PeFaults.build(hw.rows, hw.cols, *(np.array(v, dtype=np.int64) for v in zip(*faults)))


def _sums_and_flags(layer, x, hw, faults, engine):
    flagged = np.zeros(x.shape[0], dtype=np.bool_)
    got = weighted_accumulators(prepare_layer(layer), torch.from_numpy(x).double(), hw, engine, faults, flagged)
    by_row = (got.permute(0, 2, 3, 1) if got.dim() == 4 else got).reshape(-1, layer.out_channels)
    return by_row.numpy().astype(np.int64), flagged


@settings(max_examples=40, deadline=None)
@given(random_layer(max_bits=10), st.sampled_from(["ws", "os"]), st.sampled_from([(2, 3), (3, 1), (1, 1)]),
       st.sampled_from(["saturate", "wrap"]), st.sampled_from([24, 32]), st.data())
def test_dmr_equals_the_plain_python_comparison(case, dataflow, array, overflow, acc_bits, data):
    """Faults on either replica's registers, several per PE, all permanent (the mask kernel) or
    some at one MAC (the fault-table kernel): both engines give the plain-Python sums (replica
    0's) and flag exactly the images in which the reference's replicas differed."""
    layer, x = case
    assume(layer.weight_format.word_bits + layer.in_format.word_bits <= acc_bits)
    assume(layer.weight.size * x.shape[0] <= 1500)  # the reference is plain Python, two replicas
    hw = HardwareConfig("t", *array, dataflow=dataflow, weight_bits=10, act_bits=10, acc_bits=acc_bits,
                        overflow=overflow, pe_redundancy="dmr")
    widths = {0: layer.weight_format.word_bits, 1: layer.weight_format.word_bits + layer.in_format.word_bits,
              2: acc_bits}
    pixels = 1 if isinstance(layer, Linear) else layer.out_shape[1] * layer.out_shape[2]
    macs = x.shape[0] * pixels * gemm_shape(layer).k * layer.out_channels
    pe = (data.draw(st.integers(0, hw.rows - 1)), data.draw(st.integers(0, hw.cols - 1)))
    transient = data.draw(st.booleans())
    faults = []
    for _ in range(data.draw(st.integers(1, 5))):
        code = data.draw(st.sampled_from(register_codes("dmr")))
        where = pe if data.draw(st.booleans()) else (data.draw(st.integers(0, hw.rows - 1)),
                                                      data.draw(st.integers(0, hw.cols - 1)))
        mac = data.draw(st.integers(0, macs - 1)) if transient and data.draw(st.booleans()) else -1
        faults.append((*where, code, data.draw(st.integers(0, widths[code % 3] - 1)), data.draw(st.integers(0, 2)),
                       mac))
    mismatched = set()
    expected = np.array(_reference_pe_sums(layer, x, hw, faults, mismatched), dtype=np.int64)
    expected_flags = np.zeros(x.shape[0], dtype=np.bool_)
    expected_flags[sorted({m // pixels for m in mismatched})] = True
    for engine in ("faithful", "fast"):
        sums, flags = _sums_and_flags(layer, x, hw, _table(faults, hw), engine)
        np.testing.assert_array_equal(sums, expected, err_msg=engine)
        np.testing.assert_array_equal(flags, expected_flags, err_msg=engine)


@pytest.mark.parametrize("bits", [16, None])
def test_one_faulty_replica_is_detected_and_the_same_fault_on_both_is_silent(bits, zoo_image):
    """AlexNet on a 16×16 OS array, fixed16 and fp32, faults on the registers of three PEs:
    in replica 1 only, the logits are the fault-free ones and every image is flagged; in
    replica 0 only, they are the unprotected array's with those faults, flagged; the same
    stuck-at on the same partial-sum bit of both replicas is the unprotected fault, unflagged."""
    image = zoo_image("alexnet", bits)
    plain = HardwareConfig("t", 16, 16, dataflow="os", weight_bits=16, act_bits=16, acc_bits=48)
    dmr = dataclasses.replace(plain, pe_redundancy="dmr")
    x = load_bundled_sample().images[:3]
    weighted = [i for i, layer in enumerate(image.layers) if hasattr(layer, "weight")]

    def run(hw, faults):
        layers = {i: LayerFaults(pe=_table(faults, hw)) for i in weighted}
        return Accelerator(hw).run(image, x, layer_faults=layers)

    pes = ((0, 0), (1, 2), (13, 15))
    # a flip twice on each PE: the fault-free sums of the same outputs in the same (MAC-by-MAC) order
    clean = run(dmr, [(r, c, 2, 5, 0, -1) for r, c in pes] * 2)
    assert not clean.flagged.any()
    faults = [(r, c, register, bit, 0, -1) for r, c in pes for register in range(3) for bit in (3, 9, 14)]
    unprotected = run(plain, faults)
    assert not np.array_equal(unprotected.raw_logits, clean.raw_logits) and not unprotected.flagged.any()
    replica1 = run(dmr, [(r, c, register + 3, bit, model, mac) for r, c, register, bit, model, mac in faults])
    np.testing.assert_array_equal(replica1.raw_logits, clean.raw_logits)
    assert replica1.flagged.all()
    replica0 = run(dmr, faults)
    np.testing.assert_array_equal(replica0.raw_logits, unprotected.raw_logits)
    assert replica0.flagged.all()
    top = 30 if bits is None else 40
    both = run(dmr, [(0, 0, 2, top, 2, -1), (0, 0, 5, top, 2, -1)])
    alone = run(plain, [(0, 0, 2, top, 2, -1)])
    np.testing.assert_array_equal(both.raw_logits, alone.raw_logits)
    assert not np.array_equal(alone.raw_logits, clean.raw_logits) and not both.flagged.any()


def test_recompute_clears_transient_faults_and_keeps_permanent_flags(zoo_image):
    """Transient partial-sum faults on replica 0: ``flag`` keeps the faulty results and flags
    their images; ``recompute`` reruns those images, which then come out fault-free and
    unflagged. A permanent fault on replica 1 stays flagged after the rerun."""
    image = zoo_image("alexnet", 16)
    flag = dataclasses.replace(load_preset("edge16-os"), pe_redundancy="dmr")
    again = dataclasses.replace(flag, dmr_mismatch="recompute")
    x = load_bundled_sample().images[:6]
    clean = Accelerator(flag).run(image, x)
    spec = DrawSpec(site="pe", rate=3e-2, persistence="transient", registers=("psum",), bits=tuple(range(30, 48)),
                    count_mode="exact")

    def transient(hw):  # the same draw for both hardware (a map names the hardware it was drawn for)
        drawn = draw_fault_map(image, hw, spec, np.random.default_rng(3), len(x))
        return drawn.select((drawn.register == 2) & (drawn.access >= 0))

    flagged = run_with_faults(Accelerator(flag), image, x, transient(flag))
    hit = flagged.flagged
    assert hit.any() and not flagged.recomputed.any()
    assert not np.array_equal(flagged.raw_logits[hit], clean.raw_logits[hit])
    np.testing.assert_array_equal(flagged.raw_logits[~hit], clean.raw_logits[~hit])
    redone = run_with_faults(Accelerator(again), image, x, transient(again))
    np.testing.assert_array_equal(redone.raw_logits, clean.raw_logits)
    np.testing.assert_array_equal(redone.recomputed, hit)
    assert not redone.flagged.any()
    permanent = draw_fault_map(image, again, DrawSpec(site="pe", rate=1e-3, registers=("psum",), count_mode="exact"),
                               np.random.default_rng(4), len(x))
    replica1 = permanent.select(permanent.register == 5)
    assert len(replica1)
    stays = run_with_faults(Accelerator(again), image, x, replica1)
    assert stays.flagged.all() and stays.recomputed.all()
    np.testing.assert_array_equal(stays.raw_logits, clean.raw_logits)


def test_dmr_config_sites_and_cost():
    plain = load_preset("edge16")
    dmr = dataclasses.replace(plain, pe_redundancy="dmr")
    assert "dmr_mismatch" not in dmr.to_dict()
    again = dataclasses.replace(dmr, dmr_mismatch="recompute")
    assert again.to_dict()["dmr_mismatch"] == "recompute" and again.config_hash() != dmr.config_hash()
    with pytest.raises(AccelSimError, match="dmr_mismatch is 'recompute', but pe_redundancy is 'none'"):
        dataclasses.replace(plain, dmr_mismatch="recompute")
    with pytest.raises(AccelSimError, match="dmr_mismatch"):
        dataclasses.replace(dmr, dmr_mismatch="retry")
    assert register_codes("dmr") == (0, 1, 2, 3, 4, 5)
    assert array_cost(16, 16, "dmr") == {"pe_replicas": 512, "voters": 0, "comparators": 256}


def test_drawn_dmr_maps_hit_both_replicas(zoo_image):
    image = zoo_image("alexnet", 16)
    dmr = dataclasses.replace(load_preset("edge16"), pe_redundancy="dmr")
    assert [s.register for s in segments(image, dmr, "pe")] == list(register_codes("dmr"))
    fmap = draw_fault_map(image, dmr, DrawSpec(site="pe", rate=2e-4, count_mode="exact"), np.random.default_rng(1), 4)
    assert {int(c) // 3 for c in fmap.register} == {0, 1}
    with pytest.raises(AccelSimError, match="registers"):
        draw_fault_map(image, dmr, DrawSpec(site="pe", rate=1e-3, registers=("voter",)), np.random.default_rng(2), 4)
