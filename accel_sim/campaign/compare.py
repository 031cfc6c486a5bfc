"""Protections side by side: the accuracy of every variant of several campaigns (one fault site
and network each) at every rate, next to what its protection costs in hardware.

The costs follow from the variant's hardware and word width alone: bits stored per weight word
(SEC-DED code words under ECC), PEs, voters (TMR) and comparators (DMR) of the array, and the
cycle model's verdict (neither the ECC decoder, the voter nor the comparator adds a cycle in
:mod:`accel_sim.hardware.cycles`; DMR's ``recompute`` runs each flagged image again). Under DMR
the share of images flagged and of wrong predictions not flagged (silent) go beside the accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel_sim.campaign.config import CampaignConfig, load_campaign, protected_hardware
from accel_sim.campaign.report import draw_curve, save_figure, style_accuracy_axes, summarize
from accel_sim.campaign.runner import load_campaign_hardware
from accel_sim.campaign.store import RESULTS_NAME, read_results
from accel_sim.errors import AccelSimError
from accel_sim.hardware import memory
from accel_sim.hardware.redundancy import array_cost
from accel_sim.image.export import parse_export_format

THRESHOLD_COST = "a comparison per activation (threshold in the activation unit)"  # clipact and clamp
RERUN_CYCLES = "as unprotected, and again per flagged image"  # DMR recompute


@dataclass(frozen=True)
class ComparisonRow:
    """One variant of one campaign at one rate."""

    campaign: str
    network: str  # zoo name and format, e.g. "alexnet fp32"
    site: str
    variant: str
    protection: str
    activation: str
    rate: float
    trials: int
    accuracy: float  # percent
    ci95: float  # half-width, percentage points
    stored_bits_per_weight: int  # bits a weight word takes in the weight memory
    storage_overhead: float  # percent over the unprotected word
    pe_replicas: int
    voters: int
    comparators: int
    cycles: str  # against the unprotected array
    activation_cost: str
    flagged: float  # percent of images flagged (DMR)
    silent: float  # percent of images predicted wrong and not flagged
    recomputed: float  # percent of images run a second time (DMR recompute)


def comparison_rows(paths: list[str | os.PathLike]) -> list[ComparisonRow]:
    """The rows of every finished (variant, rate) of the campaign files ``paths``, read from each
    campaign's results file (its ``output`` folder, relative to the working directory)."""
    out = []
    for path in paths:
        config = load_campaign(path)
        results = Path(config.output or f"results/{config.name}") / RESULTS_NAME
        if not results.exists():
            raise AccelSimError(f"campaign {str(path)!r} has no results file {str(results)!r} yet: run it first "
                                f"(accel-sim campaign run {path})")
        _, rows = read_results(results)
        if not len(rows):
            raise AccelSimError(f"results file {str(results)!r} holds no finished job yet")
        out.extend(_campaign_rows(config, rows))
    return out


def _campaign_rows(config: CampaignConfig, rows: np.ndarray) -> list[ComparisonRow]:
    base = load_campaign_hardware(config)
    variants = {v.name: v for v in config.variants}
    out = []
    for s in summarize(rows, list(variants)):
        spec = variants[s.variant]
        fmt = spec.format or config.model.format
        hw = protected_hardware(base, spec.protection)
        word = parse_export_format(fmt)[0] or 32
        stored = memory.stored_bits(word, hw)
        array = array_cost(hw.rows, hw.cols, hw.pe_redundancy)
        out.append(ComparisonRow(
            config.name, f"{config.model.zoo or Path(config.model.image).stem} {fmt}", config.faults.site, s.variant,
            spec.protection, spec.activation, s.rate, s.trials, s.mean_accuracy, s.ci95, stored,
            100.0 * (stored - word) / word, array["pe_replicas"], array["voters"], array["comparators"],
            RERUN_CYCLES if hw.dmr_mismatch == "recompute" else "as unprotected",
            "" if spec.activation == "relu" else THRESHOLD_COST, s.flagged, s.silent, s.recomputed))
    return out


def plot_comparison(rows: list[ComparisonRow], stem: str | os.PathLike) -> list[Path]:
    """One panel per network and site (campaigns of the same pair share it), accuracy (mean, 95 %
    band) against the fault rate on a log axis, one line per variant (named with its campaign
    where two campaigns of a panel share a variant name); under DMR a dotted line for the images
    not silently wrong. Writes ``stem.png`` and ``stem.svg``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r.network, r.site) for r in rows))
    cols = min(len(panels), 2)  # two panels a row, so that many stay legible
    grid_rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(6.0 * cols, 4.6 * grid_rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        mine = [r for r in rows if (r.network, r.site) == panel]
        lines = list(dict.fromkeys((r.campaign, r.variant) for r in mine))
        shared = {v for _, v in lines if sum(1 for _, w in lines if w == v) > 1}
        for campaign, variant in lines:
            pts = sorted((r for r in mine if (r.campaign, r.variant) == (campaign, variant)), key=lambda r: r.rate)
            rates = np.array([r.rate for r in pts])
            label = f"{variant} ({campaign})" if variant in shared else variant
            draw_curve(ax, rates, np.array([r.accuracy for r in pts]), np.array([r.ci95 for r in pts]), label,
                       "--" if pts[0].protection != "none" else "-")
            if pts[0].comparators:  # DMR: the images that are right or flagged, i.e. not silently wrong
                ax.plot(rates, [100.0 - r.silent for r in pts], ":", marker="s", color=ax.lines[-1].get_color(),
                        clip_on=False, label=f"{label}: right or flagged")
        style_accuracy_axes(ax, f"{panel[0]}, {panel[1]}", legend_size=8)
    return save_figure(fig, stem, 110)
