"""The hostile-input helpers themselves (tests/bombs.py)."""

from __future__ import annotations

import gzip

import pytest

from tests.bombs import MiB, gzip_bomb, reset_peak_rss


def test_a_peak_that_cannot_be_reset_skips_the_test_saying_why() -> None:
    # No such process (pid_max is at most 2**22): /proc has no clear_refs to write.
    with pytest.raises(pytest.skip.Exception, match="cannot reset the peak RSS of process"):
        reset_peak_rss(2**22 + 1)


def test_a_gzip_bomb_inflates_to_what_it_says() -> None:
    bomb = gzip_bomb(b"head", 2 * MiB, b"tail")
    assert len(bomb) < 20_000
    assert gzip.decompress(bomb) == b"head" + b"0" * (2 * MiB) + b"tail"
