"""Keep the memory torch frees on CPU in the process, instead of handing it back to the kernel after every step.

glibc's allocator serves every block above its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns it
with `munmap` when freed. A training step of the default model allocates its logits and their gradients (batch x
tokens x 49,152 floats, about 100 MB at batch 8) and many activations above that size, frees them, and allocates
them again at the next step: each time the kernel zeroes every page again on first touch. Measured on the 2-core
development box (`python benchmarks/in_process.py`, benchmarks/results/in_process_cpu.json): the demo's `rait run`
from scratch took 18.2 M page faults and 54 s of system time in 448 s with glibc's defaults, and 0.97 M, 9 s and
406 s with the memory kept (its training stage 156 -> 133 s); the peak resident size rose from 3.4 to 4.2 GB. On
a virtual machine a page fault can cost more, and what it costs depends on the host (issue 34 measured `rait
run`'s stages at 4x their time alone on an Intel machine, which this box does not reproduce).

`keep_freed_memory` tells glibc to serve large blocks from its heap too and not to trim the heap, so freed memory
is reused by the next step and the next stage; the process's resident size then stays at its peak instead of
falling between steps. It changes nothing where glibc is not the allocator, and leaves alone a process whose
user tuned glibc's allocator through the environment or set `RAIT_KEEP_MEMORY=0` (glibc's defaults; the
benchmark's control).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
KEEP = 2**31 - 1  # the largest trim threshold mallopt takes (a C int): the heap is never trimmed below it
_state = {"done": False}


def user_tuned() -> bool:
    """Whether the environment already tunes glibc's allocator (MALLOC_*_ variables, GLIBC_TUNABLES)."""
    return any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Once per process: large blocks from the heap, no trimming (see the module's docstring). True if set."""
    if _state["done"]:
        return True
    if not sys.platform.startswith("linux") or user_tuned() or os.environ.get("RAIT_KEEP_MEMORY") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's; musl's does nothing, and macOS has none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _state["done"] = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP))
    return _state["done"]
