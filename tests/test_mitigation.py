"""FT-ClipAct mitigation: profiling, applying, threshold files, the interval search and tuning."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from accel_sim.cli import main
from accel_sim.data import ImageSet, load_bundled_sample
from accel_sim.faults import DrawSpec, draw_fault_map, job_rng
from accel_sim.faults.model import FaultMap
from accel_sim.hardware import Accelerator, HardwareConfig
from accel_sim.image.export import export_model
from accel_sim.image.hdf5 import read_image, write_image
from accel_sim.mitigation import (
    SearchSettings,
    Thresholds,
    TuneSettings,
    activation_layers,
    area_under_curve,
    draw_tuning_data,
    harden,
    hardening_of,
    interval_search,
    profile_act_max,
    read_thresholds,
    tune_thresholds,
    with_activation,
    with_thresholds,
    write_thresholds,
)
from accel_sim.mitigation import tune as tune_module
from accel_sim.mitigation.profile import TailProfiler
from accel_sim.models import load_weights

HW = HardwareConfig("t", 8, 8)


def small_net():
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10),
    ).eval()


def labelled_by(model: nn.Module, data: ImageSet) -> ImageSet:
    """The images labelled with the model's own float predictions: fault-free accuracy near 100 %."""
    from accel_sim.data import normalize

    with torch.no_grad():
        labels = model(torch.from_numpy(normalize(data.images))).argmax(1).numpy().astype(np.int64)
    return ImageSet(data.images, labels, data.name + " (labelled by the model)")


@pytest.fixture(scope="module")
def train():
    return load_bundled_sample("train")


@pytest.fixture(scope="module")
def small_images(train):
    return {fmt: export_model(small_net(), train.images[:64], bits, model_name="small")
            for fmt, bits in (("fixed16", 16), ("fp32", None))}


def small_settings(**changes) -> TuneSettings:
    base = TuneSettings(rates=(1e-4, 1e-3), trials=2, tune_images=24, profile_images=32,
                        search=SearchSettings(candidates=4, max_rounds=3, early_stop_round=2, early_stop_pp=0.0))
    return dataclasses.replace(base, **changes)


def test_profile_equals_torch_forward_hooks(train):
    """fp32 ACT_max on the emulated datapath = the largest pre-activation torch computes, layer
    by layer, with plain forward hooks on the zoo model."""
    model = load_weights("alexnet")
    image = export_model(model, train.images[:64], None, model_name="alexnet")
    images = train.images[100:164]
    got = profile_act_max(image, images, Accelerator(HW, batch_size=25))
    peaks = []
    hooked = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]  # each followed by a ReLU
    handles = [m.register_forward_hook(lambda _m, _i, out: peaks.append(float(out.max()))) for m in hooked]
    from accel_sim.data import normalize

    with torch.no_grad():
        model(torch.from_numpy(normalize(images)))
    for h in handles:
        h.remove()
    assert list(got) == activation_layers(image) and len(got) == len(peaks) == 7
    np.testing.assert_allclose(list(got.values()), peaks, rtol=1e-5)


def test_fixed_point_profile_keeps_every_profiled_activation(small_images, train):
    """A clipact threshold of exactly ACT_max zeroes nothing on the profiling images (the profile
    is the accumulator the unit compares, not the rounded output word)."""
    image = small_images["fixed16"]
    images = train.images[:40]
    acc = Accelerator(HW)
    act_max = profile_act_max(image, images, acc)
    clipped = with_activation(image, "clipact", act_max)
    np.testing.assert_array_equal(acc.run(clipped, images).raw_logits, acc.run(image, images).raw_logits)
    lower = with_activation(image, "clipact", {i: v * 0.999 for i, v in act_max.items()})
    assert not np.array_equal(acc.run(lower, images).raw_logits, acc.run(image, images).raw_logits)
    p90 = profile_act_max(image, images, acc, percentile=90.0)
    assert all(0 < p90[i] < act_max[i] for i in act_max)


@pytest.mark.parametrize("fmt", ["fp32", "fixed16"])
def test_tail_profiler_equals_a_profile_from_the_input(small_images, train, fmt):
    """Fixing thresholds layer by layer, the incremental profile of the layers from L on equals a
    fresh one of the same network (percentiles too), and it goes back to the input when asked for
    an earlier layer."""
    base = small_images[fmt]
    images, acc = train.images[:60], Accelerator(HW, batch_size=25)
    layers = activation_layers(base)
    for percentile in (None, 95.0):
        profiler, fixed = TailProfiler(images, acc, percentile), {}
        for layer in layers:
            current = with_thresholds(base, "clipact", fixed)
            tail = [i for i in layers if i >= layer]
            got = profiler.act_max(current, tail)
            assert got == profile_act_max(current, images, acc, tail, percentile)
            fixed[layer] = got[layer] * 0.6  # a threshold that clips: later layers' profiles change
        assert profiler.act_max(base, layers) == profile_act_max(base, images, acc, layers, percentile)


def test_harden_records_provenance_and_changes_the_hash(small_images, tmp_path):
    image = small_images["fp32"]
    thresholds = {i: 1.0 + i for i in activation_layers(image)}
    sources = {i: "tuned" for i in thresholds}
    hardened = harden(image, "clamp", thresholds, sources, {"trials": 5})
    assert hardened.content_hash() != image.content_hash()
    assert image.hardening == "" and all(layer.activation in ("relu", "none") for layer in image.weighted_layers)
    path = write_image(hardened, tmp_path / "h.h5")
    again = read_image(path)
    assert again.content_hash() == hardened.content_hash()
    record = hardening_of(again)
    assert record["method"] == "clamp" and record["settings"] == {"trials": 5}
    assert record["base_image_hash"] == with_activation(image, "relu").content_hash()
    assert {int(k): v["threshold"] for k, v in record["layers"].items()} == thresholds
    with pytest.raises(ValueError, match="missing"):
        with_activation(image, "clipact", {0: 1.0})
    with pytest.raises(ValueError, match="no activation unit"):
        harden(image, "clipact", {**thresholds, 8: 1.0}, sources)


def test_threshold_file_round_trip_and_errors(tmp_path):
    th = Thresholds("clipact", {0: 0.1 + 0.2, 3: 7.0}, {0: "tuned", 3: "act_max"}, {0: 1.5}, "abc",
                    {"rates": [1e-7, 3e-5], "trials": 5, "percentile": None})
    path = write_thresholds(th, tmp_path / "t.toml")
    back = read_thresholds(path)
    assert back.values == th.values and back.sources == th.sources and back.act_max == th.act_max
    assert back.settings == {"rates": [1e-7, 3e-5], "trials": 5} and back.image_hash == "abc"
    (tmp_path / "bare.toml").write_text('[thresholds]\n"2" = 1.5\n')
    bare = read_thresholds(tmp_path / "bare.toml", "clamp")
    assert bare.method == "clamp" and bare.sources == {2: "file"}
    for text, match in (('[thresholds]\n"x" = 1', "layer indices"), ('[thresholds]\n"1" = -1', "finite number >= 0"),
                        ("[other]\n", "unknown key"), ('method = "clamp"\n[thresholds]\n"1" = 1', "clamp thresholds"),
                        ('[thresholds]\n"1" = "a"', "must be a number"), ("x = [", "cannot be read")):
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(ValueError, match=match):
            read_thresholds(tmp_path / "bad.toml", "clipact")


def test_area_under_curve_is_a_mean_over_equal_spacing():
    assert area_under_curve([80.0]) == 80.0
    assert area_under_curve([100.0, 50.0, 0.0]) == pytest.approx(50.0)
    assert area_under_curve([90.0, 90.0, 30.0, 10.0]) == pytest.approx(((90 + 90) / 2 + (90 + 30) / 2 + (30 + 10) / 2) / 3)


def test_search_narrows_around_the_best_and_stops_early():
    calls = []

    def score(ts):
        calls.append(list(ts))
        return [-abs(t - 6.3) for t in ts]

    best, rounds = interval_search(score, 9.0, SearchSettings(4, 4, 3, 0.0))
    assert [r.candidates for r in rounds][:2] == [(0.0, 3.0, 6.0, 9.0), (3.0, 5.0, 7.0, 9.0)]
    assert rounds[2].candidates == pytest.approx((5.0, 5 + 4 / 3, 5 + 8 / 3, 9.0))  # the best (7)'s neighbours
    assert best == rounds[-1].candidates[rounds[-1].best] and len(rounds) == 4
    assert 9.0 not in calls[1] and 3.0 not in calls[1]  # scored once, reused in round 2
    flat = interval_search(lambda ts: [50.0] * len(ts), 9.0, SearchSettings(4, 4, 3, 0.2))
    assert len(flat[1]) == 3 and flat[0] == 9.0  # ties go to the largest threshold; early stop after 3
    assert interval_search(lambda ts: [1.0] * len(ts), 0.0, SearchSettings()) == (0.0, [])
    edge = interval_search(lambda ts: [-t for t in ts], 3.0, SearchSettings(4, 2, 3, 0.0))
    assert edge[1][1].candidates == (0.0, 1 / 3, 2 / 3, 1.0)  # best at the low end: the first pair


def test_tuning_equals_brute_force_on_a_two_layer_net(train, tmp_path):
    """A 2-layer net, a grid of 5 thresholds, one round: the tuned T is the grid point whose AUC,
    computed here with plain torch on weights flipped by hand, is the largest."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    data = labelled_by(net, train.subset(200))
    image = export_model(net, data.images[:64], None, model_name="toy")
    settings = TuneSettings(rates=(1e-5, 1e-4, 3e-4), trials=3, tune_images=60, profile_images=50, seed=7,
                            search=SearchSettings(candidates=5, max_rounds=1))
    profile, tune = draw_tuning_data(data, settings)
    tuned = tune_thresholds(image, Accelerator(HW), profile, tune, settings, state_path=tmp_path / "state.json")
    layer = activation_layers(image)[0]
    (searched,) = json.loads((tmp_path / "state.json").read_text())["layers"][str(layer)]["rounds"]

    from accel_sim.data import normalize

    w1, b1 = net[1].weight.detach().numpy(), net[1].bias.detach().numpy()
    w2, b2 = net[3].weight.detach().numpy(), net[3].bias.detach().numpy()
    x_profile = torch.from_numpy(normalize(profile.images)).flatten(1)
    act_max = float(F.linear(x_profile, torch.from_numpy(w1), torch.from_numpy(b1)).max())
    x = torch.from_numpy(normalize(tune.images)).flatten(1)
    tensors = {(1, 0): w1, (1, 1): b1, (2, 0): w2, (2, 1): b2}  # (image layer, weight 0 / bias 1)

    def flipped(fmap: FaultMap):
        out = {key: np.array(value, dtype=np.float32).copy() for key, value in tensors.items()}
        for lay, tensor, index, bit in zip(fmap.layer, fmap.tensor, fmap.index, fmap.bit):
            words = out[(int(lay), int(tensor))].reshape(-1).view(np.uint32)
            words[index] ^= np.uint32(1 << int(bit))
        return {key: torch.from_numpy(value) for key, value in out.items()}

    maps = {(rate, trial): draw_fault_map(image, HW, DrawSpec("weight_memory", rate, count_mode="exact"),
                                          job_rng(7, f"tune/{layer}/{rate!r}/{trial}"), len(tune))
            for rate in settings.rates for trial in range(3)}
    assert all(len(m) for m in maps.values())

    def auc(t: float) -> float:
        per_rate = []
        for rate in settings.rates:
            accs = []
            for trial in range(3):
                p = flipped(maps[(rate, trial)])
                h = F.linear(x, p[(1, 0)], p[(1, 1)])
                h = torch.where((h >= 0) & (h <= np.float32(t)), h, torch.zeros(()))
                logits = F.linear(h, p[(2, 0)], p[(2, 1)]).numpy()
                predictions = np.where(np.isfinite(logits).all(1), logits.argmax(1), -1)
                accs.append(100.0 * np.mean(predictions == tune.labels))
            per_rate.append(np.mean(accs))
        return area_under_curve(per_rate)

    grid = np.linspace(0.0, act_max, 5)
    scores = [auc(t) for t in grid]
    expected = max(range(5), key=lambda j: (scores[j], grid[j]))
    assert len(set(np.round(scores, 6))) > 1  # the grid points differ: the test can fail
    np.testing.assert_allclose(searched["candidates"], grid, rtol=1e-6)
    np.testing.assert_allclose(searched["aucs"], scores, rtol=1e-9)  # every grid point's AUC, not only the best
    assert tuned.values[layer] == pytest.approx(grid[expected], rel=1e-6)
    assert tuned.act_max[layer] == pytest.approx(act_max, rel=1e-5)


@pytest.mark.parametrize("fmt", ["fixed16", "fp32"])
def test_fast_mode_equals_naive_mode(small_images, train, fmt):
    settings = small_settings()
    data = labelled_by(small_net(), train.subset(300))
    profile, tune = draw_tuning_data(data, settings)
    records = {}
    for mode in ("fast", "naive"):
        calls = []
        original = tune_module.interval_search

        def spy(score, upper, search, reuse=True):
            best, rounds = original(score, upper, search, reuse)
            calls.append(rounds)
            return best, rounds

        tune_module.interval_search = spy
        try:
            th = tune_thresholds(small_images[fmt], Accelerator(HW), profile, tune, settings, mode, cache_mib=0 if
                                 mode == "fast" and fmt == "fp32" else 2048)
        finally:
            tune_module.interval_search = original
        records[mode] = (th.values, calls)
    assert records["fast"][0] == records["naive"][0]
    assert records["fast"][1] == records["naive"][1]  # every round: same candidates, same AUCs
    assert any(len(set(r.aucs)) > 1 for rounds in records["fast"][1] for r in rounds)


def test_resume_after_kill_gives_the_same_thresholds(small_images, train, tmp_path, monkeypatch):
    settings = small_settings()
    profile, tune = draw_tuning_data(labelled_by(small_net(), train.subset(300)), settings)
    image, acc = small_images["fixed16"], Accelerator(HW)
    uninterrupted = tune_thresholds(image, acc, profile, tune, settings)
    state = tmp_path / "state.json"
    original, searched = tune_module.interval_search, []

    def killed_on_second_layer(*args, **kwargs):
        searched.append(1)
        if len(searched) == 2:
            raise KeyboardInterrupt  # as a kill between two layers
        return original(*args, **kwargs)

    monkeypatch.setattr(tune_module, "interval_search", killed_on_second_layer)
    with pytest.raises(KeyboardInterrupt):
        tune_thresholds(image, acc, profile, tune, settings, state_path=state)
    assert list(json.loads(state.read_text())["layers"]) == [str(activation_layers(image)[0])]
    spy_calls = []
    monkeypatch.setattr(tune_module, "interval_search", lambda *a, **k: (spy_calls.append(1), original(*a, **k))[1])
    resumed = tune_thresholds(image, acc, profile, tune, settings, state_path=state)
    assert resumed.values == uninterrupted.values
    assert len(spy_calls) == len(activation_layers(image)) - 1  # the finished layer is not searched again
    spy_calls.clear()
    tune_thresholds(image, acc, profile, tune, dataclasses.replace(settings, seed=1), state_path=state)
    assert len(spy_calls) == len(activation_layers(image))  # another seed: the state is not reused


def test_harden_cli_profiles_tunes_and_inspect_shows_sources(small_images, tmp_path, capsys):
    plain = write_image(small_images["fixed16"], tmp_path / "plain.h5")
    assert main(["harden", "--image", str(plain), "--method", "clamp", "--profile-images", "40",
                 "-o", str(tmp_path / "clamp.h5")]) == 0
    assert main(["harden", "--image", str(plain), "--tune", "--rates", "1e-4,1e-3", "--trials", "1",
                 "--tune-images", "16", "--profile-images", "32", "--rounds", "2", "--no-progress",
                 "-o", str(tmp_path / "tuned.h5")]) == 0
    capsys.readouterr()
    tuned = read_image(tmp_path / "tuned.h5")
    assert {layer.activation for layer in tuned.weighted_layers} == {"clipact", "none"}
    assert (tmp_path / "tuned.h5.tuning.json").is_file()
    thresholds = read_thresholds(tmp_path / "tuned.thresholds.toml")
    assert set(thresholds.sources.values()) == {"tuned"} and thresholds.settings["trials"] == 1
    assert main(["inspect", str(tmp_path / "tuned.h5")]) == 0
    out = capsys.readouterr().out
    assert out.count("tuned") >= len(thresholds.values) and "hardened: clipact" in out
    assert main(["harden", "--image", str(plain), "--thresholds", str(tmp_path / "tuned.thresholds.toml"),
                 "-o", str(tmp_path / "again.h5")]) == 0
    assert read_image(tmp_path / "again.h5").content_hash() == tuned.content_hash()
    assert main(["harden", "--image", str(plain), "--tune", "--rates", "1e-3,1e-4", "-o", str(tmp_path / "x.h5")]) == 2
    assert "ascending" in capsys.readouterr().err


TUNED_CAMPAIGN = """
name = "tuned"
seed = 3
output = "OUT"
[model]
zoo = "alexnet"
format = "fixed8"
calibration = 32
[data]
count = 30
profile_count = 32
[faults]
site = "weight_memory"
rates = [1e-5]
trials = 1
[tuning]
rates = [1e-5, 1e-4]
trials = 1
tune_images = 12
profile_images = 24
max_rounds = 1
[[variants]]
name = "relu"
[[variants]]
name = "tuned"
activation = "clipact"
thresholds = "tuned"
[[variants]]
name = "ranger"
activation = "clamp"
thresholds = "THRESHOLDS"
[execution]
batch_size = 30
"""


def test_campaign_tunes_once_and_keeps_the_thresholds_beside_the_results(tmp_path, monkeypatch):
    from accel_sim.campaign import load_campaign, read_results, run_campaign
    from accel_sim.campaign import runner

    write_thresholds(Thresholds("clamp", {0: 5.0, 2: 5.0, 4: 5.0, 5: 5.0, 6: 5.0, 9: 5.0, 10: 5.0}),
                     tmp_path / "ranger.toml")
    path = tmp_path / "c.toml"
    path.write_text(TUNED_CAMPAIGN.replace("OUT", str(tmp_path / "out")).replace("THRESHOLDS", str(tmp_path / "ranger.toml")))
    config = load_campaign(path)
    results = run_campaign(config, progress=False)
    (cached,) = (tmp_path / "out" / "thresholds").glob("clipact-*.toml")
    tuned = read_thresholds(cached)
    resolved, rows = read_results(results)
    assert len(rows) == 3
    assert {int(k): v for k, v in resolved["thresholds"]["tuned"].items()} == tuned.values
    assert set(resolved["thresholds"]["ranger"].values()) == {5.0}

    def no_tuning(*args, **kwargs):
        raise AssertionError("the cached thresholds must be read, not tuned again")

    monkeypatch.setattr(runner, "tune_thresholds", no_tuning)
    again = runner.build_context(config, tmp_path / "out")
    assert again.thresholds["tuned"] == tuned.values
    assert again.image_hashes["tuned"] == resolved["image_hashes"]["tuned"]


@pytest.mark.parametrize("table, match", [
    ("[tuning]\nrates = [1e-5, 1e-6]", "ascending"),
    ("[tuning]\ntrials = 0", "trials"),
    ("[tuning]\nmode = 'quick'", "tuning.mode"),
    ("[tuning]\nwhat = 1", "tuning.what"),
    ("[tuning]\ncandidates = 2", "candidates"),
])
def test_bad_tuning_tables_are_refused(tmp_path, table, match):
    from accel_sim.campaign import load_campaign

    text = TUNED_CAMPAIGN.replace("[tuning]\nrates = [1e-5, 1e-4]\ntrials = 1\ntune_images = 12\n"
                                  "profile_images = 24\nmax_rounds = 1\n", table + "\n")
    path = tmp_path / "c.toml"
    path.write_text(text.replace("THRESHOLDS", "act_max"))
    with pytest.raises(ValueError, match=match):
        load_campaign(path)
