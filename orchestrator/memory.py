"""Freed memory given back to the system between bursts of jobs.

glibc keeps the heap pages a burst of jobs freed (Python's objects and the Temporal core's
buffers alike) and reuses them later, so an idle daemon's resident memory stays at its busiest.
`malloc_trim` returns them; it is cheap at the heartbeat's pace. Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked = False


def release_freed_memory() -> None:
    global _trim, _looked
    if not _looked:
        _looked = True
        name = ctypes.util.find_library("c")
        if name is not None:
            _trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if _trim is not None:
        _trim(0)
