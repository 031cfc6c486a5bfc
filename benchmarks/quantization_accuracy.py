"""Accuracy of exported accelerator images (golden reference) next to the float PyTorch model.

Not a test: it prints the table recorded in docs/image-format.md. Run:

    python benchmarks/quantization_accuracy.py [--images 1000] [--acc-bits 48]

Images are exported with the default calibration (512 of the bundled lossless training images,
seed 0) and run on the bundled lossless test images 0-999.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from accel_sim.data import draw_sample, load_bundled_sample
from accel_sim.image.export import export_model
from accel_sim.image.reference import run_reference
from accel_sim.models import load_weights
from accel_sim.models.evaluation import predict_logits
from accel_sim.numerics import Datapath


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--acc-bits", type=int, default=48)
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg16"])
    parser.add_argument("--formats", nargs="+", default=["fp32", "fixed16", "fixed8"])
    args = parser.parse_args()
    test = load_bundled_sample("test").subset(args.images)
    calibration = draw_sample(load_bundled_sample("train"), 512, np.random.default_rng(0))
    datapath = Datapath(args.acc_bits)
    print(f"data: {test.name}; golden reference, {args.acc_bits}-bit saturating accumulator, nearest-even")
    print("| model | format | float model | image (reference) | difference (pp) | same prediction | max abs logit diff | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        model = load_weights(name)
        float_logits = predict_logits(model, test.images)
        float_acc = 100 * np.mean(float_logits.argmax(1) == test.labels)
        for fmt in args.formats:
            bits = None if fmt == "fp32" else int(fmt.removeprefix("fixed"))
            image = export_model(model, calibration.images, bits, model_name=name)
            started = time.perf_counter()
            out = run_reference(image, test.images, datapath)
            seconds = time.perf_counter() - started
            acc = 100 * np.mean(out.predictions == test.labels)
            same = 100 * np.mean(out.predictions == float_logits.argmax(1))
            diff = np.abs(out.logits - float_logits).max()
            print(f"| {name} | {image.format_name} | {float_acc:.2f} % | {acc:.2f} % | {acc - float_acc:+.2f} | "
                  f"{same:.1f} % | {diff:.2e} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
