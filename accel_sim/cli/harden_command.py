"""``accel-sim harden``: from a plain image to one with clipped (FT-ClipAct) or clamped activations."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from accel_sim.cli.common import (
    MAX_IMAGES,
    MAX_SEED,
    add_data_options,
    comma_list,
    integer,
    load_data_or_sample,
    number,
)
from accel_sim.errors import AccelSimError
from accel_sim.faults.model import COUNT_MODES, MODELS, SITES
from accel_sim.hardware import ENGINES

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from accel_sim.mitigation import PAPER_RATES, SearchSettings, TuneSettings

    defaults, search = TuneSettings(), SearchSettings()
    h = sub.add_parser(
        "harden", help="replace ReLU by clipped (FT-ClipAct) or clamped activations, optionally tuning thresholds",
        description="Profile ACT_max per activation layer on training images and write an image whose ReLUs are "
        "clipped (clipact: x if 0 <= x <= T else 0) or clamped (clamp: min(max(x, 0), T)) at T = ACT_max; with "
        "--tune, search each layer's T for the largest fault AUC (the FT-ClipAct fine-tuning). Thresholds from a "
        "file are applied as given with --thresholds.")
    h.add_argument("--image", required=True, type=Path, help="the image to harden (its ReLU layers are replaced)")
    h.add_argument("--method", choices=("clipact", "clamp"), default="clipact")
    how = h.add_mutually_exclusive_group()
    how.add_argument("--tune", action="store_true", help="fine-tune every threshold on the fault AUC")
    how.add_argument("--thresholds", type=Path, help="apply the thresholds of this file instead of profiling")
    h.add_argument("--hw", type=Path, help="hardware file (TOML) or built-in preset name (default: edge16)")
    h.add_argument("--engine", choices=ENGINES[:2], default="fast")
    h.add_argument("--batch-size", type=integer(1, 65536), default=100)
    h.add_argument("--profile-images", type=integer(1, MAX_IMAGES), default=defaults.profile_images,
                   help=f"training images for ACT_max (default {defaults.profile_images})")
    h.add_argument("--percentile", type=number(0, 100, low_open=True), help="profile this percentile of the positive activations, not the max")
    h.add_argument("--seed", type=integer(0, MAX_SEED), default=defaults.seed, help="seeds the image draws and the fault maps")
    t = h.add_argument_group("tuning (with --tune)")
    t.add_argument("--site", choices=SITES, default=defaults.site)
    t.add_argument("--model", choices=MODELS, default=defaults.model, help="fault model")
    t.add_argument("--count-mode", choices=COUNT_MODES, default=defaults.count_mode)
    t.add_argument("--rates", type=comma_list(float), default=PAPER_RATES,
                   help=f"comma-separated fault rates (default {','.join(map(str, PAPER_RATES))})")
    t.add_argument("--trials", type=integer(1, 10_000), default=defaults.trials, help="fault maps per rate")
    t.add_argument("--tune-images", type=integer(1, MAX_IMAGES), default=defaults.tune_images)
    t.add_argument("--candidates", type=integer(3, 1000), default=search.candidates)
    t.add_argument("--rounds", type=integer(1, 1000), default=search.max_rounds)
    t.add_argument("--early-stop-round", type=integer(1, 1000), default=search.early_stop_round)
    t.add_argument("--early-stop-pp", type=number(0, 100), default=search.early_stop_pp)
    t.add_argument("--mode", choices=("fast", "naive"), default="fast", help="naive: the slow reference")
    t.add_argument("--state", type=Path, help="resume file (default: OUTPUT.tuning.json)")
    add_data_options(h)
    h.add_argument("--no-progress", action="store_true")
    h.add_argument("-o", "--output", required=True, type=Path, help="hardened image to write; the thresholds go to "
                   "OUTPUT with suffix .thresholds.toml")
    h.set_defaults(handler=run_harden)


def run_harden(args: argparse.Namespace) -> int:
    from accel_sim.hardware import Accelerator, load_hardware
    from accel_sim.image.hdf5 import read_image, write_image
    from accel_sim.mitigation import (
        SearchSettings,
        Thresholds,
        TuneSettings,
        draw_tuning_data,
        harden,
        profile_act_max,
        read_thresholds,
        tune_thresholds,
        with_activation,
        write_thresholds,
    )

    if args.output.resolve() == args.image.resolve():
        raise AccelSimError("-o/--output must differ from --image: the plain image is kept")
    image = read_image(args.image)
    hw = load_hardware(args.hw if args.hw is not None else "edge16")
    accelerator = Accelerator(hw, args.engine, batch_size=args.batch_size)
    settings = TuneSettings(args.method, args.site, args.model, args.count_mode, args.rates, args.trials,
                            args.tune_images, args.profile_images, args.percentile,
                            SearchSettings(args.candidates, args.rounds, args.early_stop_round, args.early_stop_pp),
                            args.seed)
    started = time.perf_counter()
    if args.thresholds is not None:
        thresholds = read_thresholds(args.thresholds, args.method)
        source = f"{len(thresholds.values)} thresholds from {args.thresholds}"
    else:
        train = load_data_or_sample(args.data_dir, "train", args.download)
        profile, tune = draw_tuning_data(train, settings)
        base = with_activation(image, "relu")
        if args.tune:
            state = args.state or args.output.with_name(args.output.name + ".tuning.json")
            thresholds = tune_thresholds(base, accelerator, profile, tune, settings, args.mode, state,
                                         progress=not args.no_progress)
            source = (f"tuned on {len(tune)} of {tune.name} ({len(settings.rates)} rates x {settings.trials} trials "
                      f"of {settings.site} {settings.model}, {args.mode} mode; resume file {state})")
        else:
            act_max = profile_act_max(base, profile.images, accelerator, percentile=settings.percentile)
            label = "act_max" if settings.percentile is None else f"act_max_p{settings.percentile:g}"
            thresholds = Thresholds(args.method, act_max, {i: label for i in act_max}, act_max, base.content_hash(),
                                    {"profile_images": len(profile), "profile_data": profile.name,
                                     "percentile": settings.percentile, "seed": settings.seed})
            source = f"ACT_max of {len(profile)} images of {profile.name}"
    hardened = harden(image, args.method, thresholds.values, thresholds.sources, thresholds.settings)
    write_image(hardened, args.output)
    table = write_thresholds(thresholds, args.output.with_name(args.output.stem + ".thresholds.toml"))
    print(f"wrote {args.output}: {image.model} {image.format_name} with {args.method} activations, {source}; "
          f"{time.perf_counter() - started:.1f} s")
    for layer, value in thresholds.values.items():
        bound = thresholds.act_max.get(layer)
        extra = f" (ACT_max {bound:.6g})" if bound is not None and thresholds.sources[layer] == "tuned" else ""
        print(f"  layer {layer:>2} {image.layers[layer].name:<14} T = {value:.6g}{extra}  [{thresholds.sources[layer]}]")
    print(f"thresholds: {table}")
    return 0
