"""Finding the endpoints of an app: one ``functions/NAME/endpoint.py`` per endpoint."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from runtime.endpoint import BoundEndpoint, Endpoint
from runtime.errors import DiscoveryError


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
