"""How freed memory is reused on Linux: large tensors take memory that was freed, not fresh pages from the kernel.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves allocations above a threshold (at most
32 MB, adapting) with a fresh ``mmap`` each time and gives them back on ``free``, so a training step that allocates
the same large activations and gradients at every step (next-scale at the 3m preset, batch 128: logits of 54 MB)
page-faults through every one of them again (~100 000 page faults per step there, counted with
``resource.getrusage`` around a step). Raising the mmap and trim thresholds keeps freed memory in the process for
the next step: next-scale and next-frequency training at the 3m preset went from 88–91 to 99–102 images/s, raster
and next-neighbor (whose tensors stay under glibc's own threshold) were unchanged (``python bench/sampling.py
--orders none --train-orders raster,scale,frequency,neighbor --modes eager`` with and without
``--default-malloc``). The price is that the process keeps its peak memory until it exits, which a training or
sampling run does anyway.

`keep_freed_memory` sets this for the whole process; the ``argen`` command calls it at start. It leaves the setting
alone where the user made one (``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` in the environment) and does
nothing off glibc (macOS, Windows, musl), where it returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 1 << 30  # allocations below 1 GiB reuse freed memory; freed memory is returned above 1 GiB unused

_set = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to `THRESHOLD` for this process; True when it did (or had done)."""
    global _set
    if _set:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # the user's own setting stands
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _set = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):
        return False
    return _set


__all__ = ["THRESHOLD", "keep_freed_memory"]
