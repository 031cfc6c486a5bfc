"""``accel-sim train``: training the zoo's PyTorch models."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from accel_sim.cli.common import add_data_options
from accel_sim.data import load_cifar10
from accel_sim.models import ARCHITECTURES

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    train = sub.add_parser("train", help="train a zoo architecture on CIFAR-10 (resumable)")
    train.add_argument("--model", required=True, choices=sorted(ARCHITECTURES))
    add_data_options(train)
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
    train.add_argument("--init", type=Path, default=None,
                       help="weights file to start from (fine-tuning; e.g. the zoo's models/zoo/alexnet/weights.pt)")
    train.add_argument("--fault-rate", type=float, default=0.0,
                       help="fault-aware training: per-bit probability of a weight or bias bit flip, drawn each step")
    train.add_argument("--fault-format", default="fp32",
                       help="the words the flips act on: fp32 or fixedW (fake-quantised per tensor)")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar (default: when stderr is a terminal)")
    train.set_defaults(handler=run_train)



def run_train(args: argparse.Namespace) -> int:
    from accel_sim.models.training import TrainConfig, train  # torch-heavy: import on use

    config = TrainConfig(
        arch=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        warmup=args.warmup, seed=args.seed, device=args.device, amp=args.amp,
        init="" if args.init is None else str(args.init), fault_rate=args.fault_rate, fault_format=args.fault_format,
    )
    train_set = load_cifar10(args.data_dir, "train", download=args.download)
    eval_set = None if args.no_eval else load_cifar10(args.data_dir, "test", download=args.download)
    path = train(config, train_set, args.out, eval_set=eval_set, resume=args.resume, progress=args.progress)
    print(f"weights written to {path}")
    return 0
