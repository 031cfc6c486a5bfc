"""Options and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
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
