"""The trained model zoo: compact weight files and loading them into the architectures.

A weights file is a ``torch.save`` of a plain dictionary (loadable with ``weights_only=True``)::

    {"format": "accel-sim-weights", "version": 1, "arch": "vgg16",
     "dtype": "float16", "state_dict": {...}}

Floating-point tensors are stored as float16 by default (half the size, and the model cards show
the accuracy moves by less than 0.1 pp); they are widened back to float32 on load. A bare PyTorch
``state_dict`` is accepted too (bring your own weights).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from accel_sim.errors import AccelSimError
from accel_sim.models.architectures import ARCHITECTURES, build_model

logger = logging.getLogger(__name__)

WEIGHTS_FORMAT = "accel-sim-weights"
WEIGHTS_VERSION = 1
ZOO_DIR = Path(__file__).resolve().parent / "zoo"
_STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def zoo_weights_path(arch: str) -> Path:
    """Path of the zoo's weights file for ``arch`` (which may not exist yet)."""
    if arch not in ARCHITECTURES:
        raise AccelSimError(f"unknown model {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return ZOO_DIR / arch / "weights.pt"


def save_weights(model: nn.Module, arch: str, path: str | os.PathLike, dtype: str = "float16") -> Path:
    """Write ``model``'s state to ``path`` in the zoo format, floating tensors stored as ``dtype``.

    The file is written to a temporary name and renamed, so a crash never leaves half a file.
    """
    if dtype not in _STORAGE_DTYPES:
        raise AccelSimError(f"dtype must be one of {', '.join(_STORAGE_DTYPES)}, got {dtype!r}")
    state = {
        key: (t.detach().to("cpu", _STORAGE_DTYPES[dtype]) if t.is_floating_point() else t.detach().cpu())
        for key, t in model.state_dict().items()
    }
    payload = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "arch": arch, "dtype": dtype,
               "state_dict": state}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_weights(arch: str, path: str | os.PathLike | None = None) -> nn.Module:
    """Build ``arch`` and load weights from ``path`` (default: the zoo's file), in eval mode.

    Raises
    ------
    ValueError
        When the file is missing, unreadable, or holds weights of another architecture.
    """
    model = build_model(arch)
    path = path if path is not None else zoo_weights_path(arch)
    load_state(model, path, arch)
    logger.info("loaded %s weights from %s", arch, path)
    return model


def load_state(model: nn.Module, path: str | os.PathLike, arch: str | None = None) -> nn.Module:
    """Load a weights file (the zoo format, or a bare ``state_dict``) into ``model``, which must have
    exactly its tensors and shapes; returns ``model`` in eval mode. ``arch`` names the
    architecture a zoo-format file must hold (None: any)."""
    path = Path(path)
    what = arch or type(model).__name__
    if not path.is_file():
        raise AccelSimError(f"weights file {str(path)!r} for {what} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged files
        raise AccelSimError(f"weights file {str(path)!r} is not a readable PyTorch file ({exc})") from exc
    if isinstance(payload, dict) and payload.get("format") == WEIGHTS_FORMAT:
        if payload.get("version") != WEIGHTS_VERSION:
            raise AccelSimError(
                f"weights file {str(path)!r} has format version {payload.get('version')}, this "
                f"accel-sim reads version {WEIGHTS_VERSION}"
            )
        if arch is not None and payload.get("arch") != arch:
            raise AccelSimError(
                f"weights file {str(path)!r} holds {payload.get('arch')} weights, not {arch}"
            )
        state = payload["state_dict"]
    elif isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state = payload
    else:
        raise AccelSimError(f"weights file {str(path)!r} holds neither accel-sim weights nor a state_dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise AccelSimError(f"weights file {str(path)!r} does not fit the {what} architecture ({detail})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval()
