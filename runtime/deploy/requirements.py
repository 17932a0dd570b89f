"""Does ``requirements.txt`` name every distribution the published app imports?

The app's own modules are read for ``import`` statements; each third-party module is mapped to
the distribution that provides it here (``importlib.metadata``). An app that imports ``runtime``
needs ``mlfn``, or, when it carries the ``runtime/`` folder itself, mlfn's own run-time
dependencies.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
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
LOCAL_ONLY = ("runtime/host/", "runtime/deploy/", "runtime/cli.py", "runtime/scaffold/")


def named(requirements_txt: Path) -> dict[str, str]:
    """Canonical distribution name -> the line that names it. Options, includes and editable
    lines are skipped; a wheel file or ``name @ url`` counts by its name."""
    found: dict[str, str] = {}
    for raw in requirements_txt.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        name = _name(line)
        if name:
            found[canonicalize_name(name)] = line
    return found


def _name(line: str) -> str | None:
    if line.endswith(".whl"):
        return Path(line).name.split("-", 1)[0]
    try:
        return Requirement(line).name
    except InvalidRequirement:
        return None


def with_dependencies(names: Iterable[str]) -> set[str]:
    """``names`` and everything they depend on, as installed here (a module of a dependency is
    installed by pip along with the distribution that needs it)."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or "extra" not in str(requirement.marker):
                todo.append(canonicalize_name(requirement.name))
    return seen


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
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__" or top in local:
                    continue
                found.setdefault(name, relative)
    return found


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
