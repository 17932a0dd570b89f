"""How the ``mlfn`` commands speak: errors as one line, progress bars, counts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from runtime.errors import HostError, MlfnError

if TYPE_CHECKING:
    from runtime.model_store.base import Progress


@contextmanager
def told() -> Iterator[None]:
    """Errors a person can act on, as one line at the prompt rather than a traceback."""
    try:
        yield
    except HostError as exc:
        raise click.ClickException(str(exc)) from None
    except MlfnError as exc:
        raise click.ClickException(exc.message) from None


@contextmanager
def storage(what: str) -> Iterator[None]:
    """Storage SDK errors as mlfn's (StoreUnavailable names what was being reached)."""
    from runtime.errors import NotFound
    from runtime.storage.clients import storage_errors

    try:
        with storage_errors(what):
            yield
    except NotFound as exc:
        raise click.ClickException(f"{exc} does not exist") from None


@contextmanager
def progress_bar(label: str) -> Iterator[Progress]:
    """A progress callback (done, total) drawing a bar on stderr once a transfer starts."""
    bar: Any = None
    shown = [0]

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown[0])
        shown[0] = done

    try:
        yield progress
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def plural(count: int, noun: str) -> str:
    """``1 row``, ``2 rows``: a count and its noun, agreeing."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def pretty(payload: bytes) -> str:
    """A JSON answer indented for a person; anything else as text."""
    try:
        return json.dumps(json.loads(payload), indent=2)
    except ValueError:
        return payload.decode(errors="replace")
