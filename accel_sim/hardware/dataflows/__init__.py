"""Dataflows: how a GEMM folds onto the array, one module per dataflow, each a
:class:`~accel_sim.hardware.dataflows.base.Dataflow` (the GEMM axes on the array's rows and
columns, cycles per fold, buffer traffic, weight-buffer order). Every part of the simulator that
depends on the mapping asks the hardware's dataflow object (:func:`get_dataflow`).

Activations enter the activation buffer in the same order for every dataflow: the layer's
input feature map in (row, column, channel) order (see :func:`activation_stream`).
"""

from __future__ import annotations

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.hardware.dataflows import os_stationary, ws_stationary
from accel_sim.hardware.dataflows.base import GEMM_AXES, Dataflow

DATAFLOWS: dict[str, Dataflow] = {d.name: d for d in (ws_stationary.DATAFLOW, os_stationary.DATAFLOW)}

__all__ = ["DATAFLOWS", "GEMM_AXES", "Dataflow", "activation_stream", "get_dataflow", "register_dataflow"]


def get_dataflow(name: str) -> Dataflow:
    """The dataflow called ``name`` (``ws``, ``os`` or one added by :func:`register_dataflow`)."""
    try:
        return DATAFLOWS[name]
    except KeyError:
        raise AccelSimError(f"unknown dataflow {name!r}; known: {', '.join(DATAFLOWS)}") from None


def register_dataflow(dataflow: Dataflow) -> None:
    """Make ``dataflow`` known to hardware configs by its name (a name may be taken once)."""
    if not isinstance(dataflow, Dataflow):
        raise AccelSimError(f"a dataflow must be a Dataflow instance, got {type(dataflow).__name__}")
    if dataflow.name in DATAFLOWS and DATAFLOWS[dataflow.name] is not dataflow:
        raise AccelSimError(f"dataflow name {dataflow.name!r} is taken")
    DATAFLOWS[dataflow.name] = dataflow


def activation_stream(in_shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices into a ``(C, H, W)`` (or ``(F,)``) input feature map, in buffer order:
    word ``j`` of the result is stored at activation-buffer address ``j mod capacity``."""
    if len(in_shape) == 1:
        return np.arange(in_shape[0])
    c, h, w = in_shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
