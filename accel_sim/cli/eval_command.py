"""``accel-sim eval``: accuracy of a zoo model (PyTorch) or of an accelerator image."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from accel_sim.cli.common import add_data_options, load_data_or_sample
from accel_sim.data import DATA_DIR_ENV
from accel_sim.models import ARCHITECTURES
from accel_sim.numerics import OVERFLOW_MODES, ROUNDING_MODES, Datapath

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="accuracy of a model or an accelerator image on CIFAR-10",
        description="Top-1 accuracy of a zoo model (--model, PyTorch float32) or of an accelerator image "
        f"(--image). Without --data-dir and ${DATA_DIR_ENV} it uses the bundled sample: CIFAR-10 test "
        "images 0-999, lossless.",
    )
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", choices=sorted(ARCHITECTURES), help="a zoo model, run in PyTorch")
    what.add_argument("--image", type=Path, help="an accelerator image (HDF5), run on the datapath")
    ev.add_argument("--weights", type=Path, help="with --model: weights file (default: the zoo's)")
    add_data_options(ev)
    ev.add_argument("--split", choices=("test", "train"), default="test")
    ev.add_argument("--subset", type=int, help="number of images (default: all)")
    ev.add_argument("--offset", type=int, default=0, help="index of the first image")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--device", default="cpu", help="with --model: torch device")
    ev.add_argument("--engine", choices=("reference",), default="reference",
                    help="with --image: the golden reference implementation of the numeric contract")
    ev.add_argument("--acc-bits", type=int, default=48, help="with --image: accumulator width in bits")
    ev.add_argument("--overflow", choices=OVERFLOW_MODES, default="saturate", help="accumulator overflow mode")
    ev.add_argument("--rounding", choices=ROUNDING_MODES, default="nearest_even", help="rescaling rounding mode")
    ev.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    if args.weights is not None and args.model is None:
        raise ValueError("--weights goes with --model; an image holds its own weights")
    data = load_data_or_sample(args.data_dir, args.split, args.download).subset(args.subset, args.offset)
    if args.model is not None:
        from accel_sim.models import load_weights, zoo_weights_path
        from accel_sim.models.evaluation import predict
        from accel_sim.models.zoo import file_sha256

        weights = args.weights if args.weights is not None else zoo_weights_path(args.model)
        model = load_weights(args.model, weights)
        preds = predict(model, data.images, batch_size=args.batch_size, device=args.device)
        print(f"model:    {args.model} ({weights}, sha256 {file_sha256(weights)[:12]})")
        nan_count = 0
    else:
        from accel_sim.image.hdf5 import read_image
        from accel_sim.image.reference import run_reference

        image = read_image(args.image)
        datapath = Datapath(args.acc_bits, args.overflow, args.rounding)
        out = run_reference(image, data.images, datapath, batch_size=min(args.batch_size, 64))
        preds, nan_count = out.predictions, out.nan_count
        print(f"image:    {image.model} {image.format_name} ({args.image})")
        print(f"engine:   reference, {args.acc_bits}-bit {args.overflow} accumulator, {args.rounding} rescaling")
    correct = int(np.sum(preds == data.labels))
    print(f"data:     {data.name}")
    print(f"top-1:    {100.0 * correct / len(data):.2f} % ({correct}/{len(data)})")
    if nan_count:
        print(f"non-finite logits: {nan_count} images")
    return 0
