"""Process-wide CPU memory settings that stop PyTorch from page-faulting on every batch.

glibc's ``malloc`` serves each block over its mmap threshold (at most 32 MB) with fresh
pages from the kernel and hands them back on ``free``; it also trims the heap whenever its
free top grows past 128 KB. A CNN's activations are exactly such blocks (resnet50 at batch
32: up to 100 MB each), so every forward pass faults in, and the kernel zeroes, hundreds of
megabytes again, and the kernel time can exceed the compute (``RESLAB_CPU_MEMORY=default
reslab bench`` against ``reslab bench``: figures in docs/benchmarks.md).

``configure()`` makes glibc keep freed memory for reuse: no mmap for large blocks
(``M_MMAP_MAX`` = 0) and no trimming (``M_TRIM_THRESHOLD`` = 2 GiB). Like PyTorch's CUDA
caching allocator, the process then keeps its peak memory instead of returning it between
batches. It applies to every model in the process, reslab's or not, from the call on.

Importing ``reslab`` changes nothing: the settings are process-wide, so they are opted
into. ``fit`` and the cached linear head (``reslab.finetune.cached``) call ``configure()``,
so ``reslab train``, ``reslab finetune`` and every training get it; ``describe()`` calls it
too (``reslab bench`` records the line). A library user who wants it elsewhere, e.g. for
CPU inference, calls ``reslab.cpu_memory.configure()``. (Transparent huge pages, PyTorch's
``THP_MEM_ALLOC_ENABLE``, were measured too: no steady gain on top of this, so they are
left alone.)

Opt out with ``RESLAB_CPU_MEMORY=default`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "RESLAB_CPU_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_KEEP_FREED_BYTES = 2**31 - 1  # mallopt takes an int

_applied: list[str] | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and other C libraries have no mallopt, or one that ignores these parameters
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def configure() -> list[str]:
    """Applies the settings once per process. Returns what was applied (empty when opted
    out or not glibc): ``["malloc keeps freed memory"]``."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = []
    if os.environ.get(ENV, "tuned").lower() in ("default", "off", "0", "false"):
        return _applied
    libc = _glibc()
    if libc is not None and libc.mallopt(_M_MMAP_MAX, 0) == 1:
        if libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES) == 1:
            _applied.append("malloc keeps freed memory")
    return _applied


def describe() -> str:
    """One line for logs and benchmark records."""
    applied = configure()
    if not applied:
        return f"CPU memory: platform default ({ENV}=default or unsupported)"
    return "CPU memory: " + ", ".join(applied) + f" (opt out: {ENV}=default)"
