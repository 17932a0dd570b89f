"""Storage has one door: the Azure Storage, Core and Identity SDKs are imported by the storage
rooms (runtime/storage/: the app's storage account; runtime/model_store/: where model bytes come
from) and by the local host's own storage module, nowhere else. Every import statement counts,
those inside functions (imported on first use) and those for type checkers only too: code
elsewhere asks the door and gets mlfn's values and exceptions back."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
SDKS = ("azure.storage", "azure.core", "azure.identity")
DOORS = ("storage/", "model_store/", "host/storage_accounts.py")


def _sdk_imports(path: Path) -> list[str]:
    """The SDK modules ``path`` imports, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from azure import storage`` imports azure.storage as surely as ``import`` does.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [
            f"{name} (line {node.lineno})"
            for name in names
            if any(name == sdk or name.startswith(f"{sdk}.") for sdk in SDKS)
        ]
    return found


def _modules() -> dict[str, Path]:
    return {p.relative_to(RUNTIME).as_posix(): p for p in sorted(RUNTIME.rglob("*.py"))}


def test_the_storage_sdks_are_imported_only_behind_the_storage_door() -> None:
    outside = {
        name: imports
        for name, path in _modules().items()
        if not name.startswith(DOORS) and (imports := _sdk_imports(path))
    }
    assert outside == {}, (
        "the storage SDKs imported outside runtime/storage/, runtime/model_store/ and "
        "runtime/host/storage_accounts.py: give the door a function or an mlfn exception for "
        f"what is needed: {outside}"
    )


def test_the_check_sees_the_imports_the_doors_make() -> None:
    # The walk must see function-level and type-checking imports, or the test above proves
    # nothing: the doors make both kinds.
    modules = _modules()
    clients = _sdk_imports(modules["storage/clients.py"])
    assert any(i.startswith("azure.core.exceptions.") for i in clients), clients
    assert any(i.startswith("azure.identity") for i in clients), clients
    host = _sdk_imports(modules["host/storage_accounts.py"])
    assert any(i.startswith("azure.storage.queue") for i in host), host
