"""CIFAR-10 loading from the official binary layout, torchvision's Python layout, or a download.

Images are returned as ``uint8`` arrays of shape ``(N, 3, 32, 32)`` (channel-major, RGB) with
``int64`` labels; normalisation to the network's input scale is a separate step
(:func:`normalize`) so the same pixels feed PyTorch, the golden reference and the emulator.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from accel_sim.errors import AccelSimError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ACCEL_SIM_DATA"
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Per-channel statistics of the original CIFAR-10 training set on [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10_000
SPLITS = ("train", "test")
_BIN_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_PY_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
# Where each layout may sit inside the given folder (the folder itself, or the name the
# official archive unpacks to).
_BIN_SUBDIRS = ("", "cifar-10-batches-bin")
_PY_SUBDIRS = ("", "cifar-10-batches-py")

BUNDLED_SAMPLE_FILES = {
    "test": "cifar10_test_0-999_lossless.bin",
    "train": "cifar10_train_0-999_lossless.bin",
}
BUNDLED_SAMPLE_NAME = "CIFAR-10 test images 0-999 (lossless, bundled)"
BUNDLED_TRAIN_SAMPLE_NAME = "CIFAR-10 training images 0-999 (lossless, bundled)"


@dataclass(frozen=True)
class ImageSet:
    """A labelled set of 32×32 RGB images.

    Attributes
    ----------
    images : numpy.ndarray
        ``uint8`` array of shape ``(N, 3, 32, 32)``, read-only.
    labels : numpy.ndarray
        ``int64`` array of shape ``(N,)`` with values in ``0..9``, read-only.
    name : str
        What the images are, for reports (e.g. ``"CIFAR-10 test split (/data/cifar10)"``).
    class_names : tuple of str
        The ten class names, index = label.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[1:] != (3, 32, 32):
            raise AccelSimError(
                f"ImageSet.images must be uint8 of shape (N, 3, 32, 32), got {self.images.dtype} "
                f"{self.images.shape}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise AccelSimError(
                f"ImageSet.labels must have shape ({self.images.shape[0]},), got {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, count: int | None = None, offset: int = 0) -> "ImageSet":
        """Return images ``offset .. offset+count-1`` (all from ``offset`` when ``count`` is None)."""
        if offset < 0 or offset >= len(self):
            raise AccelSimError(f"subset offset must lie in 0..{len(self) - 1} (the set holds {len(self)} images), "
                                f"got {offset}")
        if count is not None and (count <= 0 or offset + count > len(self)):
            raise AccelSimError(
                f"subset count must lie in 1..{len(self) - offset} for offset {offset} of "
                f"{len(self)} images, got {count}"
            )
        stop = len(self) if count is None else offset + count
        if offset == 0 and stop == len(self):
            return self
        name = f"{self.name}, images {offset}-{stop - 1}"
        return ImageSet(self.images[offset:stop], self.labels[offset:stop], name, self.class_names)


def draw_sample(data: ImageSet, count: int, rng: np.random.Generator) -> ImageSet:
    """``count`` distinct images of ``data`` drawn with ``rng``, kept in their original order."""
    if not 1 <= count <= len(data):
        raise AccelSimError(f"sample count must lie in 1..{len(data)}, got {count}")
    idx = np.sort(rng.choice(len(data), size=count, replace=False))
    return ImageSet(data.images[idx], data.labels[idx], f"{data.name}, {count} drawn", data.class_names)


def normalize(images: np.ndarray, mean: tuple[float, ...] = CIFAR10_MEAN,
              std: tuple[float, ...] = CIFAR10_STD) -> np.ndarray:
    """Scale ``uint8`` pixels to a network's input: ``(x / 255 - mean) / std`` per channel.

    Parameters
    ----------
    images : numpy.ndarray
        ``uint8`` array of shape ``(N, C, H, W)``.
    mean, std : tuple of float
        One value per channel (default: CIFAR-10's training-set statistics).

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape.
    """
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / np.float32(255.0)) - mean) / std


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The CIFAR-10 folder: ``data_dir`` if given, else ``$ACCEL_SIM_DATA``, else None."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir)
    env = os.environ.get(DATA_DIR_ENV, "")
    return Path(env) if env else None


def load_bundled_sample(split: str = "test") -> ImageSet:
    """Lossless CIFAR-10 images shipped inside the package: test images 0-999 (``split="test"``,
    the evaluation sample) or training images 0-999 (``split="train"``, for calibration and
    activation profiling)."""
    if split not in SPLITS:
        raise AccelSimError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    ref = resources.files("accel_sim.data").joinpath(BUNDLED_SAMPLE_FILES[split])
    with resources.as_file(ref) as path:
        images, labels = _read_bin_file(Path(path), expected_records=1000)
    images.flags.writeable = False
    labels.flags.writeable = False
    return ImageSet(images, labels, BUNDLED_SAMPLE_NAME if split == "test" else BUNDLED_TRAIN_SAMPLE_NAME)


def load_cifar10(
    data_dir: str | os.PathLike | None,
    split: str = "test",
    download: bool = False,
) -> ImageSet:
    """Load a CIFAR-10 split from a folder in the binary or Python layout.

    Parameters
    ----------
    data_dir : path-like or None
        Folder holding ``*.bin`` batches (official binary layout) or ``cifar-10-batches-py``
        (torchvision's layout); None means ``$ACCEL_SIM_DATA``.
    split : {"train", "test"}
        50,000 training or 10,000 test images.
    download : bool
        Fetch the Python layout through torchvision into ``data_dir`` when no copy is found.

    Raises
    ------
    ValueError
        When no folder is given, none of the layouts is found there, or a file is truncated or
        corrupt; the message names what was looked for and how to fix it.
    """
    if split not in SPLITS:
        raise AccelSimError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = resolve_data_dir(data_dir)
    if folder is None:
        raise AccelSimError(
            f"no CIFAR-10 folder given: pass --data-dir DIR or set {DATA_DIR_ENV} to a folder holding "
            "the binary batches (data_batch_1.bin ... test_batch.bin) or cifar-10-batches-py"
        )
    found = _find_layout(folder, split)
    if found is None and download:
        _download(folder)
        found = _find_layout(folder, split)
    if found is None:
        raise AccelSimError(_missing_message(folder, split))
    layout, paths = found
    reader = _read_bin_file if layout == "binary" else _read_python_file
    parts = [reader(path, expected_records=RECORDS_PER_FILE) for path in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images.flags.writeable = False
    labels.flags.writeable = False
    logger.info("loaded %d %s images from %s (%s layout)", len(labels), split, folder, layout)
    return ImageSet(images, labels, f"CIFAR-10 {split} split ({folder})")


def _find_layout(folder: Path, split: str) -> tuple[str, list[Path]] | None:
    for subdirs, names, layout in ((_BIN_SUBDIRS, _BIN_FILES, "binary"), (_PY_SUBDIRS, _PY_FILES, "python")):
        for sub in subdirs:
            paths = [folder / sub / name for name in names[split]]
            if all(p.is_file() for p in paths):
                return layout, paths
    return None


def _missing_message(folder: Path, split: str) -> str:
    if not folder.exists():
        where = f"CIFAR-10 folder {str(folder)!r} does not exist"
    elif not folder.is_dir():
        where = f"CIFAR-10 folder {str(folder)!r} is not a folder"
    else:
        where = f"no complete CIFAR-10 {split} split in {str(folder)!r}"
    wanted = ", ".join(_BIN_FILES[split]) if split == "test" else "data_batch_1.bin ... data_batch_5.bin"
    return (
        f"{where}: looked for {wanted} (binary layout, also under cifar-10-batches-bin/) and "
        f"cifar-10-batches-py/ (torchvision layout); point --data-dir or {DATA_DIR_ENV} at such a "
        "folder, or add --download to fetch it through torchvision"
    )


def _read_bin_file(path: Path, expected_records: int) -> tuple[np.ndarray, np.ndarray]:
    expected = expected_records * RECORD_BYTES
    size = path.stat().st_size
    if size != expected:
        raise AccelSimError(
            f"CIFAR-10 file {str(path)!r} has {size:,} bytes, expected {expected:,} "
            f"({expected_records:,} records of {RECORD_BYTES} bytes): it is truncated or corrupt; "
            "replace it with an intact copy"
        )
    raw = np.fromfile(path, dtype=np.uint8).reshape(expected_records, RECORD_BYTES)
    labels = raw[:, 0].astype(np.int64)
    _check_labels(labels, path)
    images = np.ascontiguousarray(raw[:, 1:].reshape(expected_records, 3, 32, 32))
    return images, labels


def _read_python_file(path: Path, expected_records: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise AccelSimError(
            f"CIFAR-10 file {str(path)!r} is not a readable torchvision batch ({exc}); "
            "replace it with an intact copy"
        ) from exc
    if data.shape != (expected_records, 3 * 32 * 32) or labels.shape != (expected_records,):
        raise AccelSimError(
            f"CIFAR-10 file {str(path)!r} holds data of shape {data.shape} and {labels.shape[0]} labels, "
            f"expected ({expected_records}, 3072): it is truncated or corrupt"
        )
    _check_labels(labels, path)
    return np.ascontiguousarray(data.reshape(expected_records, 3, 32, 32)), labels


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise AccelSimError(
            f"CIFAR-10 file {str(path)!r} holds label {int(labels.max())}, outside 0..9: it is corrupt"
        )


def _download(folder: Path) -> None:
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as exc:  # pragma: no cover - torchvision is a dependency
        raise AccelSimError(f"--download needs torchvision, which cannot be imported ({exc})") from exc
    logger.info("downloading CIFAR-10 into %s through torchvision", folder)
    try:
        CIFAR10(root=str(folder), train=True, download=True)
    except Exception as exc:  # network and archive errors come in many types
        raise AccelSimError(
            f"could not download CIFAR-10 into {str(folder)!r} ({type(exc).__name__}: {exc}); "
            "check the network, or copy the data there by hand"
        ) from exc
