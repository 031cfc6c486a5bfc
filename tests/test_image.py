"""Export, the HDF5 image schema, its validation, and the golden reference."""

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from accel_sim.cli import main
from accel_sim.data import draw_sample, load_bundled_sample
from accel_sim.image import Conv2d, Linear
from accel_sim.image.export import export_model
from accel_sim.image.hdf5 import read_image, write_image
from accel_sim.image.reference import reference_layer, run_reference
from accel_sim.models import load_weights
from accel_sim.models.evaluation import predict_logits
from accel_sim.numerics import Datapath, Fixed, dequantize, quantize

DP = Datapath(48)


class OddNet(nn.Module):
    """A bring-your-own model: functional ReLU, torch.flatten, stride 2, padding, non-square
    kernels, a 1×1 convolution, BatchNorm with affine parameters and max-pooling with padding."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, (3, 5), stride=2, padding=(1, 2))
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.b = nn.Conv2d(6, 5, 1, bias=False)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(5 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.a(x)))
        x = self.pool(x)
        x = torch.relu(self.b(x))
        return self.fc(self.drop(torch.flatten(x, 1)))


@pytest.fixture(scope="module")
def odd_model():
    torch.manual_seed(0)
    model = OddNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def calibration():
    return draw_sample(load_bundled_sample("train"), 64, np.random.default_rng(0)).images


@pytest.fixture(scope="module")
def sample():
    return load_bundled_sample("test").subset(200)


@pytest.fixture
def small_image(odd_model, calibration):
    return export_model(odd_model, calibration, 8, model_name="oddnet")


def test_byo_model_fp32_matches_torch(odd_model, calibration, sample):
    image = export_model(odd_model, calibration, None, model_name="oddnet")
    assert [layer.op for layer in image.layers] == ["conv2d", "maxpool2d", "conv2d", "flatten", "linear"]
    out = run_reference(image, sample.images, DP)
    np.testing.assert_allclose(out.logits, predict_logits(odd_model, sample.images), atol=1e-4)


def test_byo_model_fixed16_is_close_to_torch(odd_model, calibration, sample):
    image = export_model(odd_model, calibration, 16, model_name="oddnet")
    out = run_reference(image, sample.images, DP)
    np.testing.assert_allclose(out.logits, predict_logits(odd_model, sample.images), atol=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_zoo_fp32_image_matches_pytorch_on_bundled_images(arch, calibration):
    """Acceptance: logits within 1e-4 and identical predictions on the 1,000 bundled images."""
    model = load_weights(arch)
    sample = load_bundled_sample("test")
    image = export_model(model, calibration, None, model_name=arch)
    out = run_reference(image, sample.images, DP)
    expected = predict_logits(model, sample.images)
    np.testing.assert_allclose(out.logits, expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(out.predictions, expected.argmax(1))


@pytest.mark.slow
def test_fixed16_alexnet_agrees_with_float_model(calibration):
    model = load_weights("alexnet")
    sample = load_bundled_sample("test").subset(60)
    image = export_model(model, calibration, 16, model_name="alexnet")
    out = run_reference(image, sample.images, DP)
    assert np.mean(out.predictions == predict_logits(model, sample.images).argmax(1)) >= 0.98


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.c(x) + x, 1))


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)), r"'1'.*Sigmoid"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 15 * 15, 10)), "AvgPool2d"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, groups=1, dilation=2), nn.Flatten(), nn.Linear(4 * 28 * 28, 10)), "dilation"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(3600, 10)), "BatchNorm2d"),
    (nn.Sequential(nn.Flatten(), nn.Linear(3072, 10), nn.ReLU()), "logits.*cannot have activation relu"),
    (Residual(), "does not continue a single chain|not the chain"),
])
def test_unsupported_models_are_refused_naming_the_layer(model, match, calibration):
    with pytest.raises(ValueError, match=match):
        export_model(model.eval(), calibration[:4], 16)


def test_hdf5_round_trip_is_identical(small_image, tmp_path, sample):
    path = write_image(small_image, tmp_path / "img.h5")
    loaded = read_image(path)
    assert loaded.content_hash() == small_image.content_hash()
    assert loaded.weight_bits == small_image.weight_bits
    a = run_reference(small_image, sample.images[:20], DP)
    b = run_reference(loaded, sample.images[:20], DP)
    np.testing.assert_array_equal(a.raw_logits, b.raw_logits)
    with h5py.File(path) as f:
        conv = f["layers/000"]
        assert conv["weight"].dtype == np.int8  # fixed8 words in the smallest signed dtype
        assert f.attrs["schema_version"] == 2 and f.attrs["format"] == "fixed8"
        big = f["layers/004/weight"]
        assert big.compression == "gzip" and big.shuffle


def test_records_are_immutable(small_image):
    layer = small_image.layers[0]
    with pytest.raises(ValueError):
        layer.weight[0, 0, 0, 0] = 1
    with pytest.raises(AttributeError):
        layer.activation = "clipact"


def _copy_and_edit(src, dst, edit):
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.attrs.__setitem__("schema_version", 3), "schema version 3.*upgrade"),
    (lambda f: f.attrs.__delitem__("schema"), "not an accel-sim image"),
    (lambda f: f["layers/002"].__delitem__("weight"), r"layer 002 \(b, conv2d\).*'weight' is missing"),
    (lambda f: f["layers/000/weight"].__setitem__((0, 0, 0, 0), 127) or f["layers/000"].attrs.__setitem__(
        "weight_format", "fixed4.2"), r"layer 000.*outside the 4-bit word"),
    (lambda f: f["layers/004"].attrs.__setitem__("in_shape", np.array([7])), r"layer 004.*fc"),
    (lambda f: f["layers/001"].attrs.__setitem__("op", "avgpool"), r"layer 001.*unknown op 'avgpool'"),
    (lambda f: f["layers/000"].attrs.__setitem__("weight_format", "fixed99.1"), r"layer 000.*word_bits"),
    (lambda f: f["layers/002"].attrs.__setitem__("in_format", "fixed8.0"), r"layer 002 \(b, conv2d\).*needs 0\.\.8 fractional bits"),  # the bias no longer fits the accumulator
])
def test_bad_image_files_are_refused(small_image, tmp_path, edit, match):
    good = write_image(small_image, tmp_path / "good.h5")
    bad = _copy_and_edit(good, tmp_path / "bad.h5", edit)
    with pytest.raises(ValueError, match=match) as info:
        read_image(bad)
    assert "bad.h5" in str(info.value)


def test_truncated_foreign_and_missing_files_are_refused(small_image, tmp_path):
    good = write_image(small_image, tmp_path / "good.h5")
    data = good.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.h5.*(not a readable HDF5|damaged)"):
        read_image(tmp_path / "cut.h5")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match=r"foreign\.h5.*not an accel-sim image"):
        read_image(tmp_path / "foreign.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_image(tmp_path / "text.h5")
    with pytest.raises(ValueError, match="does not exist"):
        read_image(tmp_path / "none.h5")


def test_reference_conv_equals_per_mac_definition(rng=np.random.default_rng(7)):
    """The im2col lowering and the accumulator against four nested loops."""
    fmt_w, fmt_a = Fixed(6, 3), Fixed(5, 2)
    weight = rng.integers(fmt_w.raw_min, fmt_w.raw_max + 1, (4, 3, 2, 3))
    bias = rng.integers(-50, 50, 4)
    layer = Conv2d("c", (3, 7, 6), (4, 4, 3), weight, bias, fmt_w, Fixed(11, 5), fmt_a, Fixed(5, 1),
                   activation="clipact", threshold=3.0, stride=(2, 2), padding=(1, 1))
    x = rng.integers(fmt_a.raw_min, fmt_a.raw_max + 1, (2, 3, 7, 6))
    dp = Datapath(12, "saturate", "nearest_up")
    got = reference_layer(layer, x, dp)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for n in range(2):
        for o in range(4):
            for oy in range(4):
                for ox in range(3):
                    acc = 0
                    for i in range(2):
                        for j in range(3):
                            for c in range(3):
                                acc = min(max(acc + int(weight[o, c, i, j]) * int(xp[n, c, 2 * oy + i, 2 * ox + j]),
                                              -2048), 2047)
                    acc = min(max(acc + int(bias[o]), -2048), 2047)
                    acc = acc if 0 <= acc <= 3.0 * 32 else 0  # clipact at T = 3.0 (scale 2**5)
                    q = (acc + 8) >> 4  # to 1 fractional bit, nearest_up
                    assert got[n, o, oy, ox] == min(max(q, -16), 15)


def test_linear_last_layer_returns_accumulators():
    w = np.array([[1, -2], [3, 4]])
    layer = Linear("fc", (2,), (2,), w, np.array([5, -5]), Fixed(4, 1), Fixed(8, 2), Fixed(4, 1), None)
    out = reference_layer(layer, np.array([[2, 3]]), Datapath(16))
    assert out.tolist() == [[2 - 6 + 5, 6 + 12 - 5]]


def test_cli_export_inspect_and_eval(tmp_path, capsys):
    path = tmp_path / "a8.h5"
    assert main(["export", "--model", "alexnet", "--format", "fixed8", "--calibration", "64", "-o", str(path)]) == 0
    image = read_image(path)
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{image.weight_bits:,} weight bits" in out and "fixed8" in out and "logits" in out
    assert main(["eval", "--image", str(path), "--subset", "20"]) == 0
    assert "top-1:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, fragment", [
    (["export", "--model", "alexnet", "--format", "fixed", "-o", "x.h5"], "--format must be fp32, fixedW (e.g. fixed16) or fixedW.F"),
    (["export", "--model", "alexnet", "--format", "fixed40", "-o", "x.h5"], "word width W in 2..32"),
    (["inspect", "nowhere.h5"], "does not exist"),
    (["eval", "--image", "nowhere.h5"], "does not exist"),
    (["eval", "--image", "x.h5", "--hw", "nohw.toml"], "nohw.toml"),
])
def test_cli_image_errors_are_one_line(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "x.h5" in argv and argv[0] == "eval":
        write_image(export_model(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)).eval(),
                                 load_bundled_sample("train").images[:4], 8), tmp_path / "x.h5")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
    assert not (tmp_path / "x.h5").exists() or argv[0] == "eval"


def test_quantized_weights_dequantize_close_to_float(odd_model, calibration):
    image = export_model(odd_model, calibration, 16)
    w = dequantize(image.layers[-1].weight_format, image.layers[-1].weight)
    np.testing.assert_allclose(w, odd_model.fc.weight.detach().numpy(), atol=2.0 ** -image.layers[-1].weight_format.frac_bits)
    assert quantize(image.layers[-1].weight_format, w).tolist() == image.layers[-1].weight.tolist()


@pytest.mark.slow
def test_batchnorm_biases_past_one_keep_their_value_in_fixed16(calibration, caplog):
    """The zoo VGG-16 (bias-free convs + BatchNorm) folds to biases past ±1, beyond a 32-bit word
    at the accumulator's scale in one layer: the bias word takes fewer fractional bits and
    enters the accumulator shifted, nothing saturates, accuracy stays within 0.3 pp of fp32."""
    from accel_sim.hardware import Accelerator, load_preset
    from accel_sim.image.export import fold_chain

    model = load_weights("vgg16")
    folded = [step.bias for step in fold_chain(model) if step.bias is not None]
    assert max(np.abs(b).max() for b in folded) > 1
    with caplog.at_level("WARNING", logger="accel_sim.image.export"):
        image = export_model(model, calibration, 16, model_name="vgg16")
    assert "saturate" not in caplog.text
    assert any(layer.bias_shift > 0 for layer in image.weighted_layers)
    for layer, bias in zip(image.weighted_layers, folded):
        np.testing.assert_allclose(dequantize(layer.bias_format, layer.bias), bias,
                                   atol=2.0 ** -(layer.bias_format.frac_bits + 1))
    test = load_bundled_sample("test")
    fixed = np.mean(Accelerator(load_preset("edge16")).run(image, test.images).predictions == test.labels)
    fp32 = np.mean(predict_logits(model, test.images).argmax(1) == test.labels)
    assert abs(fixed - fp32) <= 0.003, (fixed, fp32)


def test_forced_saturation_is_reported(calibration, caplog):
    """One split for every tensor with too few integer bits: the saturated words are counted."""
    model = load_weights("vgg16")
    with caplog.at_level("WARNING", logger="accel_sim.image.export"):
        image = export_model(model, calibration, 16, frac_bits=31, model_name="vgg16")
    assert {layer.weight_format.name for layer in image.weighted_layers} == {"fixed16.31"}
    assert "biases saturate in fixed32.31" in caplog.text and "weights saturate in fixed16.31" in caplog.text
    assert "largest calibration output" in caplog.text


@pytest.mark.slow
def test_q15_16_alexnet_logits_equal_the_golden_reference(calibration):
    """AlexNet as the public FT-ClipAct code evaluates it: 32-bit words, Q15.16 for every tensor,
    on a 64-bit accumulator; the fast path's logits equal the golden reference's, bit for bit,
    and its predictions those of fp32."""
    from accel_sim.hardware import Accelerator, load_preset

    model = load_weights("alexnet")
    image = export_model(model, calibration, 32, frac_bits=16, model_name="alexnet")
    assert image.format_name == "fixed32" and image.input_format.name == "fixed32.16"
    sample = load_bundled_sample("test").subset(40)
    hw = load_preset("edge32")
    fast = Accelerator(hw).run(image, sample.images)
    golden = run_reference(image, sample.images, hw.datapath)
    assert fast.raw_logits.dtype == np.int64
    np.testing.assert_array_equal(fast.raw_logits, golden.raw_logits)
    np.testing.assert_array_equal(fast.predictions, predict_logits(model, sample.images).argmax(1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_bits=None, frac_bits=16), "frac_bits needs weight_bits"),
    (dict(weight_bits=16, frac_bits=8, weight_percentile=99.0), "exclude each other"),
    (dict(weight_bits=16, frac_bits=65), "frac_bits must be an integer in -64..64"),
])
def test_bad_fixed_splits_are_refused(odd_model, calibration, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_model(odd_model, calibration, **kwargs)


def test_input_normalisation_is_stored_and_used(odd_model, calibration, sample, tmp_path):
    """A model trained with other input statistics: the export takes them, the image stores them,
    and the golden reference feeds the model's own normalisation."""
    from accel_sim.data import normalize

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    image = export_model(odd_model, calibration, None, model_name="oddnet", input_mean=mean, input_std=std)
    back = read_image(write_image(image, tmp_path / "n.h5"))
    assert (back.input_mean, back.input_std) == (mean, std) and not back.default_normalization
    assert back.content_hash() == image.content_hash() != export_model(odd_model, calibration, None,
                                                                       model_name="oddnet").content_hash()
    with torch.no_grad():
        expected = odd_model(torch.from_numpy(normalize(sample.images, mean, std))).numpy()
    np.testing.assert_allclose(run_reference(back, sample.images, DP).logits, expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"input_std must be 3 finite numbers > 0"):
        export_model(odd_model, calibration, None, input_mean=mean, input_std=(1.0, 0.0, 1.0))


def test_schema_1_images_read_with_cifar10_normalisation(small_image, tmp_path):
    path = write_image(small_image, tmp_path / "v2.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 1
        del f.attrs["input_mean"], f.attrs["input_std"]
    old = read_image(path)
    assert old.default_normalization and old.content_hash() == small_image.content_hash()
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 2
    with pytest.raises(ValueError, match="root attribute 'input_mean' is missing"):
        read_image(path)


def test_cli_exports_a_module_of_your_own(tmp_path, monkeypatch, capsys):
    """``accel-sim export --module file.py:build --weights w.pt`` and ``pkg:build`` from the
    current directory, with the model's own normalisation."""
    (tmp_path / "tinynet.py").write_text(
        "from torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                         nn.Flatten(), nn.Linear(4 * 16 * 16, 10))\n")
    torch.manual_seed(0)
    import importlib.util
    spec = importlib.util.spec_from_file_location("tinynet_test", tmp_path / "tinynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.build().state_dict(), tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--module", "tinynet:build", "--weights", "w.pt", "--format", "fixed16",
                 "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--calibration", "32", "-o", "a.h5"]) == 0
    image = read_image(tmp_path / "a.h5")
    assert image.model == "tinynet" and image.input_std == (0.25, 0.25, 0.25)
    assert main(["export", "--module", str(tmp_path / "tinynet.py") + ":build", "--weights", "w.pt",
                 "--format", "fp32", "--name", "tiny", "--calibration", "32", "-o", "b.h5"]) == 0
    assert read_image(tmp_path / "b.h5").model == "tiny"
    capsys.readouterr()
    for argv, fragment in [(["--module", "tinynet:build"], "--module needs --weights"),
                           (["--module", "tinynet:nope", "--weights", "w.pt"], "has no callable 'nope'"),
                           (["--module", "no_such_module:build", "--weights", "w.pt"], "cannot import model module"),
                           (["--module", "tinynet:build", "--weights", "w.pt", "--mean", "1,2"],
                            "input_mean must be 3 finite numbers")]:
        assert main(["export", *argv, "--format", "fixed8", "--calibration", "8", "-o", "x.h5"]) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1, err


@pytest.mark.parametrize("text, expected", [("fp32", (None, None)), ("fixed16", (16, None)), ("fixed32.16", (32, 16)),
                                            ("fixed8.-2", (8, -2)), ("fixed33", None), ("fixed", None),
                                            ("fixed16.", None), ("fp16", None)])
def test_export_format_text(text, expected):
    """One parser for every place a format is named (export CLI, campaign files, analyze)."""
    from accel_sim.image.export import parse_export_format

    if expected is None:
        with pytest.raises(ValueError, match="format"):
            parse_export_format(text)
    else:
        assert parse_export_format(text) == expected
