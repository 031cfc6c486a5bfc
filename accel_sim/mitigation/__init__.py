"""Layer 5: mitigation — FT-ClipAct's ACT_max profiling, clipped / clamped activation units, and
the fine-tuning of their thresholds on the fault AUC. The campaign layer calls it; it calls the
faults, hardware and image layers below it."""

from accel_sim.mitigation.apply import (
    ACTIVATIONS,
    METHODS,
    activation_layers,
    harden,
    hardening_of,
    with_activation,
    with_thresholds,
)
from accel_sim.mitigation.profile import profile_act_max
from accel_sim.mitigation.search import Round, SearchSettings, area_under_curve, interval_search
from accel_sim.mitigation.thresholds import Thresholds, read_thresholds, write_thresholds
from accel_sim.mitigation.tune import MODES, PAPER_RATES, TuneSettings, draw_tuning_data, tune_thresholds

__all__ = [
    "ACTIVATIONS", "METHODS", "MODES", "PAPER_RATES", "Round", "SearchSettings", "Thresholds", "TuneSettings",
    "activation_layers", "area_under_curve", "draw_tuning_data", "harden", "hardening_of", "interval_search",
    "profile_act_max", "read_thresholds", "tune_thresholds", "with_activation", "with_thresholds",
    "write_thresholds",
]
