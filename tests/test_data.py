import pickle

import numpy as np
import pytest

from accel_sim.data import (
    CLASS_NAMES,
    DATA_DIR_ENV,
    load_bundled_sample,
    load_cifar10,
    normalize,
    resolve_data_dir,
)
from tests.conftest import make_records


def test_binary_layout_reads_records_in_order(binary_test_dir):
    records = np.fromfile(binary_test_dir / "test_batch.bin", np.uint8).reshape(-1, 3073)
    data = load_cifar10(binary_test_dir, "test")
    assert len(data) == 10_000
    assert data.images.shape == (10_000, 3, 32, 32) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.labels, records[:, 0])
    # record layout: 1,024 red, then green, then blue, each row-major
    np.testing.assert_array_equal(data.images[7, 1, 2, 5], records[7, 1 + 1024 + 2 * 32 + 5])
    assert not data.images.flags.writeable


def test_binary_layout_in_archive_subfolder(tmp_path):
    sub = tmp_path / "cifar-10-batches-bin"
    sub.mkdir()
    make_records(10_000, seed=2).tofile(sub / "test_batch.bin")
    assert len(load_cifar10(tmp_path, "test")) == 10_000


def test_python_layout_equals_binary_layout(tmp_path, binary_test_dir):
    records = np.fromfile(binary_test_dir / "test_batch.bin", np.uint8).reshape(-1, 3073)
    py_dir = tmp_path / "py" / "cifar-10-batches-py"
    py_dir.mkdir(parents=True)
    with open(py_dir / "test_batch", "wb") as f:
        pickle.dump({b"data": records[:, 1:], b"labels": records[:, 0].tolist()}, f)
    from_py = load_cifar10(tmp_path / "py", "test")
    from_bin = load_cifar10(binary_test_dir, "test")
    np.testing.assert_array_equal(from_py.images, from_bin.images)
    np.testing.assert_array_equal(from_py.labels, from_bin.labels)


def test_truncated_bin_is_refused_with_its_name(binary_test_dir):
    path = binary_test_dir / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"test_batch\.bin.*truncated or corrupt"):
        load_cifar10(binary_test_dir, "test")


def test_out_of_range_label_is_refused(binary_test_dir):
    path = binary_test_dir / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[3073 * 5] = 10
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="label 10"):
        load_cifar10(binary_test_dir, "test")


def test_corrupt_python_batch_is_refused(tmp_path):
    py_dir = tmp_path / "cifar-10-batches-py"
    py_dir.mkdir()
    (py_dir / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable torchvision batch"):
        load_cifar10(tmp_path, "test")


def test_missing_folder_says_what_was_looked_for(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist: looked for test_batch\.bin.*--download"):
        load_cifar10(tmp_path / "nowhere", "test")


def test_empty_folder_says_what_was_looked_for(tmp_path):
    with pytest.raises(ValueError, match=r"no complete CIFAR-10 train split.*data_batch_1\.bin"):
        load_cifar10(tmp_path, "train")


def test_no_folder_at_all_names_the_option_and_variable(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=f"--data-dir.*{DATA_DIR_ENV}"):
        load_cifar10(None, "test")


def test_environment_variable_gives_the_folder(monkeypatch, binary_test_dir):
    monkeypatch.setenv(DATA_DIR_ENV, str(binary_test_dir))
    assert resolve_data_dir(None) == binary_test_dir
    assert len(load_cifar10(None, "test")) == 10_000
    assert resolve_data_dir("/elsewhere").as_posix() == "/elsewhere"


def test_unknown_split_is_refused(binary_test_dir):
    with pytest.raises(ValueError, match="split must be one of"):
        load_cifar10(binary_test_dir, "validation")


def test_bundled_sample_is_the_lossless_test_images():
    sample = load_bundled_sample()
    assert len(sample) == 1000
    assert "lossless" in sample.name and "0-999" in sample.name
    assert sample.class_names == CLASS_NAMES
    assert np.bincount(sample.labels, minlength=10).min() > 50  # all classes present


def test_bundled_sample_matches_shared_copy(cifar10_dir):
    lossless = np.fromfile(cifar10_dir / "lossless" / "test_batch_0-999.bin", np.uint8).reshape(-1, 3073)
    sample = load_bundled_sample()
    np.testing.assert_array_equal(sample.images.reshape(1000, -1), lossless[:, 1:])
    full = load_cifar10(cifar10_dir, "test")
    np.testing.assert_array_equal(full.labels[:1000], sample.labels)


def test_subset_slices_and_validates():
    sample = load_bundled_sample()
    part = sample.subset(10, offset=5)
    np.testing.assert_array_equal(part.images, sample.images[5:15])
    assert "images 5-14" in part.name
    with pytest.raises(ValueError, match="subset count"):
        sample.subset(1000, offset=1)
    with pytest.raises(ValueError, match="subset offset"):
        sample.subset(offset=-1)


def test_normalize_matches_definition():
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(1, 3, 4, 4)
    out = normalize(images)
    assert out.dtype == np.float32
    expected = (images[0, 2, 1, 3] / 255.0 - 0.4465) / 0.2616
    assert out[0, 2, 1, 3] == pytest.approx(expected, rel=1e-6)
