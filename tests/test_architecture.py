"""The rooms of runtime/ and what each may import (docs/architecture.md), checked on the source:
every import statement counts, including those inside functions (imported on first use) and
those only type checkers read. The rooms import one another without a cycle; the table in
docs/architecture.md allows what this one does and lists the rooms so that every import goes
down it. Every public exception class lives in errors.py."""

from __future__ import annotations

import ast
import builtins
import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
DOCS = RUNTIME.parent / "docs" / "architecture.md"

# Room -> the rooms it may import besides itself. A room is a top-level module or package of
# runtime/; "runtime" is the package's own __init__ (the public API).
ALLOWED: dict[str, set[str]] = {
    "redact": set(),
    "errors": {"redact"},
    "scored": set(),
    "element_types": set(),
    "version": set(),
    "digest": set(),
    "scheduling": {"errors", "telemetry"},
    "config": {"errors"},
    "host_json": {"errors"},
    "telemetry": {"config", "errors", "version", "redact"},
    "storage": {"config", "errors", "protocol", "telemetry"},
    "model_store": {"storage", "config", "errors"},
    "models": {"model_store", "config", "errors", "element_types", "digest", "telemetry"},
    "protocol": {"errors", "scored", "element_types"},
    # Columns: checks compiled from a model, a columnar predict's arrays; numpy and pyarrow.
    "columnar": {"errors"},
    # Releases: a document in the model store choosing among versions of an endpoint's model.
    "releases": {"model_store", "models", "config", "errors", "telemetry"},
    # The payload log: sampled requests and predictions as Parquet files in Blob Storage.
    "payload_log": {"storage", "protocol", "telemetry", "config", "errors", "scored", "redact"},
    "endpoint": {"models", "protocol", "columnar", "releases", "payload_log"},
    "discovery": {"endpoint", "errors"},
    "openapi": {"endpoint", "element_types", "redact"},  # a document of the declarations
    "services": {"models", "protocol", "storage", "scheduling", "endpoint", "errors", "config",
                 "scored", "element_types", "telemetry", "columnar", "releases", "payload_log"},
    "triggers": {"services", "protocol", "errors", "host_json", "version", "redact", "telemetry",
                 "openapi"},
    "registration": {"config", "discovery", "protocol", "services", "triggers", "telemetry",
                     "redact"},
    "runtime": {"endpoint", "errors", "models", "registration", "payload_log", "element_types"},
    "convert": {"errors"},
    # The drift report over the payload log's files; no deployed app imports it.
    "drift": {"storage", "config", "errors"},
    # Spark scoring: a DataFrame's rows through the rows service; no deployed app imports it.
    # It shares the model cache's check of a private folder, the CSV rule of batch files and
    # the log redaction.
    "spark": {"discovery", "services", "endpoint", "errors", "digest", "models", "protocol",
              "redact", "config"},
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


def _room_imports() -> dict[str, dict[str, str]]:
    """Room -> each other room it imports -> one import that does it (to name in a failure)."""
    graph: dict[str, dict[str, str]] = {_room(module): {} for module in MODULES}
    for module, path in MODULES.items():
        for name in sorted(_imported(path)):
            if _room(name) != _room(module):
                graph[_room(module)].setdefault(_room(name), f"{module} imports {name}")
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle of ``graph`` as the nodes along it, the first repeated last; None when the graph
    has none. Nodes are visited in sorted order, so the same graph names the same cycle."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            cycle = visit(successor)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle is not None:
            return cycle
    return None


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle through each knot of ``graph`` (nodes that reach one another), so a failure
    shows every tangle at once, not only the first."""

    def reach(node: str) -> set[str]:
        seen: set[str] = set()
        todo = [node]
        while todo:
            for successor in graph.get(todo.pop(), ()):
                if successor not in seen:
                    seen.add(successor)
                    todo.append(successor)
        return seen

    reached = {node: reach(node) for node in graph}
    knots = {
        frozenset(other for other in reached[node] if node in reached.get(other, ()))
        for node in graph
        if node in reached[node]
    }
    cycles = []
    for knot in sorted(knots, key=sorted):
        cycle = find_cycle({node: set(graph[node]) & knot for node in knot})
        assert cycle is not None  # a knot holds a cycle
        cycles.append(cycle)
    return cycles


def _told(cycles: list[list[str]], graph: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Cycles as a failure says them: the rooms, then the import behind each step."""
    told = []
    for cycle in cycles:
        told += [" -> ".join(cycle), *(f"  {graph[a][b]}" for a, b in itertools.pairwise(cycle))]
    return told


def test_the_table_allows_no_import_that_no_module_makes() -> None:
    # A stale allowance makes the table, and docs/architecture.md, tell of a tangle that is gone.
    graph = _room_imports()
    unused = sorted(
        f"{room} -> {other}" for room in ALLOWED for other in ALLOWED[room] - set(graph[room])
    )
    assert unused == []


def _docs_table() -> list[tuple[list[str], set[str]]]:
    """docs/architecture.md's table of rooms, top down: each row's rooms and the rooms its last
    column names (in backticks, outside parentheses, which only explain)."""
    rows = []
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 3:
            continue
        rooms = [
            "runtime" if name == "__init__.py" else name.removesuffix(".py").removesuffix("/")
            for name in re.findall(r"`([^`]+)`", cells[0])
        ]
        rows.append((rooms, set(re.findall(r"`([^`]+)`", re.sub(r"\([^()]*\)", "", cells[2])))))
    return rows


def test_the_docs_table_lists_every_room_once_allowing_what_this_table_allows() -> None:
    rows = _docs_table()
    listed = [room for rooms, _ in rows for room in rooms]
    assert sorted(listed) == sorted(ALLOWED.keys() | ANYTHING)
    told = {room: allowed for rooms, allowed in rows for room in rooms if room in ALLOWED}
    assert {room: sorted(told[room]) for room in ALLOWED} == {
        room: sorted(allowed) for room, allowed in ALLOWED.items()
    }


def test_each_room_imports_only_rooms_listed_below_it_in_the_docs() -> None:
    place = {room: row for row, (rooms, _) in enumerate(_docs_table()) for room in rooms}
    graph = _room_imports()
    upward = sorted(
        why for room, imported in graph.items() for other, why in imported.items()
        if place.get(other, -1) <= place.get(room, -1)
    )  # fmt: skip
    assert upward == []


def test_the_rooms_import_one_another_without_a_cycle() -> None:
    # The allow-lists alone let a cycle through: each step of one can be allowed.
    graph = _room_imports()
    told = _told(find_cycles(graph), graph)
    assert not told, "\n".join(told)


def test_the_table_of_allowed_imports_has_no_cycle() -> None:
    cycles = find_cycles(ALLOWED)
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_a_cycle_planted_among_the_rooms_is_found_and_named() -> None:
    graph = _room_imports()
    graph["errors"] = {**graph["errors"], "services": "runtime.errors imports runtime.services"}
    cycles = find_cycles(graph)
    assert len(cycles) == 1 and {"errors", "services"} <= set(cycles[0])
    assert cycles[0][0] == cycles[0][-1]
    assert "  runtime.errors imports runtime.services" in _told(cycles, graph)
    two = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c", "e"}, "e": set()}
    assert find_cycles(two) == [["a", "b", "a"], ["c", "d", "c"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


# Builtin exceptions by name, for telling an exception class from its bases in the source.
_BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def _base_name(base: ast.expr) -> str:
    return base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")


def _exception_classes() -> dict[str, set[str]]:
    """Module -> the exception classes it defines at module level: a class whose base is a
    builtin exception, one of runtime's own, or a library's ``...Error`` / ``...Exception``."""
    classes = {
        module: [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)]
        for module, path in MODULES.items()
    }
    known = set(_BUILTIN_EXCEPTIONS)
    found: dict[str, set[str]] = {}
    grew = True
    while grew:  # a subclass may come before its base, in another module
        grew = False
        for module, defined in classes.items():
            for node in defined:
                bases = {_base_name(b) for b in node.bases}
                if node.name not in found.get(module, set()) and any(
                    b in known or b.endswith(("Error", "Exception")) for b in bases
                ):
                    found.setdefault(module, set()).add(node.name)
                    known.add(node.name)
                    grew = True
    return found


def test_every_public_exception_class_is_defined_in_errors() -> None:
    # A private one (a leading underscore) is one module's own control flow, raised and caught
    # there and never seen outside it: it may stay beside the code that uses it.
    outside = sorted(
        f"{module}.{name}"
        for module, names in _exception_classes().items()
        if module != "runtime.errors"
        for name in names
        if not name.startswith("_")
    )
    assert outside == [], "\n".join(outside)


def test_the_exception_finder_sees_the_errors_module() -> None:
    found = _exception_classes()["runtime.errors"]
    assert {"MlfnError", "BadRequest", "ModelNotInStore", "HostError", "NoSparkType"} <= found
