"""Hostile inputs made on the fly, small on disk: gzip bombs, and a way to measure what reading
one costs a process (its peak resident memory, reset first)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
MiB = 1 << 20


def gzip_bomb(head: bytes, filler: int, tail: bytes = b"", fill: bytes = b"0") -> bytes:
    """A gzip member that inflates to ``head``, ``filler`` bytes of ``fill`` (a whole number
    of MiB), then ``tail``: about a thousandth of its inflated size. One MiB of filler is
    compressed once and its deflate blocks repeated (a full flush makes each copy stand
    alone), so a gigabyte takes a second, not a minute."""
    assert filler % MiB == 0
    block = fill * MiB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.compress(tail) + deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(filler // MiB):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + filler + len(tail)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + first + repeated * (filler // MiB) + last + trailer


def peak_rss(pid: int | str = "self") -> int:
    """A process's peak resident memory, in bytes, since it started or was last reset."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    return int(kb) * 1024


def reset_peak_rss(pid: int | str = "self") -> int:
    """Reset a process's peak resident memory to what it holds now (Linux 4.0+), and return
    it in bytes. Where it cannot be reset (not Linux, a container that mounts /proc read-only)
    the calling test is skipped, saying why: a peak from before would measure nothing."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS of process {pid} to measure it: {exc}")
    return peak_rss(pid)


def peak_growth(fn: Callable[[], T]) -> tuple[T | BaseException, int]:
    """What ``fn`` returned (or raised), and how far this process's peak resident memory rose
    above what it held before, in bytes."""
    before = reset_peak_rss()
    try:
        result: T | BaseException = fn()
    except Exception as exc:  # the caller asserts what it was
        result = exc
    return result, peak_rss() - before
