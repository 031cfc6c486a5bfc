"""Process-wide runtime settings that make emulation faster (applications opt in).

The emulator allocates and frees feature maps and GEMM operands of tens of MiB for every layer.
glibc serves blocks above its mmap threshold (128 KiB, adapted upwards only while nobody sets a
malloc option) with fresh mappings and trims freed heap memory above 128 KiB back to the
system, so each layer faults its buffers' pages in again. Dask workers make this worse: they
set ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches the adaptation off. Keeping blocks up
to 32 MiB in the heap and trimming only above 1 GiB made VGG-16 emulation 30–45 % faster on the
development machine (see ``docs/hardware.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 2**30


@functools.cache
def tune_allocator() -> bool:
    """Keep large freed blocks in the process heap (glibc only; elsewhere a no-op).

    Returns
    -------
    bool
        Whether the allocator accepted both settings. Idempotent; called by the CLI, by each
        campaign job (so Dask workers get it too) and by the benchmarks.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    logger.debug("glibc allocator tuned: %s", ok)
    return ok
