"""Bring your own model: build an ``nn.Module`` named as ``module:callable`` and load its weights.

``spec`` is ``package.module:build`` (imported as Python imports it, with the current directory
first on the path, as ``python -m`` does) or ``path/to/file.py:build``; ``build`` is called
without arguments and must return an ``nn.Module``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from torch import nn

from accel_sim.errors import AccelSimError
from accel_sim.models.zoo import load_state


def build_user_model(spec: str) -> nn.Module:
    """Call the builder ``spec`` names (``module:callable`` or ``file.py:callable``)."""
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise AccelSimError(f"a model builder is given as module:callable or file.py:callable, got {spec!r}")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise AccelSimError(f"model file {where!r} does not exist")
        loader_spec = importlib.util.spec_from_file_location(f"accel_sim_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # the user's code may raise anything while it loads
            raise AccelSimError(f"model file {where!r} failed to load ({type(exc).__name__}: {exc})") from exc
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise AccelSimError(f"cannot import model module {where!r} ({exc})") from None
    builder = getattr(module, name, None)
    if not callable(builder):
        raise AccelSimError(f"{where!r} has no callable {name!r}")
    model = builder()
    if not isinstance(model, nn.Module):
        raise AccelSimError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_user_model(spec: str, weights: str | os.PathLike) -> nn.Module:
    """The module ``spec`` builds, with the weights file ``weights`` (a ``state_dict`` or the zoo
    format) loaded, in eval mode."""
    return load_state(build_user_model(spec), weights)
