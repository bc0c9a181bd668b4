"""Process memory: hand freed heap back to the OS, read resident and peak memory.

Profiling keeps one ONNX Runtime session per calibration variant alive (they are timed side by
side); for resnet50 at 224 that is ~3 GB that glibc keeps mapped after the sessions are gone, so a
``hwprune prune`` that profiled first carried it through the whole search. ``malloc_trim`` returns
it (resnet50: 4.1 GB resident after profiling, 1.2 GB after the trim).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys


def release_freed_memory() -> None:
    """Collect garbage and return free heap pages to the OS (glibc only; a no-op elsewhere)."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc without malloc_trim
        pass


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB: ``VmHWM`` where /proc has it (the
    address space this process runs in), since Linux's ``ru_maxrss`` keeps the peak of the
    process that forked it across exec (a child of a 2 GB pytest worker reads 2 GB at start)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform.startswith("linux") else kb / 2 ** 20
