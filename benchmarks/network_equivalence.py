"""Whole networks: the emulator against the golden reference on the 1,000 bundled images.

Not a test (the golden reference takes minutes per image set); tests/test_hardware.py runs the
same comparison on a subset in CI. Prints, per model and format, whether logits and predictions
are identical for each hardware preset and engine.

    python benchmarks/network_equivalence.py [--images 1000] [--models alexnet] [--formats 16 8]
    python benchmarks/network_equivalence.py --models alexnet --formats 32q16 --presets edge32

A format is a word width (calibrated per tensor) or ``WqF``: W-bit words with F fractional bits for
every tensor (``32q16`` = Q15.16).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from accel_sim.data import draw_sample, load_bundled_sample
from accel_sim.hardware import Accelerator, load_hardware
from accel_sim.image.export import export_model
from accel_sim.image.reference import run_reference
from accel_sim.models import load_weights

PRESETS = Path(__file__).resolve().parents[1] / "accel_sim" / "hardware" / "presets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--presets", nargs="+", default=["edge16", "edge16-os", "array32", "tpu128"])
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg16"])
    parser.add_argument("--formats", nargs="+", default=["16", "8"])
    args = parser.parse_args()
    images = load_bundled_sample("test").images[:args.images]
    calibration = draw_sample(load_bundled_sample("train"), 512, np.random.default_rng(0)).images
    print(f"{len(images)} bundled lossless test images; presets {', '.join(args.presets)}")
    print("| model | format | preset | dataflow | array | identical logits | identical predictions |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        model = load_weights(name)
        for text in args.formats:
            bits, _, frac = text.partition("q")
            image = export_model(model, calibration, int(bits), model_name=name, frac_bits=int(frac) if frac else None)
            expected = {}
            for hw in (load_hardware(PRESETS / f"{p}.toml") for p in args.presets):
                if hw.datapath not in expected:
                    expected[hw.datapath] = run_reference(image, images, hw.datapath)
                out, golden = Accelerator(hw).run(image, images), expected[hw.datapath]
                print(f"| {name} | {image.format_name} | {hw.name} | {hw.dataflow} | {hw.rows}x{hw.cols} | "
                      f"{np.array_equal(out.raw_logits, golden.raw_logits)} | "
                      f"{np.array_equal(out.predictions, golden.predictions)} |", flush=True)


if __name__ == "__main__":
    main()
