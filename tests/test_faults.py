"""Fault sites, drawing statistics, exact replay, semantics against slow computations, bad maps."""

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from accel_sim.cli import main
from accel_sim.data import load_bundled_sample
from accel_sim.faults import (
    DrawSpec,
    FaultMap,
    check_fault_map,
    draw_fault_map,
    job_rng,
    read_fault_map,
    run_with_faults,
    site_bits,
    write_fault_map,
)
from accel_sim.faults.apply import corrupted_parameters, layer_faults
from accel_sim.faults.sites import buffer_capacity
from accel_sim.hardware import Accelerator, HardwareConfig, PeFaults
from accel_sim.hardware.compute import prepare_layer, weighted_accumulators
from accel_sim.image import WeightedLayer
from accel_sim.image.export import export_model
from accel_sim.image.hdf5 import write_image
from accel_sim.numerics import flip, stuck_at_1


def small_net():
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(12 * 8 * 8, 20), nn.ReLU(), nn.Linear(20, 10),
    ).eval()


@pytest.fixture(scope="module")
def images():
    return load_bundled_sample("test").images[:6]


@pytest.fixture(scope="module")
def small_images(images):
    cal = load_bundled_sample("train").images[:32]
    return {fmt: export_model(small_net(), cal, bits, model_name="small") for fmt, bits in (("fixed16", 16), ("fp32", None))}


# buffers of 1 KiB, so that faulty cells are hit many times
HW = {df: HardwareConfig("t", 4, 4, dataflow=df, weight_buffer_kib=1.0, activation_buffer_kib=1.0) for df in ("ws", "os")}
RATES = {"weight_memory": 3e-5, "weight_buffer": 2e-3, "activation_buffer": 2e-3, "pe": 5e-3}


@pytest.mark.parametrize("fmt", ["fixed16", "fp32"])
@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("site", list(RATES))
@pytest.mark.parametrize("persistence", ["permanent", "transient"])
def test_replay_from_file_is_identical(small_images, images, fmt, dataflow, site, persistence, tmp_path):
    image, hw = small_images[fmt], HW[dataflow]
    spec = DrawSpec(site, RATES[site], persistence=persistence)
    fmap = draw_fault_map(image, hw, spec, job_rng(11, f"{site}/{persistence}"), n_images=len(images))
    assert len(fmap) > 0
    acc = Accelerator(hw)
    first = run_with_faults(acc, image, images, fmap)
    loaded = read_fault_map(write_fault_map(fmap, tmp_path / "map.h5"))
    again = run_with_faults(acc, image, images, loaded)
    np.testing.assert_array_equal(first.raw_logits.view(np.uint32) if fmt == "fp32" else first.raw_logits,
                                  again.raw_logits.view(np.uint32) if fmt == "fp32" else again.raw_logits)
    np.testing.assert_array_equal(first.predictions, again.predictions)
    redrawn = draw_fault_map(image, hw, spec, job_rng(11, f"{site}/{persistence}"), n_images=len(images))
    assert all(np.array_equal(getattr(redrawn, f), getattr(fmap, f)) for f in ("layer", "index", "row", "bit", "image"))


def test_faults_change_results_and_empty_map_does_not(small_images, images):
    image, hw = small_images["fixed16"], HW["ws"]
    clean = Accelerator(hw).run(image, images)
    empty = draw_fault_map(image, hw, DrawSpec("weight_memory", 0.0), job_rng(0, "x"))
    assert len(empty) == 0
    np.testing.assert_array_equal(run_with_faults(Accelerator(hw), image, images, empty).raw_logits, clean.raw_logits)
    fmap = draw_fault_map(image, hw, DrawSpec("pe", 0.05, model="stuck_at_1"), job_rng(0, "y"))
    assert not np.array_equal(run_with_faults(Accelerator(hw), image, images, fmap).raw_logits, clean.raw_logits)


def test_binomial_count_matches_bits_times_rate(small_images):
    image, hw = small_images["fixed16"], HW["ws"]
    bits = site_bits(image, hw, "weight_memory")
    assert bits == image.weight_bits
    rate = 2e-4
    counts = np.array([len(draw_fault_map(image, hw, DrawSpec("weight_memory", rate), job_rng(5, str(i))))
                       for i in range(300)])
    expected = bits * rate
    assert abs(counts.mean() - expected) < 3 * np.sqrt(bits * rate * (1 - rate) / len(counts))


def test_positions_are_uniform(small_images):
    """Chi-square over (layer tensor, bit position) cells: counts proportional to their bits."""
    image, hw = small_images["fixed16"], HW["ws"]
    maps = [draw_fault_map(image, hw, DrawSpec("weight_memory", 1e-3), job_rng(7, str(i))) for i in range(60)]
    fm = FaultMap.concat(maps)
    weighted = [i for i, layer in enumerate(image.layers) if isinstance(layer, WeightedLayer)]
    observed, expected = [], []
    for i in weighted:
        layer = image.layers[i]
        sel = (fm.layer == i) & (fm.tensor == 0)
        observed += np.bincount(fm.bit[sel], minlength=16).tolist()
        expected += [layer.weight.size] * 16
    observed = np.array(observed, float)
    expected = np.array(expected, float) / sum(expected) * observed.sum()
    keep = expected >= 5
    assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > 1e-3
    # addresses of a buffer site: uniform over the capacity
    buf = FaultMap.concat([draw_fault_map(image, hw, DrawSpec("weight_buffer", 5e-3), job_rng(8, str(i)))
                           for i in range(40)])
    capacity, _ = buffer_capacity(image, hw, "weight_buffer")
    counts = np.bincount(buf.index * 8 // capacity, minlength=8)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_exact_mode_gives_int_bits_times_rate_per_layer(small_images):
    image, hw = small_images["fixed16"], HW["ws"]
    rate = 1e-3
    fmap = draw_fault_map(image, hw, DrawSpec("weight_memory", rate, count_mode="exact"), job_rng(1, "e"))
    for i, layer in enumerate(image.layers):
        if isinstance(layer, WeightedLayer):
            assert np.sum(fmap.layer == i) == int(layer.weight_bits * rate)
    pe = draw_fault_map(image, hw, DrawSpec("pe", 0.01, count_mode="exact"), job_rng(1, "p"))
    assert len(pe) == int(site_bits(image, hw, "pe") * 0.01)


def test_restrictions_to_layers_bits_and_registers(small_images):
    image, hw = small_images["fixed16"], HW["ws"]
    fmap = draw_fault_map(image, hw, DrawSpec("weight_memory", 1e-2, layers=(2,), bits=(15, 14)), job_rng(2, "r"))
    assert len(fmap) and set(fmap.layer) == {2} and set(fmap.bit) <= {14, 15}
    pe = draw_fault_map(image, hw, DrawSpec("pe", 0.05, registers=("psum",), layers=(0,)), job_rng(2, "q"))
    assert len(pe) and set(pe.register) == {2} and set(pe.layer) == {0}
    with pytest.raises(ValueError, match="not conv2d/linear layers"):
        draw_fault_map(image, hw, DrawSpec("weight_memory", 1e-3, layers=(1,)), job_rng(0, ""))


def test_job_rng_depends_on_seed_and_key_only():
    a = job_rng(3, "relu/1e-05/0").integers(0, 1 << 30, 5)
    assert np.array_equal(a, job_rng(3, "relu/1e-05/0").integers(0, 1 << 30, 5))
    assert not np.array_equal(a, job_rng(3, "relu/1e-05/1").integers(0, 1 << 30, 5))
    assert not np.array_equal(a, job_rng(4, "relu/1e-05/0").integers(0, 1 << 30, 5))


def slow_weight_stream(layer, dataflow, rows, cols):
    """The documented stream order, written as nested loops: (k, n) of each streamed weight."""
    if layer.op == "conv2d":
        kh, kw = layer.kernel
        depth = kh * kw * layer.in_shape[0]
    else:
        depth = layer.in_shape[0]
    n_filters = layer.out_channels
    order = []
    for n_fold in range(-(-n_filters // cols)):
        if dataflow == "ws":
            for k_fold in range(-(-depth // rows)):
                for r in range(rows):
                    for c in range(cols):
                        k, n = k_fold * rows + r, n_fold * cols + c
                        if k < depth and n < n_filters:
                            order.append((k, n))
        else:
            for k in range(depth):
                for c in range(cols):
                    n = n_fold * cols + c
                    if n < n_filters:
                        order.append((k, n))
    return order


def weight_of(layer, k, n):
    """B[k, n] with k in im2col order (kernel row, kernel col, channel)."""
    if layer.op == "linear":
        return (n, k)
    c = layer.in_shape[0]
    kh, kw = layer.kernel
    return (n, k % c, (k // c) // kw, (k // c) % kw)


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_weight_buffer_fault_corrupts_exactly_the_weights_at_its_address(small_images, dataflow):
    image, hw = small_images["fixed16"], HW[dataflow]
    capacity, _ = buffer_capacity(image, hw, "weight_buffer")
    address, bit = 37, 13
    fmap = FaultMap(site=[1], layer=[-1], tensor=[-1], index=[address], row=[-1], col=[-1], register=[-1],
                    bit=[bit], model=[0], image=[-1], access=[-1])
    weights, _ = corrupted_parameters(image, hw, fmap)
    for i, layer in enumerate(image.layers):
        if not isinstance(layer, WeightedLayer):
            continue
        expected = np.array(layer.weight)
        for j, (k, n) in enumerate(slow_weight_stream(layer, dataflow, hw.rows, hw.cols)):
            if j % capacity == address:
                idx = weight_of(layer, k, n)
                expected[idx] = flip(layer.weight_format, np.array([expected[idx]]), bit)[0]
        got = np.array(layer.weight)
        if i in weights:
            got.reshape(-1)[weights[i].index] = weights[i].values
        np.testing.assert_array_equal(got, expected, err_msg=f"layer {i}")
        # a flip always changes its word: one changed weight per stream position at the address
        assert (got != layer.weight).sum() == max(0, -(-(layer.weight.size - address) // capacity))


@pytest.mark.parametrize("fmt", ["fixed16", "fp32"])
def test_pe_fault_corrupts_exactly_the_outputs_routed_through_it(small_images, images, fmt):
    """A partial-sum register stuck at 1 on a high bit changes every sum it touches (weights and
    activations are positive here, so the clean partial sums never have that bit set)."""
    base = small_images[fmt].layers[2]  # conv 8→12, stride 2: M = 64 pixels, K = 72, N = 12
    rng = np.random.default_rng(0)
    weight = rng.integers(1, 100, base.weight.shape)
    layer = dataclasses.replace(base, weight=weight.astype(np.float32) if fmt == "fp32" else weight)
    x = torch.from_numpy(rng.integers(1, 100, (2, *layer.in_shape))).to(
        torch.float32 if fmt == "fp32" else torch.float64)
    prepared = prepare_layer(layer)
    row, col = 2, 1
    changed = {}
    for dataflow in ("ws", "os"):
        hw = HW[dataflow]
        bit = 29 if fmt == "fp32" else hw.acc_bits - 3  # fp32: an exponent bit that is 0 for sums in [2, 2**64)
        faults = PeFaults.build(hw.rows, hw.cols, [row], [col], [2], [bit], [2], [-1])  # psum stuck-at-1
        clean = weighted_accumulators(prepared, x, hw, "fast")
        faulty = weighted_accumulators(prepared, x, hw, "fast", faults)
        diff = (clean != faulty).permute(0, 2, 3, 1).reshape(-1, layer.out_channels).numpy()
        expected = np.zeros_like(diff)
        pixels = layer.out_shape[1] * layer.out_shape[2]
        depth = layer.kernel[0] * layer.kernel[1] * layer.in_shape[0]
        for m in range(diff.shape[0]):  # slow: does any MAC of output (m, n) run on PE (row, col)?
            for n in range(layer.out_channels):
                for k in range(depth):
                    pe = (k % hw.rows, n % hw.cols) if dataflow == "ws" else ((m % pixels) % hw.rows, n % hw.cols)
                    if pe == (row, col):
                        expected[m, n] = True
                        break
        np.testing.assert_array_equal(diff, expected, err_msg=dataflow)
        changed[dataflow] = diff
    assert not np.array_equal(changed["ws"], changed["os"])


def test_ws_weight_register_fault_equals_faithful_kernel(small_images, images):
    """The WS shortcut (a stationary weight-register fault = corrupted weights) against the kernel."""
    image, hw = small_images["fixed16"], HW["ws"]
    fmap = FaultMap(site=[3, 3], layer=[-1, -1], tensor=[-1, -1], index=[-1, -1], row=[1, 3], col=[2, 0],
                    register=[0, 0], bit=[14, 3], model=[0, 2], image=[-1, -1], access=[-1, -1])
    shortcut = run_with_faults(Accelerator(hw), image, images, fmap)
    faults = PeFaults.build(hw.rows, hw.cols, [1, 3], [2, 0], [0, 0], [14, 3], [0, 2], [-1, -1])
    from accel_sim.hardware import LayerFaults

    per_layer = {i: LayerFaults(pe=faults) for i, l in enumerate(image.layers) if isinstance(l, WeightedLayer)}
    kernel = Accelerator(hw).run(image, images, layer_faults=per_layer)
    np.testing.assert_array_equal(shortcut.raw_logits, kernel.raw_logits)


def test_activation_buffer_fault_changes_exactly_the_words_at_its_address(small_images):
    image, hw = small_images["fixed16"], HW["os"]
    capacity, _ = buffer_capacity(image, hw, "activation_buffer")
    address, bit = 100, 6
    fmap = FaultMap(site=[2], layer=[-1], tensor=[-1], index=[address], row=[-1], col=[-1], register=[-1],
                    bit=[bit], model=[2], image=[-1], access=[-1])
    per_layer = layer_faults(image, hw, fmap)
    for i, faults in per_layer.items():
        layer = image.layers[i]
        x = torch.zeros(2, *layer.in_shape, dtype=torch.float64)
        got = faults.corrupt_input(x)
        expected = torch.zeros_like(x)
        position = 0
        if len(layer.in_shape) == 3:
            c_, h_, w_ = layer.in_shape
            for y in range(h_):
                for xx in range(w_):
                    for c in range(c_):
                        if position % capacity == address:
                            expected[:, c, y, xx] = float(stuck_at_1(layer.in_format, np.array([0]), bit)[0])
                        position += 1
        else:
            for f in range(layer.in_shape[0]):
                if position % capacity == address:
                    expected[:, f] = float(stuck_at_1(layer.in_format, np.array([0]), bit)[0])
                position += 1
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=f"layer {i}")
    assert set(per_layer) == {i for i, l in enumerate(image.layers) if isinstance(l, WeightedLayer)}


def test_fp32_exponent_flips_give_nan_count_not_exceptions(small_images, images):
    image, hw = small_images["fp32"], HW["ws"]
    fmap = draw_fault_map(image, hw, DrawSpec("weight_memory", 0.05, bits=(30,)), job_rng(0, "nan"))
    out = run_with_faults(Accelerator(hw), image, images, fmap)
    assert out.nan_count == len(images)
    assert (out.predictions == -1).all()


def test_bad_maps_are_refused(small_images, tmp_path):
    image, hw = small_images["fixed16"], HW["ws"]
    good = draw_fault_map(image, hw, DrawSpec("weight_memory", 1e-3), job_rng(0, "g"))
    path = write_fault_map(good, tmp_path / "good.h5")
    (tmp_path / "cut.h5").write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut\.h5.*not a readable HDF5"):
        read_fault_map(tmp_path / "cut.h5")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(ValueError, match="not an accel-sim fault map"):
        read_fault_map(tmp_path / "foreign.h5")

    def edited(**changes):
        arrays = {name: getattr(good, name)[:1] for name in ("site", "layer", "tensor", "index", "row", "col",
                                                            "register", "bit", "model", "image", "access")}
        arrays.update(changes)
        return FaultMap(**arrays, **good.provenance)

    cap, _ = buffer_capacity(image, hw, "weight_buffer")
    cases = [
        (edited(bit=[16]), "bit 16 is not below the word width"),
        (edited(site=[1], layer=[-1], tensor=[-1], index=[cap]), f"address beyond the weight_buffer \\({cap} words\\)"),
        (edited(site=[3], layer=[-1], tensor=[-1], index=[-1], row=[4], col=[0], register=[0]), "outside the 4x4 array"),
        (edited(site=[3], layer=[-1], tensor=[-1], index=[-1], row=[0], col=[0], register=[2], bit=[48]),
         "not below the register's width"),
        (edited(index=[10**9]), "beyond layer"),
        (dataclasses.replace(good, image_hash="0" * 64), "drawn for another image"),
        (dataclasses.replace(good, hw_hash="1" * 64), "another hardware config"),
    ]
    for fmap, match in cases:
        with pytest.raises(ValueError, match=match):
            check_fault_map(fmap, image, hw)
    other = HardwareConfig("t2", 8, 8)
    with pytest.raises(ValueError, match="another hardware"):
        run_with_faults(Accelerator(other), image, load_bundled_sample().images[:1], good)


def test_cli_draw_show_eval_and_errors(small_images, tmp_path, capsys):
    image_path = write_image(small_images["fixed16"], tmp_path / "s.h5")
    map_path = tmp_path / "m.h5"
    assert main(["faults", "draw", "--image", str(image_path), "--site", "pe", "--rate", "0.001", "--seed", "4",
                 "--registers", "psum", "-o", str(map_path)]) == 0
    assert main(["faults", "show", str(map_path)]) == 0
    out = capsys.readouterr().out
    assert "pe" in out and "psum" in out
    assert main(["eval", "--image", str(image_path), "--faults", str(map_path), "--subset", "8"]) == 0
    assert "faults:" in capsys.readouterr().out
    other = write_image(export_model(small_net(), load_bundled_sample("train").images[:8], 8), tmp_path / "o.h5")
    assert main(["eval", "--image", str(other), "--faults", str(map_path), "--subset", "2"]) == 2
    err = capsys.readouterr().err
    assert "m.h5" in err and "another image" in err and len(err.strip().splitlines()) == 1
    assert main(["faults", "draw", "--image", str(image_path), "--site", "pe", "--rate", "2", "--seed", "1",
                 "-o", str(tmp_path / "x.h5")]) == 2
    assert "--rate: must lie in [0, 1]" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("fmt", ["fixed16", "fp32", "fixed32.16"])
def test_runs_from_a_kept_fault_free_prefix_equal_whole_runs(images, fmt):
    """A fault map whose faults start in layer L runs from the kept input of L (computed by the
    first such run, read by the next): bit for bit what a whole run without the cache gives, for
    every site, permanent and transient, two batches."""
    cal = load_bundled_sample("train").images[:32]
    bits, frac = {"fixed16": (16, None), "fp32": (None, None), "fixed32.16": (32, 16)}[fmt]
    image = export_model(small_net(), cal, bits, model_name="small", frac_bits=frac)
    hw = dataclasses.replace(HW["os"], **({"weight_bits": 32, "act_bits": 32, "acc_bits": 64} if bits == 32 else {}))
    kept, whole = Accelerator(hw, batch_size=4), Accelerator(hw, batch_size=4, prefix_cache_bytes=0)
    weighted = [i for i, layer in enumerate(image.layers) if isinstance(layer, WeightedLayer)]
    starts = set()
    for n, layer in enumerate(weighted):
        for site in RATES:
            for persistence in ("permanent", "transient"):
                spec = DrawSpec(site, RATES[site] * 20, persistence=persistence, layers=(layer,))
                fmap = draw_fault_map(image, hw, spec, job_rng(n, f"{site}/{persistence}"), n_images=len(images))
                expected = run_with_faults(whole, image, images, fmap).raw_logits
                for _ in range(2):  # the second run finds the prefix kept
                    got = run_with_faults(kept, image, images, fmap).raw_logits
                    np.testing.assert_array_equal(got.view(np.uint32) if fmt == "fp32" else got,
                                                  expected.view(np.uint32) if fmt == "fp32" else expected)
                if persistence == "permanent" and len(fmap):
                    ready = kept.prepare(image, *corrupted_parameters(image, hw, fmap))
                    first = kept.first_faulty_layer(image, ready, layer_faults(image, hw, fmap))
                    assert first == layer
                    starts.add(first)
    assert max(starts) == weighted[-1]  # faults in the last layer only: every layer before it is skipped
    assert len(kept.prefixes) > 0 and kept.prefixes.bytes <= kept.prefixes.max_bytes and not len(whole.prefixes)


def test_kept_prefixes_stay_within_their_memory():
    from accel_sim.errors import AccelSimError
    from accel_sim.hardware.clean_prefix import CleanPrefixes

    cache, image = CleanPrefixes(100), object()
    batch = np.zeros((2, 3), np.uint8)
    for layer in range(4):  # 40 bytes each: the oldest goes
        cache.put(cache.key(image, batch, layer), image, torch.zeros(10, dtype=torch.float32))
    assert len(cache) == 2 and cache.bytes == 80
    assert cache.get(cache.key(image, batch, 0)) is None and cache.get(cache.key(image, batch, 3)) is not None
    cache.put(cache.key(image, batch, 9), image, torch.zeros(30))  # larger than the whole cache: not kept
    assert cache.get(cache.key(image, batch, 9)) is None
    assert cache.get(cache.key(image, batch + 1, 3)) is None  # other pixels, other entry
    with pytest.raises(AccelSimError, match="prefix cache size"):
        CleanPrefixes(-1)
