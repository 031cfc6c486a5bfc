"""Cost of faults: faulty run time ÷ fault-free run time on the same batch, in one run.

Not a test. VGG-16 `fixed16` on the bundled images: one permanent PE fault (each register, both
dataflows) and weight-memory flips at rate 1e-5. Each round runs the fault-free and the faulty
network back to back, in alternating order; the figure is the median over rounds of the two
runs' ratio (this machine's cores change speed by up to 2x within minutes, so separate best-of
times compare different machine states). The best time of each is printed too.

    python benchmarks/fault_overhead.py [--images 256] [--rounds 7]
"""

from __future__ import annotations

import argparse

import numpy as np

from accel_sim.data import draw_sample, load_bundled_sample
from accel_sim.faults import DrawSpec, FaultMap, draw_fault_map, job_rng, run_with_faults
from accel_sim.hardware import Accelerator, HardwareConfig
from accel_sim.image.export import export_model
from accel_sim.models import load_weights
from accel_sim.runtime import tune_allocator
from alternating import alternating_rounds, timed  # benchmarks/ is on sys.path when a script here runs


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
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    images = load_bundled_sample("test").images[:args.images]
    calibration = draw_sample(load_bundled_sample("train"), 512, np.random.default_rng(0)).images
    image = export_model(load_weights("vgg16"), calibration, 16, model_name="vgg16")
    print(f"VGG-16 fixed16, {len(images)} images, {args.rounds} rounds")
    print("| dataflow | faults | faulty s (best) | fault-free s (best) | ratio (median of rounds) | ratio per round |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(1)
    for dataflow in ("ws", "os"):
        hw = HardwareConfig("edge16", 16, 16, dataflow=dataflow)
        acc = Accelerator(hw, batch_size=64)
        prepared = acc.prepare(image)
        cases = [(f"1 PE ({int(fmap.row[0])}, {int(fmap.col[0])}), {name} register bit {int(fmap.bit[0])}", fmap)
                 for reg, name in enumerate(("weight", "product", "psum"))
                 for fmap in [one_pe_fault(image, hw, reg, rng)]]
        memory = draw_fault_map(image, hw, DrawSpec("weight_memory", 1e-5), job_rng(0, dataflow))
        cases.append((f"weight memory 1e-5 ({len(memory)} flips)", memory))
        for label, fmap in cases:
            runs = {"clean": lambda: acc.run(image, images, prepared),
                    "faulty": lambda: run_with_faults(acc, image, images, fmap)}
            for run in runs.values():
                run()  # warm-up: JIT compilation, allocator, caches
            times = alternating_rounds({name: timed(run) for name, run in runs.items()}, args.rounds)
            ratios = np.array(times["faulty"]) / np.array(times["clean"])
            print(f"| {dataflow} | {label} | {min(times['faulty']):.2f} | {min(times['clean']):.2f} | "
                  f"{np.median(ratios):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} |", flush=True)


if __name__ == "__main__":
    main()
