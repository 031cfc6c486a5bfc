"""FT-ClipAct threshold tuning: fast mode against the naive reference, on the same machine and data.

Tunes every activation layer of a zoo model twice with the same settings — ``fast`` (each distinct
candidate scored once, the network up to the tuned layer computed once per fault map, the layers
after it re-run only for images whose activations change) and ``naive`` (every candidate of every
round, every fault map, the whole network from its input) — and prints both wall times, their
ratio, and whether the chosen thresholds and every round's AUCs are identical.

    python benchmarks/clipact_tuning.py [--model alexnet] [--format fp32] [--tune-images 100] [--trials 2]

The search itself (4 candidates, up to 4 rounds, early stop after 3 at 0.2 pp) and the rates are
the defaults; fewer tuning images and trials than the defaults (500, 5) keep the naive run to
minutes. Data: bundled lossless training images.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import numpy as np
import torch

from accel_sim.data import load_bundled_sample
from accel_sim.hardware import Accelerator, load_hardware
from accel_sim.image.export import export_model
from accel_sim.mitigation import TuneSettings, draw_tuning_data, tune_thresholds
from accel_sim.mitigation import tune as tune_module
from accel_sim.models import load_weights
from accel_sim.runtime import tune_allocator


def timed_tuning(image, accelerator, profile, tune, settings, mode):
    rounds = []
    original = tune_module.interval_search

    def recording(*args, **kwargs):
        best, found = original(*args, **kwargs)
        rounds.append(found)
        return best, found

    tune_module.interval_search = recording  # records every layer's rounds, changes nothing
    try:
        started = time.perf_counter()
        thresholds = tune_thresholds(image, accelerator, profile, tune, settings, mode)
        return time.perf_counter() - started, thresholds, rounds
    finally:
        tune_module.interval_search = original


def main() -> None:
    tune_allocator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet", choices=("alexnet", "vgg16"))
    parser.add_argument("--format", default="fp32", help="fp32 or fixedW")
    parser.add_argument("--tune-images", type=int, default=100)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--hw", default="edge16", help="hardware file or built-in preset name")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    train = load_bundled_sample("train")
    bits = None if args.format == "fp32" else int(args.format.removeprefix("fixed"))
    image = export_model(load_weights(args.model), train.images[:512], bits, model_name=args.model)
    settings = dataclasses.replace(TuneSettings(), tune_images=args.tune_images, trials=args.trials)
    profile, tune = draw_tuning_data(train, settings)
    accelerator = Accelerator(load_hardware(args.hw), batch_size=args.batch_size)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}; {args.model} {args.format} on {accelerator.hw.name}; {len(tune)} tuning images, "
          f"{len(settings.rates)} rates x {settings.trials} trials, {settings.search}")
    results = {}
    for mode in ("fast", "naive"):
        results[mode] = timed_tuning(image, accelerator, profile, tune, settings, mode)
        seconds, thresholds, _ = results[mode]
        print(f"{mode:>5}: {seconds:8.1f} s  thresholds {[round(v, 5) for v in thresholds.values.values()]}", flush=True)
    fast, naive = results["fast"], results["naive"]
    same_thresholds = fast[1].values == naive[1].values
    same_rounds = fast[2] == naive[2]
    candidates = sum(len(r.candidates) for layer in naive[2] for r in layer)
    distinct = sum(len({c for r in layer for c in r.candidates}) for layer in fast[2])
    print(f"| model | format | fast s | naive s | naive / fast | identical thresholds | identical round AUCs |")
    print(f"| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.model} | {args.format} | {fast[0]:.1f} | {naive[0]:.1f} | {naive[0] / fast[0]:.2f} | "
          f"{'yes' if same_thresholds else 'NO'} | {'yes' if same_rounds else 'NO'} |")
    print(f"candidates scored: naive {candidates}, fast {distinct} distinct; "
          f"layers {list(fast[1].values)}; mean AUC of the chosen thresholds "
          f"{np.mean([r[-1].aucs[r[-1].best] for r in fast[2] if r]):.2f} %")


if __name__ == "__main__":
    main()
