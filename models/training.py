"""Seeded, resumable training of the zoo's networks on CIFAR-10.

Recipe: SGD with Nesterov momentum, weight decay, a one-cycle learning-rate schedule, label
smoothing, random crop (padding 4) + horizontal flip done on whole batches on the training device,
channels-last memory format. Optionally from given weights (fine-tuning) and with weight bit flips
injected into every step (fault-aware training, :mod:`accel_sim.models.fault_aware`). Every epoch
ends with an atomic checkpoint; ``resume=True`` continues from it with the same data order,
augmentation and injected faults as an uninterrupted run (each epoch's shuffling and
augmentation come from a generator seeded by ``(seed, epoch)``, its faults from another).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from accel_sim.data import ImageSet
from accel_sim.errors import AccelSimError
from accel_sim.models.architectures import ARCHITECTURES, build_model
from accel_sim.models.evaluation import predict, to_input
from accel_sim.models.fault_aware import InjectedFaults, TrainingFaults
from accel_sim.models.zoo import load_state, save_weights

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.csv"
WEIGHTS_NAME = "weights.pt"
_EPOCH_SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs never share a generator seed


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; validated on construction.

    Attributes
    ----------
    arch : str
        ``alexnet`` or ``vgg16``.
    epochs : int
        Number of passes over the training set.
    batch_size : int
        Images per SGD step.
    lr : float
        Peak learning rate of the one-cycle schedule.
    momentum, weight_decay, label_smoothing : float
        SGD (Nesterov) momentum, L2 weight decay, and cross-entropy label smoothing.
    warmup : float
        Fraction of the steps spent rising to the peak learning rate.
    seed : int
        Seeds weight initialisation, data order, augmentation and dropout.
    device : str
        ``cpu``, ``cuda`` or ``cuda:N``.
    amp : bool
        bfloat16 autocast for the forward pass (CUDA only).
    init : str
        Weights file to start from (fine-tuning); empty: the architecture's random initialisation.
    fault_rate : float
        Per-bit probability of a weight or bias bit flip, drawn afresh for every step (fault-aware
        training); 0: none. A step whose loss is not finite (an fp32 exponent flip) is skipped.
    fault_format : str
        ``fp32`` or ``fixedW``: the words the flips act on (``fixedW`` also fake-quantises).
    """

    arch: str
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.25
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    init: str = ""
    fault_rate: float = 0.0
    fault_format: str = "fp32"

    def __post_init__(self) -> None:
        if not isinstance(self.init, str):
            raise AccelSimError(f"init must be a weights file path or empty, got {self.init!r}")
        TrainingFaults(self.fault_rate, self.fault_format)  # validates both
        if self.arch not in ARCHITECTURES:
            raise AccelSimError(f"arch must be one of {', '.join(sorted(ARCHITECTURES))}, got {self.arch!r}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AccelSimError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise AccelSimError(f"lr must be positive, got {self.lr!r}")
        for name in ("momentum", "label_smoothing", "warmup"):
            if not 0 <= getattr(self, name) < 1:
                raise AccelSimError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise AccelSimError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise AccelSimError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.amp and not self.device.startswith("cuda"):
            raise AccelSimError("amp (bfloat16 autocast) needs a CUDA device")


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32×32 crop of the zero-padded (4 px) image and a horizontal flip with p = 0.5.

    Parameters
    ----------
    images : torch.Tensor
        ``uint8`` tensor of shape ``(B, 3, 32, 32)`` on any device.
    generator : torch.Generator
        CPU generator that draws the offsets and flips (so they do not depend on the device).
    """
    batch, _, size, _ = images.shape
    pad = 4
    offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator).to(images.device)
    flips = (torch.rand(batch, generator=generator) < 0.5).to(images.device)
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    span = torch.arange(size, device=images.device)
    rows = offsets[0, :, None] + span  # (B, 32)
    cols = torch.where(flips[:, None], offsets[1, :, None] + size - 1 - span, offsets[1, :, None] + span)
    b = torch.arange(batch, device=images.device)[:, None, None, None]
    c = torch.arange(3, device=images.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def one_cycle(total_steps: int, warmup: float, start: float = 0.04, end: float = 1e-4):
    """Learning-rate factor per step: cosine rise from ``start`` to 1 over the first ``warmup``
    fraction of ``total_steps``, then cosine decay to ``end`` (factors of the peak rate)."""
    rise = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < rise:
            return start + (1 - start) * (1 - math.cos(math.pi * step / rise)) / 2
        frac = min(1.0, (step - rise) / max(1, total_steps - rise))
        return end + (1 - end) * (1 + math.cos(math.pi * frac)) / 2

    return factor


def train(
    config: TrainConfig,
    train_set: ImageSet,
    out_dir: str | os.PathLike,
    eval_set: ImageSet | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> Path:
    """Train ``config.arch`` on ``train_set``; returns the path of the final zoo-format weights.

    ``out_dir`` receives ``checkpoint.pt`` (after every epoch), ``history.csv`` (loss, training
    and evaluation accuracy per epoch) and, at the end, ``weights.pt`` (float16, zoo format).
    With ``resume=True`` an existing checkpoint is continued; its config must equal ``config``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    if ckpt_path.exists() and not resume:
        raise AccelSimError(f"{str(ckpt_path)!r} exists: pass --resume to continue it or choose another --out")
    device = _deterministic_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(config.arch)
    if config.init:
        load_state(model, config.init, config.arch)
    model = model.to(device, memory_format=torch.channels_last)
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    optimizer, scheduler = _optimizer(model, config, steps_per_epoch)
    start_epoch, elapsed, history = 0, 0.0, []
    if resume and ckpt_path.exists():
        start_epoch, elapsed, history = _resume(ckpt_path, config, model, optimizer, scheduler, device)
    images = torch.from_numpy(np.array(train_set.images)).to(device)
    labels = torch.from_numpy(np.array(train_set.labels)).to(device)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        row = _train_epoch(model, optimizer, scheduler, config, images, labels, epoch, device, progress)
        if eval_set is not None:
            preds = predict(model, eval_set.images, device=config.device)
            row["eval_accuracy"] = 100.0 * float(np.mean(preds == eval_set.labels))
        elapsed += time.perf_counter() - started
        row["elapsed_s"] = elapsed
        history.append(row)
        _save_checkpoint(ckpt_path, model, optimizer, scheduler, config, epoch + 1, elapsed, history, device)
        _write_history(out / HISTORY_NAME, history)
        logger.info(
            "%s epoch %d/%d: loss %.4f, train %.2f %%%s, %.0f s so far", config.arch, epoch + 1,
            config.epochs, row["train_loss"], row["train_accuracy"],
            f", eval {row['eval_accuracy']:.2f} %" if "eval_accuracy" in row else "", elapsed,
        )
    model.eval()
    return save_weights(model, config.arch, out / WEIGHTS_NAME)


def _deterministic_device(name: str) -> torch.device:
    """The torch device ``name`` with deterministic algorithms (CUDA: deterministic cuBLAS)."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AccelSimError(f"device {name!r} asked for, but CUDA is not available")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return device


def _optimizer(model: nn.Module, config: TrainConfig, steps_per_epoch: int):
    """SGD (Nesterov when there is momentum; no weight decay on biases and BN scales) and its
    one-cycle learning-rate schedule, stepped once per batch."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim == 1 else decay).append(p)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle(config.epochs * steps_per_epoch,
                                                                             config.warmup))


def _resume(ckpt_path: Path, config: TrainConfig, model, optimizer, scheduler, device) -> tuple[int, float, list]:
    """Load a checkpoint made with ``config`` into model, optimizer, scheduler and the RNGs;
    returns (epochs done, seconds so far, history)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    # a checkpoint from before an option existed was made with its default
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    if {**defaults, **ckpt["config"]} != dataclasses.asdict(config):
        raise AccelSimError(
            f"checkpoint {str(ckpt_path)!r} was made with another configuration "
            f"({ckpt['config']}); resume with the same options"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
    logger.info("resuming %s at epoch %d of %d", config.arch, ckpt["epoch"] + 1, config.epochs)
    return ckpt["epoch"], ckpt["elapsed"], ckpt["history"]


def _train_epoch(model, optimizer, scheduler, config: TrainConfig, images: torch.Tensor, labels: torch.Tensor,
                 epoch: int, device: torch.device, progress: bool | None) -> dict:
    """One epoch over the training images in a seeded order; returns its history row (epoch,
    final learning rate, mean loss, training accuracy in %; with injected faults, the mean bit
    flips per step and the steps skipped for a non-finite loss)."""
    gen = torch.Generator().manual_seed(config.seed * _EPOCH_SEED_STRIDE + epoch)
    faults = TrainingFaults(config.fault_rate, config.fault_format)
    fault_rng = np.random.default_rng([config.seed, epoch])  # the faults of an epoch, resumable
    flips, skipped, counted = 0, 0, 0
    order = torch.randperm(len(images), generator=gen).to(device)
    steps = -(-len(images) // config.batch_size)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    bar = tqdm(range(steps), desc=f"{config.arch} epoch {epoch + 1}/{config.epochs}",
               disable=None if progress is None else not progress, leave=False)
    for step in bar:
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        x = to_input(augment(images[idx], gen))
        y = labels[idx]
        optimizer.zero_grad(set_to_none=True)
        with InjectedFaults(model, faults, fault_rng) as injected:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
                logits = model(x)
                loss = loss_fn(logits.float(), y)
            finite = bool(torch.isfinite(loss)) if faults.rate else True  # no sync without faults
            if finite:
                loss.backward()  # the gradient at the faulty weights, applied to the clean ones
        flips += injected.flips
        if finite:
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
            counted += len(idx)
        else:
            skipped += 1
        with warnings.catch_warnings():  # the schedule counts steps, skipped ones too (resumes stay exact)
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
            scheduler.step()
        if not bar.disable and step % 20 == 0:
            seen = max(counted, 1)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}%")
    counted = max(counted, 1)  # every step skipped: the row shows zeros
    row = {"epoch": epoch + 1, "lr_end": scheduler.get_last_lr()[0],
           "train_loss": loss_sum.item() / counted, "train_accuracy": 100.0 * correct.item() / counted}
    if faults.rate:
        row.update(flips_per_step=flips / steps, skipped_steps=skipped)
    return row


def _save_checkpoint(path, model, optimizer, scheduler, config, epoch, elapsed, history, device) -> None:
    state = {
        "config": dataclasses.asdict(config),
        "epoch": epoch,
        "elapsed": elapsed,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_history(path: Path, history: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)
