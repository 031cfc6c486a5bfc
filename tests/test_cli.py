import subprocess
import sys

import pytest

from accel_sim.cli import main
from accel_sim.data import DATA_DIR_ENV
from accel_sim.models import build_model, save_weights


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "accel_sim", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "train" in result.stdout and "eval" in result.stdout


def test_eval_on_bundled_sample(capsys, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    code, out, _ = run_cli(capsys, "eval", "--model", "alexnet")
    assert code == 0
    assert "CIFAR-10 test images 0-999 (lossless, bundled)" in out
    assert "top-1:" in out and "/1000)" in out


def test_missing_data_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--model", "alexnet", "--data-dir", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "does not exist", "--data-dir")


def test_truncated_bin_in_data_folder(capsys, binary_test_dir):
    path = binary_test_dir / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "eval", "--model", "alexnet", "--data-dir", str(binary_test_dir))
    assert_one_line_error(code, err, "test_batch.bin", "truncated")


def test_unknown_model_name(capsys):
    code, _, err = run_cli(capsys, "eval", "--model", "resnet50")
    assert_one_line_error(code, err, "resnet50")


def test_weights_for_other_architecture(capsys, tmp_path):
    path = save_weights(build_model("alexnet"), "alexnet", tmp_path / "alex.pt")
    code, _, err = run_cli(capsys, "eval", "--model", "vgg16", "--weights", str(path))
    assert_one_line_error(code, err, "alexnet weights, not vgg16")


def test_train_refuses_missing_data_in_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model", "vgg16", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "train split")


@pytest.mark.slow
def test_console_script_error_has_no_traceback_and_debug_shows_it(tmp_path):
    exe = [sys.executable, "-m", "accel_sim"]
    plain = subprocess.run(exe + ["eval", "--model", "alexnet", "--data-dir", str(tmp_path / "x")],
                           capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(exe + ["--debug", "eval", "--model", "alexnet", "--data-dir", str(tmp_path / "x")],
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_accelerator_options_with_model_are_refused(capsys):
    code, _, err = run_cli(capsys, "eval", "--model", "alexnet", "--hw", "edge16", "--subset", "5")
    assert_one_line_error(code, err, "--hw", "go(es) with --image")


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """``accel-sim inspect IMAGE | head -1``: the reader stops early; accel-sim exits 0 without a word."""
    from accel_sim.data import load_bundled_sample
    from accel_sim.image.export import export_model
    from accel_sim.image.hdf5 import write_image
    from accel_sim.models import load_weights

    image = write_image(export_model(load_weights("alexnet"), load_bundled_sample("train").images[:8], 8,
                                     model_name="alexnet"), tmp_path / "a.h5")
    proc = subprocess.Popen([sys.executable, "-m", "accel_sim", "inspect", str(image)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before accel-sim has imported: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
