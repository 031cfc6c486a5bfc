"""Resilience analysis: the accuracy a network loses when faults hit only one layer, only one bit
position, or one bit position of one layer.

Each *cell* (a layer, a bit position, or both) runs ``trials`` fault maps drawn with the fault
spec restricted to it (:class:`accel_sim.faults.DrawSpec` ``layers`` / ``bits``), each seeded from
the seed and the cell and trial only (:func:`accel_sim.faults.job_rng`), so a cell's result does
not depend on which other cells run. The accuracy drop is measured against the fault-free run on
the same images.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from accel_sim.campaign.report import ci95_half_width
from accel_sim.errors import AccelSimError
from accel_sim.faults import DrawSpec, draw_fault_map, job_rng, run_with_faults
from accel_sim.faults.draw import eligible_bits
from accel_sim.faults.model import COUNT_MODES, MODELS, SITES
from accel_sim.hardware import Accelerator
from accel_sim.image import Image, WeightedLayer

logger = logging.getLogger(__name__)

GROUPINGS = ("layer", "bit", "layer-bit")


@dataclass(frozen=True)
class AnalysisSettings:
    """The faults of every cell: a site, a model, a per-bit rate over the cell's bits, how the
    count is drawn (``binomial`` by default: a cell of B bits gets Binomial(B, rate) faults, so a
    larger layer gets more), permanent; ``trials`` maps per cell; the seed."""

    site: str = "weight_memory"
    model: str = "flip"
    rate: float = 1e-5
    count_mode: str = "binomial"
    trials: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("site", SITES), ("model", MODELS), ("count_mode", COUNT_MODES)):
            if getattr(self, name) not in allowed:
                raise AccelSimError(f"analysis {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 < self.rate <= 1:
            raise AccelSimError(f"analysis rate must be a number in (0, 1], got {self.rate!r}")
        for name, low, high in (("trials", 1, 100_000), ("seed", 0, 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AccelSimError(f"analysis {name} must be an integer in {low}..{high}, got {value!r}")

    def spec(self, layer: int | None, bit: int | None) -> DrawSpec:
        return DrawSpec(self.site, self.rate, self.model, "permanent", self.count_mode,
                        None if layer is None else (layer,), None if bit is None else (bit,))


@dataclass(frozen=True)
class CellResult:
    """One cell: ``layer`` / ``bit`` are -1 where the cell does not restrict them."""

    grouping: str
    layer: int
    layer_name: str
    bit: int
    trials: int
    mean_accuracy: float  # percent
    ci95: float  # half-width over trials, percentage points
    drop: float  # percentage points below the fault-free accuracy
    mean_faults: float


def analysis_cells(image: Image, accelerator: Accelerator, settings: AnalysisSettings,
                   grouping: str) -> list[tuple[int | None, int | None]]:
    """The (layer, bit) cells of ``grouping`` that hold at least one bit of the site: every
    weighted layer, every bit position of the widest word, or every pair."""
    if grouping not in GROUPINGS:
        raise AccelSimError(f"analysis grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    layers = [i for i, layer in enumerate(image.layers) if isinstance(layer, WeightedLayer)]
    width = max(layer.weight_format.word_bits for layer in image.weighted_layers)
    if grouping == "layer":
        candidates = [(layer, None) for layer in layers]
    elif grouping == "bit":
        candidates = [(None, bit) for bit in range(width)]
    else:
        candidates = [(layer, bit) for layer in layers for bit in range(width)]
    cells = []
    for layer, bit in candidates:
        try:
            eligible_bits(image, accelerator.hw, settings.spec(layer, bit))
        except AccelSimError:  # no bit of the site in this cell (e.g. a bit beyond the layer's words)
            continue
        cells.append((layer, bit))
    if not cells:
        raise AccelSimError(f"no {grouping} of {image.model} {image.format_name} holds a bit of the {settings.site} site")
    return cells


def analyze(image: Image, accelerator: Accelerator, images: np.ndarray, labels: np.ndarray,
            settings: AnalysisSettings, groupings: tuple[str, ...] = ("layer", "bit"),
            progress: bool = False) -> tuple[float, list[CellResult]]:
    """The fault-free accuracy (percent) of ``image`` on ``uint8`` ``images`` and, per cell of each
    grouping, the accuracy under faults restricted to it."""
    if len(images) == 0 or len(images) != len(labels):
        raise AccelSimError(f"analysis needs images and as many labels, got {len(images)} and {len(labels)}")
    accelerator.check_image(image)
    clean = 100.0 * float(np.mean(accelerator.run(image, images).predictions == labels))
    image_hash = image.content_hash()
    results = []
    for grouping in groupings:
        cells = analysis_cells(image, accelerator, settings, grouping)
        bar = tqdm(total=len(cells) * settings.trials, desc=f"{image.model} by {grouping}", disable=not progress,
                   unit="run")
        for layer, bit in cells:
            accuracy, faults = [], []
            for trial in range(settings.trials):
                key = f"analysis/{layer}/{bit}/{trial}"
                fmap = draw_fault_map(image, accelerator.hw, settings.spec(layer, bit), job_rng(settings.seed, key),
                                      len(images), settings.seed, key, image_hash=image_hash)
                out = run_with_faults(accelerator, image, images, fmap)
                accuracy.append(100.0 * float(np.mean(out.predictions == labels)))
                faults.append(len(fmap))
                bar.update()
            values = np.array(accuracy)
            results.append(CellResult(grouping, -1 if layer is None else layer,
                                      "" if layer is None else image.layers[layer].name, -1 if bit is None else bit,
                                      settings.trials, float(values.mean()), ci95_half_width(values),
                                      clean - float(values.mean()), float(np.mean(faults))))
        bar.close()
    logger.info("resilience analysis of %s %s: fault-free %.2f %%, %d cells", image.model, image.format_name,
                clean, len(results))
    return clean, results


def write_analysis_csv(results: list[CellResult], path: str | os.PathLike) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CellResult.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    return path


def plot_analysis(results: list[CellResult], clean: float, title: str, folder: str | os.PathLike) -> list[Path]:
    """Per grouping present: bars of the accuracy drop per layer or per bit (95 % CI whiskers,
    cut to the drops an accuracy in [0, 100] allows), and a layer × bit heat map of the drop; PNG
    files in ``folder``. ``clean``: the fault-free accuracy (percent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    written = []
    for grouping, axis in (("layer", "layer"), ("bit", "bit")):
        rows = [r for r in results if r.grouping == grouping]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(max(6.4, 0.28 * len(rows)), 3.8))
        labels = [f"{r.layer} {r.layer_name}" if axis == "layer" else str(r.bit) for r in rows]
        drop = np.array([r.drop for r in rows])
        half = np.array([r.ci95 for r in rows])
        whiskers = [np.minimum(half, drop - (clean - 100.0)), np.minimum(half, clean - drop)]
        ax.bar(range(len(rows)), drop, yerr=whiskers, capsize=2, color="tab:red")
        ax.set_xticks(range(len(rows)), labels, rotation=90 if axis == "layer" else 0, fontsize=7)
        ax.set_xlabel("faulty layer (index, name)" if axis == "layer" else "faulty bit position (0 = LSB)")
        ax.set_ylabel("accuracy drop (pp)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        written.append(folder / f"by_{grouping}.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    grid = [r for r in results if r.grouping == "layer-bit"]
    if grid:
        layers = sorted({r.layer for r in grid})
        bits = sorted({r.bit for r in grid})
        drop = np.full((len(layers), len(bits)), np.nan)
        for r in grid:
            drop[layers.index(r.layer), bits.index(r.bit)] = r.drop
        fig, ax = plt.subplots(figsize=(max(6.4, 0.25 * len(bits)), max(3.5, 0.3 * len(layers))))
        shown = ax.imshow(drop, aspect="auto", cmap="magma_r", vmin=0, vmax=max(1.0, float(np.nanmax(drop))))
        names = {r.layer: r.layer_name for r in grid}
        ax.set_yticks(range(len(layers)), [f"{i} {names[i]}" for i in layers], fontsize=7)
        ax.set_xticks(range(len(bits)), [str(b) for b in bits], fontsize=6)
        ax.set_xlabel("faulty bit position (0 = LSB)")
        ax.set_ylabel("faulty layer")
        ax.set_title(title, fontsize=9)
        fig.colorbar(shown, ax=ax, label="accuracy drop (pp)")
        fig.tight_layout()
        written.append(folder / "by_layer_bit.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
