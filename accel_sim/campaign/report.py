"""Campaign reports: accuracy per (variant, rate) with 95 % confidence intervals, the
improvement of each variant over the baseline, the area under the accuracy-vs-rate curve, and
plots in the style of the FT-ClipAct paper's figures 7 and 8."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from accel_sim.mitigation import area_under_curve as auc_of


@dataclass(frozen=True)
class SummaryRow:
    variant: str
    rate: float
    trials: int
    mean_accuracy: float  # percent
    ci95: float  # half-width, percentage points
    std: float
    improvement: float  # percentage points over the baseline variant at this rate
    improvement_ci95: float  # half-width of the improvement's 95 % CI (Welch), percentage points
    mean_faults: float
    nan_images: int
    flagged: float  # mean percent of images the hardware flagged (DMR)
    silent: float  # mean percent of images predicted wrong and not flagged
    recomputed: float  # mean percent of images run a second time (DMR recompute)


def summarize(rows: np.ndarray, variants: list[str], baseline: str | None = None) -> list[SummaryRow]:
    """Per (variant, rate): mean top-1 accuracy over trials (percent), the half-width of its
    95 % confidence interval (Student t, n − 1 degrees of freedom; 0 for one trial), and the
    difference to ``baseline`` (default: the first variant) in percentage points with the
    half-width of its 95 % confidence interval (:func:`difference_ci95_half_width`: the variants
    may have different numbers of trials)."""
    baseline = baseline or variants[0]
    acc = 100.0 * rows["correct"] / np.maximum(rows["total"], 1)
    names = np.array([v.decode() for v in rows["variant"]])
    means, samples = {}, {}
    out = []
    for variant in variants:
        for rate in sorted(set(rows["rate"][names == variant].tolist())):
            sel = (names == variant) & (rows["rate"] == rate)
            a = acc[sel]
            n = int(sel.sum())
            std = float(np.std(a, ddof=1)) if n > 1 else 0.0
            half = ci95_half_width(a)
            means[(variant, rate)] = float(a.mean())
            samples[(variant, rate)] = a
            shares = [float((100.0 * rows[c][sel] / np.maximum(rows["total"][sel], 1)).mean())
                      for c in ("flagged", "silent", "recomputed")]
            out.append((variant, rate, n, float(a.mean()), half, std, float(rows["faults"][sel].mean()),
                        int(rows["nan_count"][sel].sum()), shares))
    return [SummaryRow(v, r, n, m, h, s, m - means.get((baseline, r), float("nan")),
                       0.0 if v == baseline else  # the baseline against itself: exactly 0
                       difference_ci95_half_width(samples[(v, r)], samples.get((baseline, r), np.zeros(0))), f, nan,
                       *shares)
            for v, r, n, m, h, s, f, nan, shares in out]


def ci95_half_width(values: np.ndarray) -> float:
    """Half-width of the 95 % confidence interval of the mean of ``values`` (Student t, n − 1
    degrees of freedom); 0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def difference_ci95_half_width(a: np.ndarray, b: np.ndarray) -> float:
    """Half-width of the 95 % confidence interval of ``mean(a) − mean(b)`` for independent
    samples of possibly different sizes and variances (Welch: Student t with the
    Welch–Satterthwaite degrees of freedom); NaN with fewer than two values on a side, 0 when
    both sides are constant."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if va + vb == 0:
        return 0.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(stats.t.ppf(0.975, df) * math.sqrt(va + vb))


def area_under_curve(summary: list[SummaryRow], variant: str) -> float:
    """Area under the variant's mean accuracy over its rates (:func:`accel_sim.mitigation.area_under_curve`:
    equally spaced x positions, so a mean accuracy in percent — the FT-ClipAct search metric)."""
    points = [s.mean_accuracy for s in sorted(summary, key=lambda s: s.rate) if s.variant == variant]
    return auc_of(points) if points else float("nan")


@dataclass(frozen=True)
class AucRow:
    variant: str
    trials: int  # trials finished at every rate
    mean: float  # percent
    ci95: float  # half-width over trials, percentage points


def common_rates(rows: np.ndarray, variants: list[str]) -> tuple[list[str], list[float]]:
    """The variants of ``variants`` that have rows, and the rates every one of them has (a
    campaign run some cells at a time may hold different rates per variant)."""
    names = np.array([v.decode() for v in rows["variant"]])
    present = [v for v in variants if (names == v).any()]
    shared = set.intersection(*(set(rows["rate"][names == v].tolist()) for v in present)) if present else set()
    return present, sorted(shared)


def auc_summary(rows: np.ndarray, variants: list[str], rates: list[float] | None = None) -> list[AucRow]:
    """Per variant: the AUC of each trial (trial t at every rate: its own faults at each rate)
    and their mean with a 95 % confidence interval (Student t over trials; 0 for one trial).
    Over ``rates`` when given, else over every rate the variant has; trials not finished at
    every one of them are left out."""
    acc = 100.0 * rows["correct"] / np.maximum(rows["total"], 1)
    names = np.array([v.decode() for v in rows["variant"]])
    out = []
    for variant in variants:
        sel = (names == variant) & (np.isin(rows["rate"], rates) if rates is not None else True)
        rates_here = sorted(set(rows["rate"][sel].tolist()))
        by_trial: dict[int, dict[float, float]] = {}
        for rate, trial, a in zip(rows["rate"][sel], rows["trial"][sel], acc[sel]):
            by_trial.setdefault(int(trial), {})[float(rate)] = float(a)
        aucs = np.array([auc_of([points[r] for r in rates_here]) for points in by_trial.values()
                         if len(points) == len(rates_here)])
        n = aucs.size
        half = ci95_half_width(np.asarray(aucs))
        out.append(AucRow(variant, n, float(aucs.mean()) if n else float("nan"), half))
    return out


def write_rows_csv(rows: list, path: str | os.PathLike) -> Path:
    """Dataclass rows (:class:`SummaryRow`, comparison rows, …) as CSV, one column per field."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    return path


def draw_curve(ax, rates: np.ndarray, mean: np.ndarray, half: np.ndarray, label: str, linestyle: str = "-") -> None:
    """One variant's mean accuracy against the positive rates, with its 95 % band."""
    positive = rates > 0
    x, mean, half = rates[positive], mean[positive], half[positive]
    if not x.size:
        return
    line, = ax.plot(x, mean, marker="o", label=label, linestyle=linestyle)
    ax.fill_between(x, np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100), color=line.get_color(), alpha=0.2)


def style_accuracy_axes(ax, title: str, legend_size: float | None = None) -> None:
    """Log rate axis, accuracy 0–100 %, grid, title and legend, as the paper's figures."""
    ax.set_xscale("log")
    ax.set_xlabel("fault rate (per bit)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=legend_size)


def plot(summary: list[SummaryRow], variants: list[str], title: str, stem: str | os.PathLike) -> list[Path]:
    """Accuracy (mean, 95 % band) against fault rate on a log axis, one line per variant; writes
    ``stem.png`` and ``stem.svg``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant in variants:
        pts = sorted((s for s in summary if s.variant == variant), key=lambda s: s.rate)
        draw_curve(ax, np.array([s.rate for s in pts]), np.array([s.mean_accuracy for s in pts]),
                   np.array([s.ci95 for s in pts]), variant)
    style_accuracy_axes(ax, title)
    return save_figure(fig, stem, 150)


def save_figure(fig, stem: str | os.PathLike, dpi: int) -> list[Path]:
    """Write ``stem.png`` (a 256-colour palette image: a quarter of the size of full colour,
    small enough to commit beside the docs) and ``stem.svg``, and close the figure."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image as PilImage

    fig.tight_layout()
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=dpi)
    png, svg = Path(f"{stem}.png"), Path(f"{stem}.svg")
    PilImage.open(rendered).convert("RGB").quantize(256).save(png, optimize=True)
    fig.savefig(svg)
    plt.close(fig)
    return [png, svg]
