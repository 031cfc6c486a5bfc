"""Dataflows: how a GEMM folds onto the array. One module per dataflow, the same interface:

``spatial(shape) -> (rows_needed, cols_needed, stream_length)``
    what is laid out on the array rows and columns, and how many steps stream through it;
``pe_of(m, k, n, rows, cols) -> (r, c)``
    the PE that performs the MAC of output pixel ``m``, window element ``k`` and filter ``n``
    (vectorised over numpy arrays);
``fold_of(m, k, n, rows, cols) -> (fold_row, fold_col)``
    the fold in which that MAC happens;
``fold_cycles(rows, cols, steps) -> int``
    cycles of one fold (a count; SCALE-Sim reports the index of the last cycle, one less);
``traffic(shape, fold_rows, fold_cols) -> (weight reads, activation reads, output writes, psum reads)``
    buffer words per image;
``weight_stream(shape, rows, cols) -> (k, n)``
    the layer's weights in the order they enter the weight buffer (word ``j`` of the stream
    sits at buffer address ``j mod capacity``); each weight is loaded once per image batch.

Activations enter the activation buffer in the same order for every dataflow: the layer's
input feature map in (row, column, channel) order (see :func:`activation_stream`).
"""

from __future__ import annotations

import numpy as np

from accel_sim.errors import AccelSimError
from accel_sim.hardware.dataflows import os_stationary, ws_stationary

DATAFLOW_MODULES = {"ws": ws_stationary, "os": os_stationary}


def get_dataflow(name: str):
    """The module implementing dataflow ``name`` (``ws`` or ``os``)."""
    try:
        return DATAFLOW_MODULES[name]
    except KeyError:
        raise AccelSimError(f"unknown dataflow {name!r}; known: {', '.join(DATAFLOW_MODULES)}") from None


def activation_stream(in_shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices into a ``(C, H, W)`` (or ``(F,)``) input feature map, in buffer order:
    word ``j`` of the result is stored at activation-buffer address ``j mod capacity``."""
    if len(in_shape) == 1:
        return np.arange(in_shape[0])
    c, h, w = in_shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
