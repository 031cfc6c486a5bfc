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


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted(tmp_path):
    data = load_bundled_sample().subset(192)
    config = TrainConfig("alexnet", epochs=2, batch_size=64, lr=0.02, seed=5)
    straight = train(config, data, tmp_path / "a", progress=False)
    first = TrainConfig("alexnet", epochs=2, batch_size=64, lr=0.02, seed=5)
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
    other = TrainConfig("alexnet", epochs=2, batch_size=64, lr=0.03, seed=5)
    with pytest.raises(ValueError, match="another configuration"):
        train(other, data, tmp_path / "b", resume=True, progress=False)


@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_zoo_model_is_accurate_on_bundled_sample(arch):
    sample = load_bundled_sample()
    preds = predict(load_weights(arch, zoo_weights_path(arch)), sample.images)
    assert np.mean(preds == sample.labels) > 0.85
