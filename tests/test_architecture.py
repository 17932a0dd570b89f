"""The rooms of runtime/ and what each may import (docs/architecture.md), checked on the source:
every import statement counts, including those inside functions (imported on first use)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"

# Room -> the rooms it may import besides itself. A room is a top-level module or package of
# runtime/; "runtime" is the package's own __init__ (the public API).
ALLOWED: dict[str, set[str]] = {
    "redact": set(),
    "errors": {"redact"},
    "scored": set(),
    "element_types": set(),
    "version": set(),
    "digest": set(),
    "batching": {"errors", "telemetry"},
    "config": {"errors"},
    "host_json": {"errors"},
    "telemetry": {"config", "errors", "version", "redact"},
    "storage": {"config", "errors", "protocol", "telemetry"},
    "store": {"storage", "config", "errors"},
    "models": {"store", "config", "errors", "element_types", "digest", "telemetry"},
    "protocol": {"errors", "scored", "element_types", "endpoint", "redact"},
    # Columns: checks compiled from a model, a columnar predict's arrays; numpy and pyarrow.
    "columnar": {"errors"},
    "endpoint": {"models", "protocol", "columnar"},
    "discovery": {"endpoint", "errors"},
    "services": {"models", "protocol", "storage", "batching", "endpoint", "errors", "config",
                 "scored", "element_types", "telemetry", "columnar"},
    "triggers": {"services", "protocol", "errors", "host_json", "version", "redact", "telemetry"},
    "registration": {"config", "discovery", "protocol", "services", "triggers", "telemetry",
                     "redact"},
    "runtime": {"endpoint", "errors", "models", "registration"},
    "convert": {"errors"},
    # Spark scoring: a DataFrame's rows through the rows service; no deployed app imports it.
    # It shares the model cache's check of a private folder, the CSV rule of batch files and
    # the log redaction.
    "spark": {"discovery", "services", "endpoint", "errors", "digest", "models", "protocol",
              "redact"},
}  # fmt: skip
ANYTHING = {"host", "cli", "scaffold", "deploy"}  # the local host, the command line, deploy tools


def _module(path: Path) -> str:
    parts = path.relative_to(RUNTIME.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(RUNTIME.rglob("*.py"))}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "runtime"


def _names(path: Path) -> set[str]:
    """Everything ``path`` imports, as dotted names (``from a.b import c`` is ``a.b.c``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative imports hide from this check"
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imported(path: Path) -> set[str]:
    """The runtime modules ``path`` imports (``from runtime.x import name`` counts as runtime.x,
    ``from runtime import x`` as runtime.x)."""
    found = set()
    for name in _names(path):
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != "runtime":
            found.add(name)
    return found


def test_every_room_is_in_the_table() -> None:
    assert {_room(m) for m in MODULES} == set(ALLOWED) | ANYTHING


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_what_it_may(room: str) -> None:
    allowed = ALLOWED[room] | {room}
    wrong = sorted(
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if _room(module) == room
        for name in _imported(path)
        if _room(name) not in allowed
    )
    assert wrong == []


def test_only_the_local_host_and_the_tools_import_the_local_host() -> None:
    wrong = sorted(
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if _room(module) not in ("host", "cli", "deploy")
        for name in _imported(path)
        if _room(name) == "host"
    )
    assert wrong == []


def test_services_and_everything_below_them_never_see_azure_functions_types() -> None:
    edge = {"triggers", "registration", "host", "cli", "deploy", "runtime"}  # runtime: a hint
    wrong = sorted(
        module
        for module, path in MODULES.items()
        if _room(module) not in edge and any(n.startswith("azure.functions") for n in _names(path))
    )
    assert wrong == []


def test_only_the_command_line_imports_spark_scoring() -> None:
    wrong = sorted(
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if _room(module) not in ("spark", "cli")
        for name in _imported(path)
        if _room(name) == "spark"
    )
    assert wrong == []
