"""Index an app in a fresh interpreter, as the Functions worker does at start, and print what
``mlfn check`` needs as one JSON document:

    python -m runtime.deploy.probe APP_DIR

``functions``: name, raw bindings and why the worker would refuse each one; ``error``: why the
app cannot be indexed at all; ``loaded``: the heavy modules importing it pulled in
(``importers``: the app's line that imported each); ``models``: each endpoint's model
reference. Run apart from the CLI so the app's imports are its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

# What must wait for first use: importing any of these at indexing costs every cold start.
HEAVY = (
    "onnxruntime",
    "numpy",
    "pandas",
    "torch",
    "tensorflow",
    "sklearn",
    "azure.storage.blob",
    "azure.storage.queue",
    "azure.identity",
    "boto3",
    "pyarrow",
)


class _Importers:
    """A finder that finds nothing: it notes, for each module of ``HEAVY`` the app's import
    loads first, the app's own line that imported it (the innermost frame in the app's
    folder: an endpoint's ``import numpy``, not ``function_app.py``'s import of it)."""

    def __init__(self, app_dir: Path, found: dict[str, str]) -> None:
        self._root = os.path.abspath(app_dir)
        self._found = found

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname in HEAVY and fullname not in self._found and fullname not in sys.modules:
            for frame in reversed(traceback.extract_stack()):
                if frame.filename.startswith("<"):  # importlib's own frames: no file
                    continue
                where = os.path.abspath(frame.filename)
                if where.startswith(self._root + os.sep):
                    self._found[fullname] = f"{os.path.relpath(where, self._root)}:{frame.lineno}"
                    break


def probe(app_dir: Path) -> dict[str, Any]:
    from runtime.host.local_settings import apply_local_settings

    apply_local_settings(app_dir)
    report: dict[str, Any] = {
        "error": None, "functions": [], "loaded": [], "importers": {}, "models": [],
    }  # fmt: skip
    sys.path.insert(0, str(app_dir))
    os.chdir(app_dir)
    watch = _Importers(app_dir, report["importers"])
    try:
        import azure.functions  # noqa: F401  (the worker has it loaded before the app)

        baseline = set(sys.modules)
        sys.meta_path.insert(0, watch)
        import function_app  # noqa: F401
    except BaseException as exc:
        from runtime.discovery import import_failure
        from runtime.host.metadata import SCRIPT

        # Worded here, where the traceback is, as mlfn serve words it: the app's file and line.
        report["error"] = import_failure(exc, app_dir, SCRIPT)
        traceback.print_exc(limit=8)  # to stderr, for a person running the probe by hand
        return report
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(watch)
    report["loaded"] = sorted(m for m in HEAVY if m in sys.modules and m not in baseline)

    from runtime.errors import IndexingError
    from runtime.host import worker_rules
    from runtime.host.metadata import functions_of, registered_app

    try:
        app = registered_app()
        functions = functions_of(app)
    except IndexingError as exc:
        report["error"] = str(exc)
        return report
    for f in functions:
        report["functions"].append(
            {
                "name": f.get_function_name(),
                "bindings": [json.loads(raw) for raw in f.get_raw_bindings()],
                "problems": worker_rules.problems(f),
            }
        )
    services = getattr(app, "services", None)
    for name, bound in sorted(getattr(services, "endpoints", {}).items()):
        model = bound.endpoint.model
        report["models"].append({"endpoint": name, "uri": model.uri, "sha256": model.sha256})
    return report


def main(app_dir: str) -> None:
    # The app may print or log while importing: keep stdout for the report alone.
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    result = probe(Path(app_dir).absolute())
    real_stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
