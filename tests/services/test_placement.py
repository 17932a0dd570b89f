"""Where a sync run goes: on the event loop once runs of its size prove shorter than a thread
hop, in a thread otherwise."""

from __future__ import annotations

import time

from runtime.services.placement import Placement


def test_work_proved_short_runs_in_place_and_work_proved_long_does_not() -> None:
    placement = Placement(inline_below_s=0.01)
    assert not placement.fast(1)  # not measured yet
    placement.timed(lambda: None, 1)
    assert placement.fast(1)
    assert not placement.fast(64)  # another size class, not measured
    for _ in range(5):
        placement.timed(lambda: time.sleep(0.03), 1)
    assert not placement.fast(1)


def test_one_stalled_run_does_not_send_the_next_ones_to_threads() -> None:
    """A collection or a descheduled process stalls a run now and then; counted whole, one
    stall of 50 limits kept a fast model's runs in threads (where they are slower, and timed
    there) for many runs after."""
    placement = Placement(inline_below_s=0.002)
    for _ in range(5):
        placement.timed(lambda: None, 1)
    placement.timed(lambda: time.sleep(0.1), 1)
    assert placement.fast(1)
    for _ in range(3):
        placement.timed(lambda: time.sleep(0.1), 1)
    assert not placement.fast(1)  # slow again and again: it is slow
