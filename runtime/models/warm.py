"""Importing heavy modules ahead of need, in a background thread: a cold start then overlaps
importing onnxruntime with fetching the model, and the local host imports what a first
request will need while it waits for one."""

from __future__ import annotations

import importlib
import logging
import sys
import threading

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


def _import(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional store's SDK; its own import says what to do
            log.debug("not imported ahead: %s (%s)", name, exc)
