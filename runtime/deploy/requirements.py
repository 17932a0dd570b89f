"""Does ``requirements.txt`` name every distribution the published app imports?

The app's own modules are read for ``import`` statements; each third-party module is mapped to
the distribution that provides it here (``importlib.metadata``). An app that imports ``runtime``
needs ``mlfn``, or, when it carries the ``runtime/`` folder itself, mlfn's own run-time
dependencies.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# mlfn's dependencies that only the CLI and the local host import; never needed on Azure.
TOOLING = frozenset({"uvicorn", "click", "pathspec", "packaging", "pyyaml"})
# Never in requirements.txt: it conflicts with the worker the platform provides.
FORBIDDEN = {"azure-functions-worker": "it conflicts with the worker the platform provides"}
# The local runtime/ package's modules that a deployed app never imports (tests/test_imports.py).
LOCAL_ONLY = ("runtime/host/", "runtime/deploy/", "runtime/cli/", "runtime/scaffold/")


@dataclass
class Requirements:
    """What a requirements.txt names: canonical distribution -> its line (with the extras it
    asks for), the options that tell pip where else to look, and lines pip could not read."""

    named: dict[str, str] = field(default_factory=dict)
    extras: dict[str, set[str]] = field(default_factory=dict)
    index_options: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def read(requirements_txt: Path, _seen: frozenset[Path] = frozenset()) -> Requirements:
    """Parse ``requirements_txt`` as pip does where it matters here: continuation lines (the
    ``\\`` before ``--hash``), ``-r`` includes, per-line options, wheel files."""
    found = Requirements()
    for line in _logical_lines(_text(requirements_txt)):
        if line.startswith(("-r ", "--requirement ", "-r", "--requirement=")):
            target = re.sub(r"^(-r|--requirement)[ =]?", "", line).strip()
            include = (requirements_txt.parent / target).resolve()
            if include.is_file() and include not in _seen:
                inner = read(include, _seen | {requirements_txt.resolve()})
                found.named.update(inner.named)
                found.extras.update(inner.extras)
                found.index_options += inner.index_options
            continue
        if line.startswith(("--index-url", "-i ", "--extra-index-url", "--find-links", "-f ")):
            found.index_options.append(line)
            continue
        if line.startswith("-"):
            continue  # -e, -c, --pre, ...
        requirement = line.split(" --", 1)[0].split(";", 1)[0].strip()  # per-line options
        name, extras = _name(requirement)
        if name:
            found.named[canonicalize_name(name)] = line
            found.extras[canonicalize_name(name)] = extras
        else:
            found.unreadable.append(line)
    return found


def _text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # PowerShell's `>` writes UTF-16
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            yield line
    if pending.strip():
        yield pending.strip()


def _name(line: str) -> tuple[str | None, set[str]]:
    wheel = re.fullmatch(r"(.*\.whl)(\[[^\]]*\])?", line)
    if wheel:
        extras = {e.strip() for e in (wheel.group(2) or "[]")[1:-1].split(",") if e.strip()}
        return Path(wheel.group(1)).name.split("-", 1)[0], extras
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return None, set()
    return requirement.name, set(requirement.extras)


def with_dependencies(names: Mapping[str, set[str]]) -> set[str]:
    """``names`` (distribution -> extras asked for) and everything they depend on, as installed
    here (a module of a dependency is installed by pip along with the distribution that needs
    it); an extra's own dependencies count where the extra is asked for."""
    seen: set[str] = set()
    todo = [(canonicalize_name(n), set(e)) for n, e in names.items()]
    while todo:
        name, extras = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            wanted = marker is None or any(
                marker.evaluate({"extra": extra}) for extra in extras | {""}
            )
            if wanted:
                todo.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return seen


def installed(module: str) -> bool:
    """Whether some distribution installed here provides ``module``."""
    return module.split(".")[0] in _providers()


def mlfn_run_time() -> list[str]:
    """mlfn's own dependencies a deployed app needs (no extras, no local tooling)."""
    needed: list[str] = []
    for text in metadata.requires("mlfn") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        if canonicalize_name(requirement.name) not in TOOLING:
            needed.append(canonicalize_name(requirement.name))
    return needed


def imported_modules(root: Path, files: Iterable[str], keep: Iterable[str] = ()) -> dict[str, str]:
    """Dotted module name -> the first file importing it, for absolute imports of modules
    that are neither the standard library's nor the app's own (except those in ``keep``)."""
    local = {p.stem if p.suffix == ".py" else p.name for p in root.iterdir()} - set(keep)
    found: dict[str, str] = {}
    for relative in files:
        if not relative.endswith(".py") or relative.startswith(LOCAL_ONLY):
            continue
        if "site-packages/" in relative or _in_virtualenv(root, relative):
            continue  # a published venv is its own finding; its imports are not the app's
        try:
            tree = ast.parse((root / relative).read_bytes())
        except SyntaxError:
            continue  # the probe reports a file that cannot be imported
        for name in _required_imports(tree):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or top in local:
                continue
            found.setdefault(name, relative)
    return found


def _required_imports(node: ast.AST) -> Iterator[str]:
    """Absolute imports the code needs: not those under ``if TYPE_CHECKING:`` (never run) nor
    in a ``try`` whose handler catches ImportError (optional by the code's own design)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if isinstance(node, ast.ImportFrom):
        if not node.level and node.module:
            yield node.module
        return
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        for statement in node.orelse:
            yield from _required_imports(statement)
        return
    if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
        optional: list[ast.AST] = [*node.handlers, *node.orelse, *node.finalbody]
        for part in optional:
            yield from _required_imports(part)
        return
    for child in ast.iter_child_nodes(node):
        yield from _required_imports(child)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = ast.unparse(handler.type) if handler.type is not None else "BaseException"
    return any(name in caught for name in ("ImportError", "ModuleNotFoundError", "Exception"))


def _in_virtualenv(root: Path, relative: str) -> bool:
    parts = Path(relative).parts[:-1]
    return any((root.joinpath(*parts[: i + 1]) / "pyvenv.cfg").is_file() for i in range(len(parts)))


@cache
def _providers() -> dict[str, list[str]]:
    return {k: list(v) for k, v in metadata.packages_distributions().items()}


def distribution_of(module: str) -> str:
    """The distribution installed here that provides ``module`` (canonical name); a module
    installed by none is assumed to come from the distribution of the same name."""
    top = module.split(".")[0]
    candidates = sorted(set(_providers().get(top, [])))
    if len(candidates) > 1:  # a namespace package such as azure.*: find the one with the files
        path = module.replace(".", "/")
        for dist in candidates:
            files = metadata.files(dist) or []
            if any(str(f).startswith(path + "/") or str(f) == path + ".py" for f in files):
                return canonicalize_name(dist)
    return canonicalize_name(candidates[0] if candidates else top)
