"""``accel-sim eval``: accuracy of a zoo model (PyTorch) or of an accelerator image."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from accel_sim.cli.common import MAX_IMAGES, add_data_options, integer, load_data_or_sample
from accel_sim.data import DATA_DIR_ENV
from accel_sim.errors import AccelSimError
from accel_sim.hardware import ENGINES
from accel_sim.models import ARCHITECTURES

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
    ev.add_argument("--subset", type=integer(1, MAX_IMAGES), help="number of images (default: all)")
    ev.add_argument("--offset", type=integer(0, MAX_IMAGES), default=0, help="index of the first image")
    ev.add_argument("--batch-size", type=integer(1, 65536), default=500)
    ev.add_argument("--device", default="cpu", help="with --model: torch device")
    ev.add_argument("--hw", type=Path, help="with --image: hardware file (TOML) or built-in preset name (default: edge16, "
                    "a 16x16 WS array with 16-bit operands and 48-bit accumulators)")
    ev.add_argument("--engine", choices=ENGINES, default="fast",
                    help="with --image: fast (exact BLAS path), faithful (MAC by MAC) or reference (golden model)")
    ev.add_argument("--report", nargs="?", const="", metavar="CSV",
                    help="with --image: print the per-layer cycle/utilisation table and write it as CSV "
                    "(default name: <image>_<hw>_cycles.csv)")
    ev.add_argument("--faults", type=Path, help="with --image: a fault map (accel-sim faults draw) to apply")
    ev.add_argument("--progress", action="store_true", help="progress bar over batches")
    ev.set_defaults(handler=run_eval)
    cy = sub.add_parser("cycles", help="per-layer cycle and traffic report of an image on a hardware config "
                        "(no inference)")
    cy.add_argument("--image", required=True, type=Path)
    cy.add_argument("--hw", type=Path, help="hardware file (TOML) or built-in preset name (default: edge16)")
    cy.add_argument("--csv", help="CSV file to write (default: <image>_<hw>_cycles.csv)")
    cy.set_defaults(handler=run_cycles)


def run_eval(args: argparse.Namespace) -> int:
    if args.weights is not None and args.model is None:
        raise AccelSimError("--weights goes with --model; an image holds its own weights")
    if args.model is not None:
        given = [flag for flag, value in (("--hw", args.hw), ("--faults", args.faults), ("--report", args.report))
                 if value is not None] + (["--engine"] if args.engine != "fast" else [])
        if given:
            raise AccelSimError(f"{', '.join(given)} go(es) with --image: --model runs the PyTorch model, not the "
                             "emulated accelerator")
    data = load_data_or_sample(args.data_dir, args.split, args.download).subset(args.subset, args.offset)
    if args.model is not None:
        from accel_sim.models import load_weights, zoo_weights_path
        from accel_sim.models.evaluation import predict
        from accel_sim.models.zoo import file_sha256

        weights = args.weights if args.weights is not None else zoo_weights_path(args.model)
        model = load_weights(args.model, weights)
        preds = predict(model, data.images, batch_size=args.batch_size, device=args.device)
        print(f"model:    {args.model} ({weights}, sha256 {file_sha256(weights)[:12]})")
        nan_count, out = 0, None
    else:
        from accel_sim.hardware import Accelerator, load_hardware
        from accel_sim.image.hdf5 import read_image

        image = read_image(args.image)
        hw = load_hardware(args.hw if args.hw is not None else "edge16")
        accelerator = Accelerator(hw, args.engine, batch_size=min(args.batch_size, 100), progress=args.progress)
        if args.faults is not None:
            from accel_sim.faults import check_fault_map, read_fault_map, run_with_faults

            fmap = read_fault_map(args.faults)
            check_fault_map(fmap, image, hw, len(data), where=f"fault map {str(args.faults)!r}")
            out = run_with_faults(accelerator, image, data.images, fmap)
        else:
            out = accelerator.run(image, data.images)
        preds, nan_count = out.predictions, out.nan_count
        print(f"image:    {image.model} {image.format_name} ({args.image})")
        print(f"hardware: {hw.name}: {hw.rows}x{hw.cols} {hw.dataflow}, {hw.acc_bits}-bit {hw.overflow} accumulator, "
              f"{hw.rounding} rescaling; engine {args.engine}")
        if args.faults is not None:
            print(f"faults:   {len(fmap)} from {args.faults} ({fmap.description})")
        if args.report is not None:
            cycle_report(image, args.image, hw, args.report)
    correct = int(np.sum(preds == data.labels))
    print(f"data:     {data.name}")
    print(f"top-1:    {100.0 * correct / len(data):.2f} % ({correct}/{len(data)})")
    if nan_count:
        print(f"non-finite logits: {nan_count} images")
    if out is not None and hw.pe_redundancy == "dmr":
        again = f", {int(out.recomputed.sum())} run again" if hw.dmr_mismatch == "recompute" else ""
        print(f"dmr:      {int(out.flagged.sum())} images flagged{again}; {out.silent_errors(data.labels)} wrong and "
              "not flagged (silent)")
    return 0


def run_cycles(args: argparse.Namespace) -> int:
    from accel_sim.hardware import Accelerator, load_hardware
    from accel_sim.image.hdf5 import read_image

    image = read_image(args.image)
    hw = load_hardware(args.hw if args.hw is not None else "edge16")
    Accelerator(hw).check_image(image)
    print(f"image:    {image.model} {image.format_name} ({args.image})")
    print(f"hardware: {hw.name}: {hw.rows}x{hw.cols} {hw.dataflow}")
    cycle_report(image, args.image, hw, args.csv or "")
    return 0


def cycle_report(image, image_path: Path, hw, csv_path: str) -> None:
    """Print the per-layer cycle table of ``image`` on ``hw`` and write it as CSV (default name:
    ``<image>_<hw>_cycles.csv``)."""
    import csv

    from accel_sim.cli.common import print_table
    from accel_sim.hardware.cycles import image_cycles
    from accel_sim.hardware.redundancy import array_cost

    rows = [c.as_row() for c in image_cycles(image, hw)]
    path = Path(csv_path) if csv_path else Path(f"{Path(image_path).stem}_{hw.name}_cycles.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shown = [dict(r, utilisation=f"{100 * r['utilisation']:.1f}%", mapping_efficiency=f"{100 * r['mapping_efficiency']:.1f}%")
             for r in rows]
    print_table(shown, ["name", "op", "m", "k", "n", "fold_rows", "fold_cols", "cycles", "macs", "utilisation",
                        "mapping_efficiency", "weight_reads", "activation_reads", "output_writes"])
    total_cycles = sum(r["cycles"] for r in rows)
    total_macs = sum(r["macs"] for r in rows)
    print(f"total: {total_cycles:,} cycles per image, {total_macs:,} MACs, utilisation "
          f"{100 * total_macs / (total_cycles * hw.rows * hw.cols):.1f}%; table written to {path}")
    if hw.pe_redundancy != "none":
        cost = array_cost(hw.rows, hw.cols, hw.pe_redundancy)
        checkers = f"{cost['voters']:,} voters" if cost["voters"] else f"{cost['comparators']:,} comparators"
        rerun = " (and again for each image a comparator flags)" if hw.dmr_mismatch == "recompute" else ""
        print(f"{hw.pe_redundancy}: {cost['pe_replicas']:,} PE replicas and {checkers} for "
              f"{hw.rows * hw.cols:,} array positions; the cycles are the unprotected array's{rerun}")
