"""``accel-sim train`` and ``accel-sim eval`` (PyTorch models of the zoo)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from accel_sim.data import DATA_DIR_ENV, ImageSet, load_bundled_sample, load_cifar10, resolve_data_dir
from accel_sim.models import ARCHITECTURES, load_weights, zoo_weights_path
from accel_sim.models.zoo import file_sha256

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``eval`` sub-commands."""
    train = sub.add_parser("train", help="train a zoo architecture on CIFAR-10 (resumable)")
    train.add_argument("--model", required=True, choices=sorted(ARCHITECTURES))
    _add_data_options(train)
    train.add_argument("--out", required=True, type=Path, help="run folder: checkpoint, history, weights")
    train.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--lr", type=float, default=0.1, help="peak learning rate (one-cycle)")
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--label-smoothing", type=float, default=0.1)
    train.add_argument("--warmup", type=float, default=0.25, help="fraction of steps rising to the peak lr")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    train.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    train.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation after each epoch")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar (default: when stderr is a terminal)")
    train.set_defaults(handler=run_train)

    ev = sub.add_parser(
        "eval",
        help="accuracy of a model on CIFAR-10",
        description="Top-1 accuracy of a zoo model (or a weights file). Without --data-dir and "
        f"${DATA_DIR_ENV} it uses the bundled sample: CIFAR-10 test images 0-999, lossless.",
    )
    ev.add_argument("--model", required=True, choices=sorted(ARCHITECTURES))
    ev.add_argument("--weights", type=Path, help="weights file (default: the zoo's)")
    _add_data_options(ev)
    ev.add_argument("--split", choices=("test", "train"), default="test")
    ev.add_argument("--subset", type=int, help="number of images (default: all)")
    ev.add_argument("--offset", type=int, default=0, help="index of the first image")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--device", default="cpu")
    ev.set_defaults(handler=run_eval)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help=f"CIFAR-10 folder (default: ${DATA_DIR_ENV})")
    parser.add_argument("--download", action="store_true", help="fetch CIFAR-10 through torchvision if missing")


def load_eval_data(data_dir: Path | None, split: str, download: bool) -> ImageSet:
    """The full split from the data folder, or the bundled sample when no folder is configured."""
    if resolve_data_dir(data_dir) is None and not download:
        if split != "test":
            raise ValueError(f"the bundled sample holds test images only; pass --data-dir for the {split} split")
        return load_bundled_sample()
    return load_cifar10(data_dir, split, download=download)


def run_train(args: argparse.Namespace) -> int:
    from accel_sim.models.training import TrainConfig, train  # torch-heavy: import on use

    config = TrainConfig(
        arch=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        warmup=args.warmup, seed=args.seed, device=args.device, amp=args.amp,
    )
    train_set = load_cifar10(args.data_dir, "train", download=args.download)
    eval_set = None if args.no_eval else load_cifar10(args.data_dir, "test", download=args.download)
    path = train(config, train_set, args.out, eval_set=eval_set, resume=args.resume, progress=args.progress)
    print(f"weights written to {path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from accel_sim.models.evaluation import predict

    data = load_eval_data(args.data_dir, args.split, args.download).subset(args.subset, args.offset)
    weights = args.weights if args.weights is not None else zoo_weights_path(args.model)
    model = load_weights(args.model, weights)
    preds = predict(model, data.images, batch_size=args.batch_size, device=args.device)
    correct = int(np.sum(preds == data.labels))
    print(f"model:    {args.model} ({weights}, sha256 {file_sha256(weights)[:12]})")
    print(f"data:     {data.name}")
    print(f"top-1:    {100.0 * correct / len(data):.2f} % ({correct}/{len(data)})")
    return 0
