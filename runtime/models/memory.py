"""Process memory, read from /proc (Linux, which is what Azure Functions runs Python on)."""

from __future__ import annotations

import os

MB = 1024 * 1024


def rss_bytes() -> int | None:
    """Resident set size of this process, or None where /proc is not available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_to_os(collect: bool = True) -> None:
    """Return freed heap to the OS after a model is unloaded. glibc keeps freed memory in its
    arenas; without a trim an unloaded session's memory still counts in RSS. ``collect``
    first frees unreachable cycles (an unloaded session may sit in one); a full collection
    costs tens of milliseconds in a process with many objects, so a load measuring its own
    growth only trims."""
    import contextlib
    import ctypes
    import gc

    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
