"""Cost of faults: faulty run time ÷ fault-free run time on the same images, in one run.

Not a test. VGG-16 `fixed16` on the bundled images: one permanent PE fault (each register, both
dataflows) and weight-memory flips at rate 1e-5. Each case is a pair, the faulty network and the
fault-free one; in each round every pair of a dataflow runs batch by batch (64 images), the two
sides of a pair back to back on every batch, the order of all runs reversed from one batch to the
next; before its first batch each faulty side sets its faults up (map checks, patched weight
copies: :func:`accel_sim.faults.prepare_permanent_faults`, what
:func:`accel_sim.faults.run_with_faults` does once per run). A case's ratio in a round is its
faulty side's total time, set-up included, over its fault-free side's, and the figure is the
median over rounds. This machine's cores change speed by up to 2× within minutes, so only runs
close in time compare: separate best-of times compare different machine states, and even whole
256-image runs back to back moved a median by ±5 % where batch-by-batch pairs moved it by < 1 %
(fault-free against itself). Running every case in every round spreads a slow spell of the
machine over all cases instead of one. The first row of each dataflow runs the fault-free
network on both sides: its spread is the measurement's own.

    python benchmarks/fault_overhead.py [--images 256] [--rounds 11]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

from accel_sim.data import draw_sample, load_bundled_sample
from accel_sim.faults import DrawSpec, FaultMap, check_fault_map, draw_fault_map, job_rng, prepare_permanent_faults
from accel_sim.hardware import Accelerator, HardwareConfig
from accel_sim.image.export import export_model
from accel_sim.models import load_weights
from accel_sim.runtime import tune_allocator
from alternating import interleaved_rounds  # benchmarks/ is on sys.path when a script here runs


def one_pe_fault(image, hw, register: int, rng) -> FaultMap:
    row, col = int(rng.integers(hw.rows)), int(rng.integers(hw.cols))
    bit = {0: 12, 1: 20, 2: 30}[register]
    return FaultMap(site=[3], layer=[-1], tensor=[-1], index=[-1], row=[row], col=[col], register=[register],
                    bit=[bit], model=[0], image=[-1], access=[-1], image_hash=image.content_hash(),
                    hw_hash=hw.config_hash())


def main() -> None:
    tune_allocator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    images = load_bundled_sample("test").images[:args.images]
    calibration = draw_sample(load_bundled_sample("train"), 512, np.random.default_rng(0)).images
    image = export_model(load_weights("vgg16"), calibration, 16, model_name="vgg16")
    print(f"VGG-16 fixed16, {len(images)} images in batches of 64, {args.rounds} rounds")
    print("| dataflow | faults | faulty s per round (best) | fault-free s per round (best) | ratio (median of rounds) "
          "| ratio per round |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(1)
    batches = [images[start:start + 64] for start in range(0, len(images), 64)]
    for dataflow in ("ws", "os"):
        hw = HardwareConfig("edge16", 16, 16, dataflow=dataflow)
        acc = Accelerator(hw, batch_size=64)
        prepared = acc.prepare(image)
        cases = [("none (fault-free on both sides)", None)]
        cases += [(f"1 PE ({int(fmap.row[0])}, {int(fmap.col[0])}), {name} register bit {int(fmap.bit[0])}", fmap)
                  for reg, name in enumerate(("weight", "product", "psum"))
                  for fmap in [one_pe_fault(image, hw, reg, rng)]]
        memory = draw_fault_map(image, hw, DrawSpec("weight_memory", 1e-5), job_rng(0, dataflow))
        cases.append((f"weight memory 1e-5 ({len(memory)} flips)", memory))
        ready: dict[str, object] = {}  # each faulty side's set-up, redone each round

        def clean(batch):
            return None if batch is None else acc.run(image, batch, prepared)

        def faulty(batch, label, fmap):
            if fmap is None:
                return clean(batch)
            if batch is None:  # the set-up of a run of all the images
                check_fault_map(fmap, image, hw, n_images=len(images))
                ready[label] = prepare_permanent_faults(acc, image, fmap)
                return None
            return acc.run(image, batch, ready[label].prepared, ready[label].layer_faults)

        # each case beside its own fault-free run: the pair stays adjacent when the order reverses
        runs = {}
        for label, fmap in cases:
            runs[label, "clean"] = clean
            runs[label, "faulty"] = functools.partial(faulty, label=label, fmap=fmap)
        for run in (clean, *(runs[label, "faulty"] for label, _ in cases)):
            run(None)
            run(batches[0])  # warm-up: JIT compilation, allocator, caches
        times = interleaved_rounds(runs, [None, *batches], args.rounds)
        for label, _ in cases:
            faulty_s, clean_s = np.array(times[label, "faulty"]), np.array(times[label, "clean"])
            ratios = faulty_s / clean_s
            print(f"| {dataflow} | {label} | {faulty_s.min():.2f} | {clean_s.min():.2f} | "
                  f"{np.median(ratios):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} |", flush=True)


if __name__ == "__main__":
    main()
