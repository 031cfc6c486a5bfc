"""``accel-sim export`` and ``accel-sim inspect``: accelerator images."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from accel_sim.cli.common import (
    MAX_IMAGES,
    MAX_SEED,
    add_data_options,
    comma_list,
    integer,
    load_data_or_sample,
    number,
    print_table,
)
from accel_sim.data import draw_sample
from accel_sim.errors import AccelSimError
from accel_sim.models import ARCHITECTURES

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a trained model to an accelerator image (HDF5)",
                        description="Fold, calibrate and quantise a zoo model (--model) or your own nn.Module "
                                    "(--module) into an accelerator image.")
    source = ex.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", choices=sorted(ARCHITECTURES), help="a zoo architecture")
    source.add_argument("--module", metavar="MODULE:BUILD",
                        help="your own model: pkg.mod:build or file.py:build, a callable returning the nn.Module "
                             "(needs --weights)")
    ex.add_argument("--weights", type=Path, help="weights file: a state_dict or the zoo format (default with "
                                                  "--model: the zoo's)")
    ex.add_argument("--name", help="model name stored in the image (default: the zoo name or the callable's)")
    ex.add_argument("--mean", type=comma_list(float), help="per-channel input mean the model was trained with "
                                                          "(default: CIFAR-10's)")
    ex.add_argument("--std", type=comma_list(float), help="per-channel input std (default: CIFAR-10's)")
    ex.add_argument("--format", required=True,
                    help="fp32, fixedW (e.g. fixed16, fixed8) or fixedW.F (F fractional bits in every tensor)")
    ex.add_argument("--act-bits", type=integer(2, 32), help="activation word width (default: the weight width)")
    ex.add_argument("--weight-percentile", type=number(0, 100, low_open=True), help="size weight formats for this percentile of |w|")
    ex.add_argument("--frac-bits", type=integer(-64, 64),
                    help="one fixed split for every tensor: this many fractional bits (e.g. --format fixed32 "
                         "--frac-bits 16 is Q15.16); default: each tensor's format from its calibrated range")
    ex.add_argument("--calibration", type=integer(1, MAX_IMAGES), default=512, help="training images that set activation formats")
    ex.add_argument("--seed", type=integer(0, MAX_SEED), default=0, help="seed of the calibration draw")
    add_data_options(ex)
    ex.add_argument("-o", "--output", required=True, type=Path, help="image file to write")
    ex.set_defaults(handler=run_export)

    ins = sub.add_parser("inspect", help="table of an image's layers, formats and weight bits")
    ins.add_argument("image", type=Path)
    ins.set_defaults(handler=run_inspect)


def export_format(text: str) -> tuple[int | None, int | None]:
    """:func:`accel_sim.image.export.parse_export_format` with its errors naming ``--format``."""
    from accel_sim.image.export import parse_export_format

    try:
        return parse_export_format(text)
    except AccelSimError as exc:
        raise AccelSimError(f"--{exc}") from None


def run_export(args: argparse.Namespace) -> int:
    from accel_sim.data import CIFAR10_MEAN, CIFAR10_STD
    from accel_sim.image.export import export_model
    from accel_sim.image.hdf5 import write_image
    from accel_sim.models import load_user_model, load_weights, zoo_weights_path
    from accel_sim.models.zoo import file_sha256

    weight_bits, frac_bits = export_format(args.format)
    if frac_bits is not None and args.frac_bits is not None and frac_bits != args.frac_bits:
        raise AccelSimError(f"--format {args.format} and --frac-bits {args.frac_bits} give two splits")
    frac_bits = args.frac_bits if frac_bits is None else frac_bits
    if weight_bits is None and args.act_bits is not None:
        raise AccelSimError("--act-bits needs a fixed-point --format: an fp32 image stores float32 activations")
    if args.module is not None:
        if args.weights is None:
            raise AccelSimError("--module needs --weights (a state_dict file of the model it builds)")
        model, weights = load_user_model(args.module, args.weights), args.weights
        name = args.name or Path(args.module.rpartition(":")[0]).stem.rpartition(".")[2]
    else:
        weights = args.weights if args.weights is not None else zoo_weights_path(args.model)
        model, name = load_weights(args.model, weights), args.name or args.model
    train = load_data_or_sample(args.data_dir, "train", args.download)
    calibration = draw_sample(train, args.calibration, np.random.default_rng(args.seed))
    image = export_model(model, calibration.images, weight_bits, args.act_bits, model_name=name,
                         class_names=train.class_names, source_sha256=file_sha256(weights),
                         weight_percentile=args.weight_percentile, frac_bits=frac_bits,
                         input_mean=args.mean or CIFAR10_MEAN, input_std=args.std or CIFAR10_STD)
    write_image(image, args.output)
    print(f"wrote {args.output}: {image.model} {image.format_name}, {len(image.layers)} layers, "
          f"{image.weight_bits:,} weight bits; calibrated on {calibration.name}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from accel_sim.image import WeightedLayer
    from accel_sim.image.hdf5 import read_image
    from accel_sim.mitigation import hardening_of

    image = read_image(args.image)
    hardening = hardening_of(image)
    sources = {int(k): v.get("source", "given") for k, v in hardening.get("layers", {}).items()}
    print(f"{args.image}: model {image.model}, format {image.format_name}, input {image.input_shape} "
          f"as {image.input_format.name}, {len(image.class_names)} classes, schema tool {image.tool_version}")
    print(f"input normalisation: (x/255 - mean) / std, mean {', '.join(f'{v:g}' for v in image.input_mean)}, "
          f"std {', '.join(f'{v:g}' for v in image.input_std)}{' (CIFAR-10)' if image.default_normalization else ''}")
    rows = []
    for i, layer in enumerate(image.layers):
        row = {"#": i, "op": layer.op, "name": layer.name, "in": "x".join(map(str, layer.in_shape)),
               "out": "x".join(map(str, layer.out_shape))}
        if isinstance(layer, WeightedLayer):
            w = layer.weight
            row.update({
                "weight": layer.weight_format.name, "bias": layer.bias_format.name, "act in": layer.in_format.name,
                "act out": layer.out_format.name if layer.out_format else "logits",
                "activation": layer.activation + (f" T={layer.threshold:.6g}" if layer.threshold is not None else ""),
                "T from": sources.get(i, "given" if layer.threshold is not None else ""),
                "params": f"{w.size + layer.bias.size:,}", "weight range": _real_range(layer),
                "weight bits": f"{layer.weight_bits:,}",
            })
        else:
            row["act in"] = layer.format.name
        rows.append(row)
    print_table(rows, ["#", "op", "name", "in", "out", "weight", "bias", "act in", "act out", "activation",
                       "T from", "params", "weight range", "weight bits"])
    if hardening:
        print(f"hardened: {hardening['method']} thresholds on the ReLU image {hardening['base_image_hash'][:12]}; "
              f"settings: {', '.join(f'{k}={v}' for k, v in sorted(hardening.get('settings', {}).items())) or 'none'}")
    params = sum(layer.weight.size + layer.bias.size for layer in image.weighted_layers)
    print(f"total: {params:,} parameters, {image.weight_bits:,} weight bits (the weight_memory fault site)")
    return 0


def _real_range(layer) -> str:
    from accel_sim.numerics import dequantize

    values = dequantize(layer.weight_format, np.array([layer.weight.min(), layer.weight.max()]))
    return f"{values[0]:.4g}..{values[1]:.4g}"
