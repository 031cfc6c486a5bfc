"""Values of HDF5 attributes checked before they are cast: files are input, and ``int(inf)``,
``int("x")`` or a silently truncated fraction must be one clear error, not a traceback."""

from __future__ import annotations

import math

import numpy as np

from accel_sim.errors import AccelSimError


def text(value, what: str) -> str:
    """A text attribute (``bytes`` decoded as UTF-8); ``what`` names it in the error."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise AccelSimError(f"{what} must be text, got {value!r}")
    return value


def integer(value, what: str) -> int:
    """An integer attribute: an integer, or a float with an integral value below 2**62."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer() \
            and abs(value) < 2**62:
        return int(value)
    raise AccelSimError(f"{what} must be an integer, got {value!r}")


def real(value, what: str) -> float:
    """A finite number attribute."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
            and math.isfinite(float(value)):
        return float(value)
    raise AccelSimError(f"{what} must be a finite number, got {value!r}")
