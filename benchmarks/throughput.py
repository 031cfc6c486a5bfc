"""Emulator throughput against PyTorch float32 eager on the same batch, in one run.

Not a test. Prints images/s of the emulator (fast exact path) for VGG-16 and AlexNet images at
fixed16, fixed8 and fp32, of the zoo's PyTorch model in float32 eager mode (channels-last), the
ratio emulator ÷ torch, and the MAC rate of the faithful (MAC-by-MAC) path on a few images.
Torch and emulator runs alternate (each after a warm-up) and each figure is the best of its
runs, so that drift on a shared machine hits both sides alike; torch's figure on a row is its
best so far for that model.

    python benchmarks/throughput.py [--images 256] [--repeats 5] [--hw campaigns/hardware/edge16.toml]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from accel_sim.data import draw_sample, load_bundled_sample
from accel_sim.hardware import Accelerator, HardwareConfig, load_hardware
from accel_sim.hardware.lowering import gemm_shape
from accel_sim.image.export import export_model
from accel_sim.models import load_weights
from accel_sim.runtime import tune_allocator
from accel_sim.models.evaluation import predict


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: JIT compilation, allocator, caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    tune_allocator()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hw", help="hardware file (TOML) or built-in preset name (default: edge16)")
    parser.add_argument("--faithful-images", type=int, default=2)
    args = parser.parse_args()
    hw = load_hardware(args.hw) if args.hw else HardwareConfig("edge16", 16, 16)
    images = load_bundled_sample("test").images[:args.images]
    calibration = draw_sample(load_bundled_sample("train"), 512, np.random.default_rng(0)).images
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}; hardware {hw.name} ({hw.rows}x{hw.cols} {hw.dataflow}); "
          f"{len(images)} images, batch {args.batch_size}, best of {args.repeats}")
    print("| model | torch fp32 img/s | format | emulator img/s | emulator / torch | faithful GMAC/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("vgg16", "alexnet"):
        model = load_weights(name)
        fast_model = load_weights(name).to(memory_format=torch.channels_last)
        torch_s = float("inf")
        for fmt in ("fixed16", "fixed8", "fp32"):
            bits = None if fmt == "fp32" else int(fmt.removeprefix("fixed"))
            image = export_model(model, calibration, bits, model_name=name)
            accelerator = Accelerator(hw, batch_size=args.batch_size)
            prepared = accelerator.prepare(image)
            emu_s = float("inf")
            for _ in range(args.repeats):  # alternate, so that drift on a shared machine hits both alike
                torch_s = min(torch_s, best_seconds(lambda: predict(fast_model, images, batch_size=args.batch_size), 1))
                emu_s = min(emu_s, best_seconds(lambda: accelerator.run(image, images, prepared), 1))
            torch_rate, rate = len(images) / torch_s, len(images) / emu_s
            faithful = "—"
            if bits is not None:
                few = images[:args.faithful_images]
                slow = Accelerator(hw, engine="faithful", batch_size=args.batch_size)
                slow_s = best_seconds(lambda: slow.run(image, few, prepared), 1)
                macs = sum(gemm_shape(layer).macs for layer in image.weighted_layers) * len(few)
                faithful = f"{macs / slow_s / 1e9:.2f}"
            print(f"| {name} | {torch_rate:.1f} | {fmt} | {rate:.1f} | {rate / torch_rate:.2f} | {faithful} |",
                  flush=True)


if __name__ == "__main__":
    main()
