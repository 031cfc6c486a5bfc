"""Protections side by side: the accuracy of every variant of several campaigns (one fault site
and network each) at every rate, next to what its protection costs in hardware.

The costs follow from the variant's hardware and word width alone: bits stored per weight word
(SEC-DED code words under ECC), PEs and voters of the array (TMR), and the cycle model's
verdict (neither the ECC decoder nor the voter adds a cycle in :mod:`accel_sim.hardware.cycles`).
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
    cycles: str  # against the unprotected array
    activation_cost: str


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
            100.0 * (stored - word) / word, array["pe_replicas"], array["voters"], "as unprotected",
            "" if spec.activation == "relu" else THRESHOLD_COST))
    return out


def plot_comparison(rows: list[ComparisonRow], stem: str | os.PathLike) -> list[Path]:
    """One panel per campaign (network and site), accuracy (mean, 95 % band) against the fault
    rate on a log axis, one line per variant; writes ``stem.png`` and ``stem.svg``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    campaigns = list(dict.fromkeys(r.campaign for r in rows))
    fig, axes = plt.subplots(1, len(campaigns), figsize=(5.2 * len(campaigns), 4.2), squeeze=False)
    for ax, name in zip(axes[0], campaigns):
        mine = [r for r in rows if r.campaign == name]
        for variant in dict.fromkeys(r.variant for r in mine):
            pts = sorted((r for r in mine if r.variant == variant), key=lambda r: r.rate)
            draw_curve(ax, np.array([r.rate for r in pts]), np.array([r.accuracy for r in pts]),
                       np.array([r.ci95 for r in pts]), variant, "--" if pts[0].protection != "none" else "-")
        style_accuracy_axes(ax, f"{mine[0].network}, {mine[0].site}", legend_size=8)
    return save_figure(fig, stem, 110)
