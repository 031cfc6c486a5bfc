"""The zoo's model cards: their figures are reproduced by `accel-sim eval` to the last digit."""

import re
import tomllib

import pytest

from accel_sim.cli import main
from accel_sim.models import build_model
from accel_sim.models.zoo import ZOO_DIR, file_sha256


def card(name):
    text = (ZOO_DIR / name / "MODEL.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block, f"{name}/MODEL.md has no toml block"
    return tomllib.loads(block.group(1))


def eval_top1(capsys, *argv):
    assert main(["eval", *argv]) == 0
    out = capsys.readouterr().out
    return float(re.search(r"top-1:\s+([\d.]+) %", out).group(1))


ZOO = sorted(p.name for p in ZOO_DIR.iterdir() if (p / "MODEL.md").is_file())


def model_args(name):
    """``accel-sim eval`` arguments for a zoo entry: its architecture and, when they are not the
    architecture's default weights, its weights file."""
    c = card(name)
    arch = c.get("arch", name)
    return ["--model", arch] + ([] if arch == name else ["--weights", str(ZOO_DIR / name / c["weights"])])


def test_the_zoo_lists_every_model_card():
    """The cards the tests below run over are found by listing the zoo: none may go missing."""
    assert {"alexnet", "vgg16", "alexnet-fat16"} <= set(ZOO)


@pytest.mark.parametrize("name", ZOO)
def test_card_describes_the_committed_weights(name):
    c = card(name)
    arch = c.get("arch", name)
    assert c["name"] == name
    assert file_sha256(ZOO_DIR / name / c["weights"]) == c["weights_sha256"]
    assert sum(p.numel() for p in build_model(arch).parameters()) == c["parameters"]
    assert c["train_command"].startswith(f"accel-sim train --model {arch} ")
    assert f"--epochs {c['epochs']}" in c["train_command"] and f"--seed {c['seed']}" in c["train_command"]
    assert c["test_accuracy_jpeg_copy"] >= c["paper_baseline"]


@pytest.mark.parametrize("name", ZOO)
def test_bundled_sample_accuracy_reproduces_card(name, capsys, monkeypatch):
    monkeypatch.delenv("ACCEL_SIM_DATA", raising=False)
    assert eval_top1(capsys, *model_args(name)) == card(name)["test_accuracy_lossless_0_999"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_full_test_set_accuracy_reproduces_card(name, capsys, cifar10_dir):
    assert eval_top1(capsys, *model_args(name), "--data-dir", str(cifar10_dir)) == card(name)["test_accuracy_jpeg_copy"]
