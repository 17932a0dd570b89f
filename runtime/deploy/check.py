"""``mlfn check``: will ``func azure functionapp publish`` give a working app? Each finding is
something that fails on Azure (or fails the publish) and can be seen before it.

The app is indexed in a fresh interpreter the way the worker indexes it (runtime/deploy/probe.py,
with the worker's load rules from runtime/host/worker_rules.py); the rest reads files: host.json,
requirements.txt, .funcignore, the model references and the app settings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from runtime.config import binding_expressions
from runtime.deploy import data_check, files, model_check, requirements_check
from runtime.deploy.findings import Report
from runtime.protocol.jobs import is_container_name

REQUIRED = ("host.json", "function_app.py", "requirements.txt")
PROBE_TIMEOUT_S = 120
BUNDLE_ID = "Microsoft.Azure.Functions.ExtensionBundle"
BUILT_IN_BINDINGS = frozenset({"httpTrigger", "http", "timerTrigger"})
# What a published package must not carry, by what it is: names (globs) of files and folders.
KEEP_OUT = {
    "tests": "tests",
    "test": "tests",
    ".venv": "a virtual environment",
    "venv": "a virtual environment",
    "__pycache__": "bytecode caches",
    ".pytest_cache": "a test cache",
    ".mypy_cache": "a type-checker cache",
    ".ruff_cache": "a linter cache",
    ".azurite": "Azurite data",
    "__blobstorage__": "Azurite data",
    "__queuestorage__": "Azurite data",
    "__azurite_db_*": "Azurite data",
    "node_modules": "node packages",
}
_TIMESPAN = re.compile(r"-1|(\d+\.)?\d{1,2}:\d{2}:\d{2}(\.\d+)?")


def check(app_dir: Path, env: Mapping[str, str] | None = None, fetch: bool = True) -> Report:
    """Every finding for the app at ``app_dir``; ``env`` is the environment the app would see
    (default: this process's, with local.settings.json Values under it)."""
    app_dir = app_dir.resolve()
    report = Report()
    settings = dict(os.environ if env is None else env)
    values = _local_settings(app_dir, settings, report)
    missing = [name for name in REQUIRED if not (app_dir / name).is_file()]
    for name in missing:
        report.add(name, "is missing; a Python app needs it at its root to publish")
    if "function_app.py" in missing:
        return report
    package = files.package(app_dir)
    host_json = _check_host_json(app_dir, report)
    _check_funcignore(app_dir, package, report)
    probed = _probe(package, settings)
    _check_index(host_json, probed, settings, report)
    if "requirements.txt" not in missing:
        requirements_check.check_requirements(app_dir, package, probed, settings, report)
    model_check.check_models(app_dir, package, probed, settings, report, fetch)
    data_check.check_data(package, model_check.referenced_files(app_dir, probed, settings), report)
    from runtime.config import unknown_settings

    # The app's settings are what local.settings.json declares (and what the app settings on
    # Azure should mirror); this shell's environment is not deployed.
    for sentence in unknown_settings(values):
        report.add("local.settings.json", sentence)
    return report


def model_files(package: files.Package, env: Mapping[str, str] | None = None) -> set[str]:
    """The files of ``package`` its endpoints name as their models (never data), found as
    ``check`` finds them: the app indexed in a fresh interpreter, so the caller's process
    imports nothing of it. An app that does not import has its ONNX files taken for its
    models; ``check`` says why it does not import."""
    settings = dict(os.environ if env is None else env)
    _local_settings(package.root, settings, Report())
    probed = _probe(package, settings)
    if probed["error"]:
        return {f for f in package.files if f.lower().endswith(".onnx")}
    return model_check.referenced_files(package.root, probed, settings)


def data_files(package: files.Package, sizes: dict[str, int] | None = None) -> dict[str, str]:
    """What ``check`` counts as data in ``package``, each with what it is. The app is indexed
    (a fresh interpreter, about a second) only when some file could be data: its models are
    never data."""
    found = data_check.data_files(package, set(), sizes)
    if not found:
        return found
    return data_check.data_files(package, model_files(package), sizes)


def _local_settings(app_dir: Path, settings: dict[str, str], report: Report) -> dict[str, str]:
    """Put local.settings.json Values under ``settings``; return all of them."""
    from runtime.errors import LocalSettingsError
    from runtime.host.local_settings import apply_local_settings

    values: dict[str, str] = {}
    try:
        apply_local_settings(app_dir, values)
    except LocalSettingsError as exc:
        report.add("local.settings.json", str(exc))
    for key, value in values.items():
        settings.setdefault(key, value)
    return values


# --- host.json --------------------------------------------------------------------------------


def _check_host_json(app_dir: Path, report: Report) -> dict[str, Any] | None:
    """Findings on host.json; the document, when it is one, for the checks that need it."""
    path = app_dir / "host.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        report.add("host.json", f"is not valid JSON: {exc}")
        return None
    if not isinstance(doc, dict):
        report.add("host.json", "must be a JSON object")
        return None
    if doc.get("version") != "2.0":
        report.add("host.json", f'"version" must be "2.0", not {doc.get("version")!r}')
    timeout = doc.get("functionTimeout")
    if timeout is not None and not _TIMESPAN.fullmatch(str(timeout)):
        report.add("host.json", f"functionTimeout {timeout!r} is not a timespan like 00:10:00")
    from runtime.errors import HostConfigError
    from runtime.host.queue_options import QueueOptions
    from runtime.host_json import HostConfig

    try:
        QueueOptions.from_host(HostConfig(doc))
    except HostConfigError as exc:
        report.add("host.json", str(exc))
    return doc


def _check_bundle(host_json: dict[str, Any] | None, types: set[str], report: Report) -> None:
    """Binding types other than HTTP and timers come from extensions: without the bundle the
    host on Azure does not know them and no function of the app starts."""
    extension_types = types - BUILT_IN_BINDINGS
    if not extension_types or host_json is None:
        return  # a host.json that cannot be read has its own finding
    bundle = host_json.get("extensionBundle")
    if not isinstance(bundle, dict) or bundle.get("id") != BUNDLE_ID:
        report.add(
            "host.json",
            f'needs "extensionBundle": {{"id": "{BUNDLE_ID}", "version": "[4.*, 5.0.0)"}} '
            f"for its {', '.join(sorted(extension_types))} bindings",
        )
    elif not re.fullmatch(r"\[\s*[\d.*]+\s*,\s*[\d.*]+\s*\)", str(bundle.get("version", ""))):
        report.add(
            "host.json",
            f"extensionBundle version {bundle.get('version')!r} must be a range like "
            '"[4.*, 5.0.0)"',
        )


# --- the publish package ----------------------------------------------------------------------


def _check_funcignore(app_dir: Path, package: files.Package, report: Report) -> None:
    if not (app_dir / files.FUNCIGNORE).is_file():
        report.add(".funcignore", "is missing: publish would upload everything in the folder")
    for relative, what in _kept_out_candidates(app_dir):
        if package.includes(relative):
            report.add(".funcignore", f"{relative} ({what}) would be published: add it")
    for relative in package.broken_links:
        report.add(relative, "is a link to nothing: publish fails reading it")
    for relative, target in package.escapes:
        report.add(relative, files.escape_message(relative, target).removeprefix(relative + " "))
    for relative, target in package.linked_folders:
        report.notes.append(
            f"{relative} is a link to the folder {target}: mlfn pack does not follow it (the "
            f"files are packed once, under {target}); code that imports through the link fails"
        )
    for relative, what in package.secrets:
        folder = app_dir / relative
        inside = None
        if folder.is_dir():
            inside = [p.relative_to(app_dir).as_posix() for p in folder.rglob("*") if p.is_file()]
        report.add(
            relative,
            f"looks like a secret ({what}): mlfn pack leaves it out, but func azure "
            f"functionapp publish would upload it: add `{files.funcignore_line(relative, inside)}` "
            "to .funcignore",
        )


def _kept_out_candidates(app_dir: Path) -> Iterator[tuple[str, str]]:
    for folder, dirs, names in os.walk(app_dir):
        here = Path(folder).relative_to(app_dir)
        dirs[:] = [d for d in dirs if d not in files.NEVER_DIRS]
        for name in [*dirs, *names]:
            shown = (here / name).as_posix() + ("/" if name in dirs else "")
            what = next((w for glob, w in KEEP_OUT.items() if fnmatchcase(name, glob)), None)
            if what is not None:
                yield shown, what
            elif name in dirs and files.is_virtualenv(Path(folder) / name):
                yield shown, "a virtual environment"
        dirs[:] = [
            d
            for d in dirs
            if not any(fnmatchcase(d, glob) for glob in KEEP_OUT)
            and not files.is_virtualenv(Path(folder) / d)
        ]


# --- indexing ---------------------------------------------------------------------------------


def _probe(package: files.Package, settings: Mapping[str, str]) -> dict[str, Any]:
    """Index the app as published: a mirror of the package's files (links to them), so a module
    that .funcignore leaves out fails here as it would on Azure."""
    with tempfile.TemporaryDirectory(prefix="mlfn-check-") as tmp:
        mirror = Path(tmp) / package.root.name
        for relative in package.files:
            (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(package.root / relative, mirror / relative)
        mirror.mkdir(exist_ok=True)
        code = "import sys; from runtime.deploy.probe import main; main(sys.argv[1])"
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, str(mirror)],
                capture_output=True,
                text=True,
                env={**settings, "PYTHONPATH": _runtime_path()},
                timeout=PROBE_TIMEOUT_S,
                cwd=_runtime_path(),
            )
        except subprocess.TimeoutExpired:
            error = f"importing the app took over {PROBE_TIMEOUT_S} s (the worker would time out)"
            return {"error": error, "functions": [], "loaded": [], "models": []}
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"indexing crashed: {tail}", "functions": [], "loaded": [], "models": []}
    return result


def _runtime_path() -> str:
    """Where this mlfn's ``runtime`` package lives, for the probe's interpreter."""
    import runtime

    return str(Path(runtime.__file__).resolve().parents[1])


def _check_index(
    host_json: dict[str, Any] | None,
    probed: dict[str, Any],
    settings: Mapping[str, str],
    report: Report,
) -> None:
    if probed["error"]:
        report.add("function_app.py", probed["error"])
        return
    if not probed["functions"]:
        report.add("function_app.py", "the app registers no function")
    for module in probed["loaded"]:
        report.add(
            probed.get("importers", {}).get(module, "function_app.py"),  # the line importing it
            f"importing the app loads {module}: every cold start pays for it; import it on first "
            "use",
        )
    types = {b["type"] for f in probed["functions"] for b in f["bindings"]}
    _check_bundle(host_json, types, report)
    for function in probed["functions"]:
        name = function["name"]
        report.functions.append(name)
        for problem in function["problems"]:
            report.add(f"function {name}", problem)
        for binding in function["bindings"]:
            _check_binding(name, binding, settings, report)


def _check_binding(
    function: str, binding: dict[str, Any], settings: Mapping[str, str], report: Report
) -> None:
    where = f"function {function}"
    for key in ("queueName", "path", "containerName"):
        value = binding.get(key)
        if not isinstance(value, str):
            continue
        unset = binding_expressions.missing(value, settings)
        if unset:
            report.add(where, f"{key} {value!r} names app settings that are not set: {unset}")
            continue
        if key == "queueName":
            name = binding_expressions.queue_name(value, settings)
        else:
            name = binding_expressions.resolve(value, settings).split("/", 1)[0]
        if "{" in name:
            continue  # a binding expression resolved per invocation
        kind = "queue" if key == "queueName" else "container"
        if not is_container_name(name):  # Azure's rule for queues and containers alike
            report.add(
                where,
                f"{kind} name {name!r} is invalid: 3-63 lowercase letters, digits and single "
                "hyphens, starting and ending with a letter or digit",
            )
    connection = binding.get("connection")
    storage = binding.get("type", "").startswith(("queue", "blob"))
    if storage and connection is None:
        connection = "AzureWebJobsStorage"
    try:
        provided = not isinstance(connection, str) or _provided(connection, settings, storage)
    except _Misconfigured as exc:
        report.add(where, f"connection {connection!r}: {exc}")
        return
    if not provided:
        forms = "__accountName / __blobServiceUri / __queueServiceUri" if storage else "__…"
        report.add(
            where,
            f"connection {connection!r}: no setting provides it ({connection}, or "
            f"{connection}{forms}); add it to the app settings and to local.settings.json",
        )


class _Misconfigured(Exception):
    """A connection setting is there, but the host could not use it."""


def _provided(connection: str, settings: Mapping[str, str], storage: bool) -> bool:
    """Whether a setting provides connection ``connection``: for storage bindings as mlfn and
    the host read it (runtime.config.connection); for other extensions (Service Bus, Event
    Hubs, Cosmos DB), the setting itself or any ``connection__property`` of it."""
    if storage:
        from runtime.config import connection as storage_connection
        from runtime.errors import ConfigError

        try:
            return storage_connection(connection, settings) is not None
        except ConfigError as exc:
            raise _Misconfigured(exc.message) from None
    prefix = connection.lower() + "__"
    return bool(settings.get(connection, "").strip()) or any(
        key.lower().startswith(prefix) and value.strip() for key, value in settings.items()
    )
