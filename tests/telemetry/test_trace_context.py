"""W3C trace parents: which are read, which are ignored, and which parent an invocation takes."""

from __future__ import annotations

import pytest

from runtime.telemetry import trace_context
from runtime.telemetry.trace_context import choose, parse

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SAME_TRACE = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
OTHER_TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def test_a_trace_parent_is_read_into_its_ids_and_flags() -> None:
    found = parse(CALLER)
    assert found is not None
    assert (found.trace_id, found.span_id, found.flags) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        1,
    )
    assert str(found) == CALLER


@pytest.mark.parametrize(
    "value",
    [
        None,
        7,
        "",
        "nope",
        CALLER.upper(),  # the spec's ids are lower-case hex
        "ff" + CALLER[2:],  # version ff is invalid
        CALLER + "-extra",  # version 00 has four fields
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",  # an all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",  # an all-zero span id
    ],
)
def test_a_malformed_trace_parent_is_ignored_not_an_error(value: object) -> None:
    assert parse(value) is None


def test_a_later_version_may_carry_more_fields() -> None:
    assert parse("01" + CALLER[2:] + "-more") is not None


def test_a_fresh_trace_parent_is_valid_sampled_and_new_each_time() -> None:
    first, second = trace_context.fresh(), trace_context.fresh()
    parsed = parse(first)
    assert parsed is not None and parsed.flags == 1 and first != second


def test_the_callers_parent_is_continued_with_its_state() -> None:
    assert choose((CALLER, "k=v"), (None, None)) == (CALLER, "k=v")
    # Locally the host makes up a parent of another trace: the caller's still wins.
    assert choose((CALLER, None), (OTHER_TRACE, "h=1")) == (CALLER, "")


def test_the_hosts_span_in_the_callers_trace_sits_between_them() -> None:
    # On Azure the host continues the caller's header and hands the worker its own span.
    assert choose((CALLER, "k=v"), (SAME_TRACE, "h=1")) == (SAME_TRACE, "h=1")


def test_without_a_caller_the_hosts_parent_or_a_new_trace() -> None:
    assert choose((None, None), (OTHER_TRACE, None)) == (OTHER_TRACE, "")
    assert choose(("garbage", None), (None, None)) is None
