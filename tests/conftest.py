"""Shared fixtures: where the full CIFAR-10 copy lies, and small synthetic data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """The full CIFAR-10 copy beside the checkout; tests using it skip when it is absent."""
    if not (SHARED_CIFAR10 / "test_batch.bin").is_file():
        pytest.skip(f"full CIFAR-10 copy not found at {SHARED_CIFAR10} (needs ../shared beside the checkout)")
    return SHARED_CIFAR10


def make_records(count: int, seed: int) -> np.ndarray:
    """``count`` random CIFAR-10 binary records (label byte + 3,072 pixel bytes)."""
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (count, 3073), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 10, count)
    return records


@pytest.fixture
def binary_test_dir(tmp_path: Path) -> Path:
    """A folder with a synthetic ``test_batch.bin`` (10,000 random records)."""
    make_records(10_000, seed=1).tofile(tmp_path / "test_batch.bin")
    return tmp_path


@pytest.fixture(scope="session")
def zoo_image():
    """``zoo_image(arch, bits)``: the zoo model exported once per session (``bits`` None for
    fp32), calibrated on 64 bundled training images drawn with seed 0. The library never
    modifies an image, so tests share them."""
    from accel_sim.data import draw_sample, load_bundled_sample
    from accel_sim.image.export import export_model
    from accel_sim.models import load_weights

    calibration = draw_sample(load_bundled_sample("train"), 64, np.random.default_rng(0)).images
    cache = {}

    def export(arch: str, bits: int | None):
        if (arch, bits) not in cache:
            cache[arch, bits] = export_model(load_weights(arch), calibration, bits, model_name=arch)
        return cache[arch, bits]

    return export
