"""Importing heavy modules ahead of need, in a background thread: a cold start then overlaps
importing onnxruntime with fetching the model, and the local host imports what a first
request will need while it waits for one."""

from __future__ import annotations

import atexit
import importlib
import logging
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("mlfn.models")


def import_in_background(*modules: str) -> threading.Thread | None:
    """Start importing those of ``modules`` not imported yet; a later ``import`` of one still
    being imported waits for it (Python's import lock), so nothing is imported twice."""
    missing = [m for m in modules if m not in sys.modules]
    if not missing:
        return None
    thread = threading.Thread(target=_import, args=(missing,), name="mlfn-import", daemon=True)
    thread.start()
    return thread


# How long an exiting process waits for a warm start's step in progress: onnxruntime building a
# session on a thread the interpreter abandons at exit aborts the process ("terminate called").
EXIT_WAIT_S = 10.0


def start_warming(work: Callable[[threading.Event], None]) -> threading.Thread:
    """Run ``work`` on a daemon thread of its own (``mlfn-warm``); it is handed an event set
    when the process exits, and should then start no new step. An exiting process waits up
    to ``EXIT_WAIT_S`` for the step in progress. An exception in ``work`` is logged, once."""
    stop = threading.Event()

    def run() -> None:
        try:
            work(stop)
        except Exception:  # never indexing's or a request's failure: theirs is their own
            log.exception("warm start failed")

    def at_exit() -> None:
        stop.set()
        thread.join(EXIT_WAIT_S)

    thread = threading.Thread(target=run, name="mlfn-warm", daemon=True)
    atexit.register(at_exit)
    thread.start()
    return thread


def import_now(*modules: str) -> None:
    """Import ``modules`` in this thread; one that cannot be imported is left to its user."""
    _import([m for m in modules if m not in sys.modules])


def _import(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional store's SDK; its own import says what to do
            log.debug("not imported ahead: %s (%s)", name, exc)
