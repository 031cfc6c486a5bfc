"""``accel-sim analyze``: per-layer and per-bit resilience of an image."""

from __future__ import annotations

import argparse
from pathlib import Path

from accel_sim.cli.common import MAX_IMAGES, MAX_SEED, add_data_options, integer, load_data_or_sample, number, print_table
from accel_sim.faults.model import COUNT_MODES, MODELS, SITES


def register(sub: argparse._SubParsersAction) -> None:
    from accel_sim.campaign.analysis import GROUPINGS, AnalysisSettings

    defaults = AnalysisSettings()
    a = sub.add_parser(
        "analyze", help="accuracy drop when faults hit only one layer, only one bit position, or both",
        description="Resilience analysis: for each weighted layer (--by layer), each bit position (--by bit) or "
        "each pair (--by layer-bit), run --trials permanent fault maps restricted to it and report the mean "
        "accuracy, its 95%% CI and the drop from the fault-free accuracy; writes CSV and PNG plots.")
    source = a.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="the image to analyse")
    source.add_argument("--zoo", choices=("alexnet", "vgg16"),
                        help="a zoo model, exported on the fly with --format (512 calibration images, seed 0)")
    a.add_argument("--format", help="with --zoo: fp32, fixedW or fixedW.F (F fractional bits in every tensor)")
    a.add_argument("--hw", type=Path, help="hardware file (TOML) or built-in preset name (default: edge16)")
    a.add_argument("--by", default="layer,bit",
                   help=f"comma-separated groupings among {', '.join(GROUPINGS)} (default layer,bit)")
    a.add_argument("--site", choices=SITES, default=defaults.site)
    a.add_argument("--model", choices=MODELS, default=defaults.model, help="fault model")
    a.add_argument("--rate", type=number(0, 1, low_open=True), default=defaults.rate,
                   help=f"per-bit fault rate over each cell's bits (default {defaults.rate:g})")
    a.add_argument("--count-mode", choices=COUNT_MODES, default=defaults.count_mode)
    a.add_argument("--trials", type=integer(1, 100_000), default=defaults.trials, help="fault maps per cell")
    a.add_argument("--subset", type=integer(1, MAX_IMAGES), default=500, help="test images (default 500)")
    a.add_argument("--seed", type=integer(0, MAX_SEED), default=defaults.seed)
    a.add_argument("--batch-size", type=integer(1, 65536), default=250)
    add_data_options(a)
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("-o", "--output", required=True, type=Path, help="folder for analysis.csv and the plots")
    a.set_defaults(handler=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    from accel_sim.campaign.analysis import GROUPINGS, AnalysisSettings, analyze, plot_analysis, write_analysis_csv
    from accel_sim.errors import AccelSimError
    from accel_sim.hardware import Accelerator, load_hardware
    from accel_sim.image.hdf5 import read_image

    if args.image is not None and args.format is not None:
        raise AccelSimError("--format goes with --zoo: an image file has its format")
    groupings = tuple(g.strip() for g in args.by.split(","))
    bad = [g for g in groupings if g not in GROUPINGS]
    if bad or not groupings:
        raise AccelSimError(f"--by takes groupings among {', '.join(GROUPINGS)}, got {args.by!r}")
    image = read_image(args.image) if args.image is not None else _zoo_image(args)
    hw = load_hardware(args.hw if args.hw is not None else "edge16")
    settings = AnalysisSettings(args.site, args.model, args.rate, args.count_mode, args.trials, args.seed)
    data = load_data_or_sample(args.data_dir, "test", args.download)
    data = data.subset(min(args.subset, len(data)))
    clean, results = analyze(image, Accelerator(hw, batch_size=args.batch_size), data.images, data.labels, settings,
                             groupings, progress=not args.no_progress)
    args.output.mkdir(parents=True, exist_ok=True)
    table = write_analysis_csv(results, args.output / "analysis.csv")
    title = (f"{image.model} {image.format_name} on {hw.name}: {settings.site} {settings.model}, rate "
             f"{settings.rate:g}, {settings.trials} trials, {len(data)} images")
    plots = plot_analysis(results, clean, title, args.output)
    print(f"{title}; fault-free top-1 {clean:.2f} % on {data.name}")
    print_table([{"by": r.grouping, "layer": "" if r.layer < 0 else f"{r.layer} {r.layer_name}",
                  "bit": "" if r.bit < 0 else r.bit, "accuracy %": f"{r.mean_accuracy:.2f}", "95% CI ±": f"{r.ci95:.2f}",
                  "drop pp": f"{r.drop:.2f}", "faults": f"{r.mean_faults:.1f}"} for r in results if r.grouping != "layer-bit"],
                ["by", "layer", "bit", "accuracy %", "95% CI ±", "drop pp", "faults"])
    print(f"csv: {table}; plots: {', '.join(str(p) for p in plots)}")
    return 0


def _zoo_image(args: argparse.Namespace):
    import numpy as np

    from accel_sim.cli.image_commands import export_format
    from accel_sim.data import draw_sample
    from accel_sim.errors import AccelSimError
    from accel_sim.image.export import export_model
    from accel_sim.models import load_weights

    if args.format is None:
        raise AccelSimError("--zoo needs --format (fp32, fixedW or fixedW.F, e.g. fixed32.16)")
    bits, frac = export_format(args.format)
    train = load_data_or_sample(args.data_dir, "train", args.download)
    calibration = draw_sample(train, min(512, len(train)), np.random.default_rng(0)).images
    return export_model(load_weights(args.zoo), calibration, bits, model_name=args.zoo, frac_bits=frac)
