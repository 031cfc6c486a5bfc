"""Options and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from accel_sim.data import DATA_DIR_ENV, ImageSet, load_bundled_sample, load_cifar10, resolve_data_dir


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help=f"CIFAR-10 folder (default: ${DATA_DIR_ENV})")
    parser.add_argument("--download", action="store_true", help="fetch CIFAR-10 through torchvision if missing")


def load_data_or_sample(data_dir: Path | None, split: str, download: bool) -> ImageSet:
    """The split from the data folder, or the bundled lossless sample of that split when no folder
    is configured."""
    if resolve_data_dir(data_dir) is None and not download:
        return load_bundled_sample(split)
    return load_cifar10(data_dir, split, download=download)


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print ``rows`` as an aligned text table with the given column order."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        print("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", "").replace("%", ""))
        return True
    except ValueError:
        return False


MAX_IMAGES = 10_000_000
MAX_SEED = 2**63 - 1


def integer(low: int, high: int):
    """An argparse type: an integer in ``low..high`` (a usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must lie in {low}..{high}, got {value}")
        return value
    return parse


def number(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"must lie in {'(' if low_open else '['}{low:g}, {high:g}], got {text}")
        return value
    return parse


def comma_list(kind: type):
    """An argparse type: comma-separated values of ``kind`` (int or float)."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse
