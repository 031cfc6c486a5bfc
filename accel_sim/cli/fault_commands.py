"""``accel-sim faults draw`` and ``accel-sim faults show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from accel_sim.cli.common import MAX_SEED, comma_list, integer, number, print_table
from accel_sim.faults.model import COUNT_MODES, MODELS, PERSISTENCE, REGISTERS, SITES


def register(sub: argparse._SubParsersAction) -> None:
    faults = sub.add_parser("faults", help="draw and show fault maps")
    fsub = faults.add_subparsers(dest="faults_command", metavar="ACTION")
    fsub.required = True
    draw = fsub.add_parser("draw", help="draw a fault map from a rate and a seed")
    draw.add_argument("--image", required=True, type=Path)
    draw.add_argument("--hw", type=Path, help="hardware file (TOML) or built-in preset name (default: edge16)")
    draw.add_argument("--site", required=True, choices=SITES)
    draw.add_argument("--rate", required=True, type=number(0, 1), help="per-bit fault probability")
    draw.add_argument("--seed", required=True, type=integer(0, MAX_SEED))
    draw.add_argument("--job-key", default="", help="job key mixed into the seed (campaigns set it)")
    draw.add_argument("--model", choices=MODELS, default="flip")
    draw.add_argument("--persistence", choices=PERSISTENCE, default="permanent")
    draw.add_argument("--count-mode", choices=COUNT_MODES, default="binomial")
    draw.add_argument("--layers", type=comma_list(int), help="restrict to these image layer indices (see inspect)")
    draw.add_argument("--bits", type=comma_list(int), help="restrict to these bit positions")
    draw.add_argument("--registers", type=lambda t: tuple(t.split(",")), help=f"PE registers: {', '.join(REGISTERS)}")
    draw.add_argument("--images", type=integer(1, 2**31 - 1), help="images of the run (needed for transient faults)")
    draw.add_argument("-o", "--output", required=True, type=Path)
    draw.set_defaults(handler=run_draw)
    show = fsub.add_parser("show", help="print a fault map")
    show.add_argument("map", type=Path)
    show.add_argument("--limit", type=integer(0, 10**9), default=50, help="faults to list (default 50)")
    show.set_defaults(handler=run_show)


def run_draw(args: argparse.Namespace) -> int:
    from accel_sim.faults import DrawSpec, draw_fault_map, job_rng, write_fault_map
    from accel_sim.hardware import load_hardware
    from accel_sim.image.hdf5 import read_image

    image = read_image(args.image)
    hw = load_hardware(args.hw if args.hw is not None else "edge16")
    spec = DrawSpec(args.site, args.rate, args.model, args.persistence, args.count_mode, args.layers, args.bits,
                    args.registers)
    fmap = draw_fault_map(image, hw, spec, job_rng(args.seed, args.job_key), args.images, args.seed, args.job_key)
    write_fault_map(fmap, args.output)
    print(f"wrote {args.output}: {len(fmap)} faults ({spec.site}, {spec.model}, {spec.persistence}, rate {spec.rate:g}, "
          f"seed {args.seed}) for {image.model} {image.format_name} on {hw.name}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from accel_sim.faults import read_fault_map

    fmap = read_fault_map(args.map)
    meta = fmap.provenance
    print(f"{args.map}: {len(fmap)} faults; {meta['description']}; rate {meta['rate']:g}, seed {meta['seed']}, "
          f"job key {meta['job_key']!r}, count mode {meta['count_mode']}")
    print(f"drawn for image {meta['image_hash'][:16]}…, hardware {meta['hw_hash'][:16]}…")
    rows = fmap.rows()[:args.limit]
    if rows:
        print_table(rows, ["site", "layer", "tensor", "index", "row", "col", "register", "bit", "model", "image",
                           "access"])
    if len(fmap) > args.limit:
        print(f"... {len(fmap) - args.limit} more")
    return 0
