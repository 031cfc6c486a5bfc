import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from accel_sim.data import load_bundled_sample
from accel_sim.models import build_model, load_weights, save_weights, zoo_weights_path
from accel_sim.models.evaluation import predict, to_input
from accel_sim.models.training import TrainConfig, augment, one_cycle, train

SUPPORTED = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d, nn.Dropout, nn.Flatten)


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_vgg16_has_13_conv_and_3_linear_layers():
    model = build_model("vgg16")
    assert count(model, nn.Conv2d) == 13 and count(model, nn.Linear) == 3
    assert count(model, nn.MaxPool2d) == 5 and count(model, nn.BatchNorm2d) == 13
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_alexnet_has_5_conv_3_linear_and_at_most_8m_parameters():
    model = build_model("alexnet")
    assert count(model, nn.Conv2d) == 5 and count(model, nn.Linear) == 3
    assert sum(p.numel() for p in model.parameters()) <= 8_000_000


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_only_supported_layers_and_ten_logits(arch):
    model = build_model(arch).eval()
    assert all(isinstance(m, SUPPORTED) for m in model)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet")


def test_weights_round_trip_and_fp16_storage(tmp_path):
    torch.manual_seed(0)
    model = build_model("alexnet").eval()
    path = save_weights(model, "alexnet", tmp_path / "w.pt")
    loaded = load_weights("alexnet", path)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype
        torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0, msg=k)


def test_weights_of_the_other_architecture_are_refused(tmp_path):
    path = save_weights(build_model("alexnet"), "alexnet", tmp_path / "w.pt")
    with pytest.raises(ValueError, match="holds alexnet weights, not vgg16"):
        load_weights("vgg16", path)
    torch.save(build_model("alexnet").state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="does not fit the vgg16 architecture"):
        load_weights("vgg16", tmp_path / "bare.pt")
    assert isinstance(load_weights("alexnet", tmp_path / "bare.pt"), nn.Module)


def test_foreign_and_missing_weight_files_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00junk" * 10)
    with pytest.raises(ValueError, match="not a readable PyTorch file"):
        load_weights("alexnet", tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_weights("alexnet", tmp_path / "none.pt")


def test_to_input_equals_numpy_normalize():
    from accel_sim.data import normalize

    images = load_bundled_sample().images[:4]
    np.testing.assert_allclose(to_input(torch.from_numpy(np.array(images))).numpy(), normalize(images), rtol=1e-6)


def reference_augment(image, dy, dx, flip):
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)))
    crop = padded[:, dy:dy + 32, dx:dx + 32]
    return crop[:, :, ::-1] if flip else crop


def test_augment_equals_per_image_crop_and_flip():
    images = torch.from_numpy(np.array(load_bundled_sample().images[:64]))
    out = augment(images, torch.Generator().manual_seed(3)).numpy()
    # replay the same draws: offsets first, then flips
    gen = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 9, (2, 64), generator=gen).numpy()
    flips = (torch.rand(64, generator=gen) < 0.5).numpy()
    assert 0 < flips.sum() < 64
    for i in range(64):
        expected = reference_augment(images[i].numpy(), offsets[0, i], offsets[1, i], flips[i])
        np.testing.assert_array_equal(out[i], expected)


def test_one_cycle_rises_to_peak_and_decays():
    f = one_cycle(100, warmup=0.25)
    values = [f(s) for s in range(101)]
    assert values[0] == pytest.approx(0.04)
    assert max(values) == pytest.approx(1.0) and values.index(max(values)) == 25
    assert values[-1] == pytest.approx(1e-4)
    assert all(a <= b for a, b in zip(values[:25], values[1:26]))
    assert all(a >= b for a, b in zip(values[25:], values[26:]))
    assert math.isfinite(one_cycle(1, warmup=0.9)(0))


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("warmup", 1.0),
                                         ("arch", "lenet"), ("device", "tpu")])
def test_train_config_validates(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"arch": "alexnet", field: value})


@pytest.mark.parametrize("field,value", [("fault_rate", -0.1), ("fault_rate", 2), ("fault_format", "fixed64"),
                                         ("fault_format", "int8"), ("init", None)])
def test_fault_aware_options_validate(field, value):
    with pytest.raises(ValueError, match=field.replace("_", " ")):
        TrainConfig(**{"arch": "alexnet", field: value})


@pytest.mark.parametrize("fmt", ["fp32", "fixed8", "fixed16"])
def test_training_faults_flip_the_drawn_bits_of_the_stored_words(fmt):
    """Without faults the values are the stored words (fp32 exact; fixedW quantised per tensor);
    with them, the stored patterns differ from the clean ones in exactly the counted bits, and
    the same generator state draws the same faults."""
    from accel_sim.models.fault_aware import TrainingFaults, faulty_values
    from accel_sim.numerics import Float32, format_for
    from accel_sim.numerics.formats import to_bits

    values = np.random.default_rng(0).normal(0, 0.05, (64, 3, 5, 5)).astype(np.float32)
    clean, none = faulty_values(values, TrainingFaults(0.0, fmt), np.random.default_rng(1))
    fmt_obj = Float32() if fmt == "fp32" else format_for(values.reshape(-1), int(fmt[5:]))
    stored = _stored(fmt_obj, values)
    assert none == 0 and clean.dtype == np.float32
    np.testing.assert_array_equal(to_bits(fmt_obj, stored), to_bits(fmt_obj, _stored(fmt_obj, clean)))
    faulty, flips = faulty_values(values, TrainingFaults(1e-3, fmt), np.random.default_rng(2))
    again, _ = faulty_values(values, TrainingFaults(1e-3, fmt), np.random.default_rng(2))
    np.testing.assert_array_equal(faulty, again)
    differ = to_bits(fmt_obj, stored) ^ to_bits(fmt_obj, _stored(fmt_obj, faulty))
    assert flips > 0 and sum(bin(int(d)).count("1") for d in differ) == flips
    assert flips == pytest.approx(values.size * fmt_obj.word_bits * 1e-3, rel=0.5)


def _stored(fmt, values):
    """The words ``values`` are stored as in ``fmt``."""
    from accel_sim.numerics import quantize

    flat = values.reshape(-1)
    return flat if fmt.is_float else quantize(fmt, flat.astype(np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("faults", [{}, {"fault_rate": 1e-4, "fault_format": "fixed8", "init": "zoo"}])
def test_resumed_training_equals_uninterrupted(tmp_path, faults):
    """Plain training from scratch, and fault-aware fine-tuning of the zoo's weights: a run
    killed after an epoch and resumed ends with the weights of an uninterrupted run."""
    data = load_bundled_sample().subset(192)
    if faults.get("init") == "zoo":
        faults = {**faults, "init": str(zoo_weights_path("alexnet"))}
    config = TrainConfig("alexnet", epochs=2, batch_size=64, lr=0.02, seed=5, **faults)
    straight = train(config, data, tmp_path / "a", progress=False)
    first = TrainConfig("alexnet", epochs=2, batch_size=64, lr=0.02, seed=5, **faults)
    # run one epoch, then stop (as if killed) by training a copy that ends after epoch 1 ...
    import accel_sim.models.training as training

    real_save = training._save_checkpoint
    calls = []

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt

    training._save_checkpoint = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train(first, data, tmp_path / "b", progress=False)
    finally:
        training._save_checkpoint = real_save
    assert calls == [1]
    with pytest.raises(ValueError, match="--resume"):
        train(first, data, tmp_path / "b", progress=False)
    resumed = train(first, data, tmp_path / "b", resume=True, progress=False)
    a = torch.load(straight, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    other = TrainConfig("alexnet", epochs=2, batch_size=64, lr=0.03, seed=5, **faults)
    with pytest.raises(ValueError, match="another configuration"):
        train(other, data, tmp_path / "b", resume=True, progress=False)
    if faults:  # flips were drawn at every step, and the fine-tuned weights moved
        with open(tmp_path / "b" / "history.csv") as f:
            rows = list(csv.DictReader(f))
        assert all(float(r["flips_per_step"]) > 0 and r["skipped_steps"] == "0" for r in rows)
        start = torch.load(faults["init"], weights_only=True)["state_dict"]
        assert any(not torch.equal(start[k], b[k]) for k in start)


def test_fp32_steps_with_a_non_finite_loss_are_skipped(tmp_path):
    """fp32 flips at a high rate hit exponent bits, and such steps' losses are not finite: they
    are skipped and counted, and the clean weights stay finite."""
    data = load_bundled_sample().subset(128)
    config = TrainConfig("alexnet", epochs=1, batch_size=64, lr=0.01, seed=1, fault_rate=1e-4,
                         init=str(zoo_weights_path("alexnet")))
    path = train(config, data, tmp_path, progress=False)
    with open(tmp_path / "history.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert int(row["skipped_steps"]) >= 1 and float(row["flips_per_step"]) > 1000
    assert all(torch.isfinite(t.float()).all() for t in torch.load(path, weights_only=True)["state_dict"].values())


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_zoo_model_is_accurate_on_bundled_sample(arch):
    sample = load_bundled_sample()
    preds = predict(load_weights(arch, zoo_weights_path(arch)), sample.images)
    assert np.mean(preds == sample.labels) > 0.85
