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
