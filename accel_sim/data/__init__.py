"""Data sets: CIFAR-10 in its official binary or Python layout, and the bundled sample."""

from accel_sim.data.cifar10 import (
    BUNDLED_SAMPLE_NAME,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASS_NAMES,
    DATA_DIR_ENV,
    ImageSet,
    draw_sample,
    load_bundled_sample,
    load_cifar10,
    normalize,
    resolve_data_dir,
)

__all__ = [
    "BUNDLED_SAMPLE_NAME",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CLASS_NAMES",
    "DATA_DIR_ENV",
    "ImageSet",
    "draw_sample",
    "load_bundled_sample",
    "load_cifar10",
    "normalize",
    "resolve_data_dir",
]
