"""Finding the endpoints of an app: one ``functions/NAME/endpoint.py`` per endpoint."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

from runtime.endpoint import BoundEndpoint, Endpoint
from runtime.errors import DiscoveryError, HostError


def discover(functions_dir: Path) -> list[BoundEndpoint]:
    """Import every ``functions_dir/*/endpoint.py`` and return the endpoints they declare,
    sorted by name. Folders without an ``endpoint.py`` (and ``_private`` ones) are skipped."""
    functions_dir = functions_dir.resolve()
    root = str(functions_dir.parent)
    if root not in sys.path:
        # The Functions worker puts the app root on sys.path; the local host does too. This
        # covers callers (tests, tools) that import function_app from elsewhere.
        sys.path.insert(0, root)
    found = []
    for folder in sorted(p for p in functions_dir.iterdir() if p.is_dir()):
        if folder.name.startswith(("_", ".")) or not (folder / "endpoint.py").is_file():
            continue
        module_name = f"{functions_dir.name}.{folder.name}.endpoint"
        module = importlib.import_module(module_name)
        declared = [v for v in vars(module).values() if isinstance(v, Endpoint)]
        if len(declared) != 1:
            raise DiscoveryError(
                f"{folder / 'endpoint.py'} must declare exactly one Endpoint at module level, "
                f"found {len(declared)}"
            )
        try:
            found.append(BoundEndpoint(folder.name, declared[0]))
        except ValueError as exc:
            raise DiscoveryError(str(exc)) from None
    _check_batch_containers(found)
    return found


def import_failure(exc: BaseException, app_dir: Path, what: str) -> str:
    """Why importing ``what`` (``function_app.py``, an app's endpoints) failed, in one
    line: the app's file and line that raised (a SyntaxError's own), then the error. mlfn's
    own refusals (HostError) already say which file and what to do: their message as it is."""
    if isinstance(exc, HostError):
        return str(exc)
    where: tuple[Path | str, int | None] | None = None
    if isinstance(exc, SyntaxError) and exc.filename:
        where = (_in_app(exc.filename, app_dir) or exc.filename, exc.lineno)
        message = exc.msg
    else:
        for frame, line in traceback.walk_tb(exc.__traceback__):
            # The innermost frame of the app's own code (not of a venv inside the app folder).
            source = _in_app(frame.f_code.co_filename, app_dir)
            if source is not None:
                where = (source, line)
        lines = str(exc).strip().splitlines()
        message = lines[-1] if lines else ""
    error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if where is not None:
        shown = where[0].as_posix() if isinstance(where[0], Path) else where[0]
        error = f"{shown}, line {where[1]}: {error}" if where[1] else f"{shown}: {error}"
    return f"importing {what} failed: {error}"


def _in_app(filename: str, app_dir: Path) -> Path | None:
    """``filename`` relative to ``app_dir`` when it is the app's own code, else None. Tried as
    named and as resolved: ``mlfn check`` imports links to the app's files from elsewhere."""
    named = Path(os.path.abspath(filename))
    for path, root in (
        (named, Path(os.path.abspath(app_dir))),
        (named.resolve(), app_dir.resolve()),
    ):
        if path.is_relative_to(root) and "site-packages" not in path.parts:
            return path.relative_to(root)
    return None


def _check_batch_containers(endpoints: list[BoundEndpoint]) -> None:
    """No endpoint's results may land where an endpoint's batch files are picked up: they
    would be scored again, and their results too, forever."""
    watched = {b.batch_container: b.name for b in endpoints if b.endpoint.batch.enabled}
    for bound in endpoints:
        if bound.endpoint.batch.enabled and bound.results_container in watched:
            raise DiscoveryError(
                f"endpoint {bound.name!r} writes batch results to {bound.results_container!r}, "
                f"where endpoint {watched[bound.results_container]!r} picks up batch files"
            )
