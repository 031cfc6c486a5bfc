"""Dataflows: how a GEMM folds onto the array, one module per dataflow, each a
:class:`~accel_sim.hardware.dataflows.base.Dataflow` (the GEMM axes on the array's rows and
columns, cycles per fold, buffer traffic, weight-buffer order). Every part of the simulator that
depends on the mapping asks the hardware's dataflow object (:func:`get_dataflow`).
Where the words a dataflow streams lie in the on-chip buffers is :mod:`accel_sim.hardware.memory`.
"""

from __future__ import annotations

from accel_sim.errors import AccelSimError
from accel_sim.hardware.dataflows import os_stationary, ws_stationary
from accel_sim.hardware.dataflows.base import GEMM_AXES, Dataflow

DATAFLOWS: dict[str, Dataflow] = {d.name: d for d in (ws_stationary.DATAFLOW, os_stationary.DATAFLOW)}

__all__ = ["DATAFLOWS", "GEMM_AXES", "Dataflow", "get_dataflow", "register_dataflow"]


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
