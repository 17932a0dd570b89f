"""The rooms of runtime/ and what each may import (docs/architecture.md), checked on the source:
every import statement counts, including those inside functions (imported on first use)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"


def _module(path: Path) -> str:
    parts = path.relative_to(RUNTIME.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {_module(p): _imports(p) for p in sorted(RUNTIME.rglob("*.py"))}


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _importing(prefixes: tuple[str, ...], rooms: tuple[str, ...]) -> list[str]:
    """Modules of ``rooms`` that import anything under ``prefixes``."""
    return sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        if _room(module) in rooms
        for name in names
        if any(name == p or name.startswith(p + ".") for p in prefixes)
    )


def test_the_layout_is_what_the_architecture_document_describes() -> None:
    rooms = {_room(m) for m in IMPORTS}
    for room in ("services", "protocol", "storage", "store", "models", "triggers", "host"):
        assert f"runtime.{room}" in rooms


@pytest.mark.parametrize(
    ("rooms", "forbidden"),
    [
        # Codecs depend only downward: on values, errors and declarations, never on a service.
        (("runtime.protocol",), ("runtime.services", "runtime.triggers", "runtime.host",
                                 "runtime.storage", "runtime.store", "runtime.models.registry")),
        # Services are transport-neutral: no azure.functions type, no trigger, no local host.
        (("runtime.services",), ("azure.functions", "runtime.triggers", "runtime.host")),
        # Model lifecycle and stores know nothing of endpoints, services or transports.
        (("runtime.models", "runtime.store"), ("runtime.endpoint", "runtime.services",
                                               "runtime.triggers", "runtime.host",
                                               "runtime.protocol", "azure.functions")),
        (("runtime.storage",), ("runtime.services", "runtime.triggers", "runtime.host",
                                "azure.functions")),
        # Triggers translate and call services; they never reach around them.
        (("runtime.triggers",), ("runtime.models.registry", "runtime.store", "runtime.storage",
                                 "runtime.host", "runtime.batching")),
    ],
)  # fmt: skip
def test_each_room_imports_only_what_it_may(
    rooms: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    assert _importing(forbidden, rooms) == []


def test_only_the_local_host_and_the_cli_import_the_local_host() -> None:
    deployed = tuple(
        r for r in {_room(m) for m in IMPORTS} if r not in ("runtime.host", "runtime.cli")
    )
    assert _importing(("runtime.host",), deployed) == []
