"""``--wait``, as ``mlfn batch`` and ``mlfn results`` read it: a finite number of seconds from
0, or, given alone, the command's default."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from runtime.protocol.csv_rows import is_number

F = TypeVar("F", bound=Callable[..., Any])

WAIT_S = 600.0  # --wait alone


class Seconds(click.ParamType[float]):
    """A finite number of seconds from 0: NaN would wait for ever, a negative number means
    nothing a person meant."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            try:
                seconds = float(value)
            except ValueError:
                seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            self.fail(
                f"{value!r} is not a number of seconds: give a finite number from 0, e.g. 30",
                param,
                ctx,
            )
        return seconds


class OptionalWaitCommand(click.Command):
    """A command whose ``--wait`` takes a number when one follows it, else ``WAIT_S``: so
    ``--wait FILE`` and ``FILE --wait`` both leave FILE a file (click's optional values would
    take FILE as the number). A word after a bare ``--wait`` that no argument wants is the
    wait's value, refused as not a number, rather than an extra argument."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = _optional_number(args, "--wait", WAIT_S)
        if given != args and self._extra_arguments(ctx, given):
            given = args  # `--wait abc`: abc was meant as the wait
        return super().parse_args(ctx, given)

    def _extra_arguments(self, ctx: click.Context, args: list[str]) -> bool:
        try:
            _, left_over, _ = self.make_parser(ctx).parse_args(args=list(args))
        except click.UsageError:
            return False  # click says what is wrong when it parses them for real
        return bool(left_over)


def wait_option(help: str, default: float, note: str = "") -> Callable[[F], F]:
    """``--wait [SECONDS]`` of an ``OptionalWaitCommand``: ``help`` says what it waits for,
    ``note`` follows what ``--wait`` alone means."""
    return click.option(
        "--wait",
        "wait_s",
        type=Seconds(),
        default=default,
        metavar="[SECONDS]",
        help=f"{help} [{default:g}]. A number right after --wait is its value; --wait alone "
        f"means {WAIT_S:g}{note}.",
    )


def _optional_number(args: list[str], option: str, default: float) -> list[str]:
    """``args`` with a bare ``option`` (no number after it) given ``default`` as its value."""
    given: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return given + args[i:]
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg == option and not is_number(following):
            arg = f"{option}={default:g}"
        given.append(arg)
    return given
