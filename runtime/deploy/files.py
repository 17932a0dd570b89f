"""What ``func azure functionapp publish`` would upload: every file under the app root except
``.git`` and ``.vscode`` folders, the files Core Tools never sends, and what ``.funcignore``
leaves out. ``mlfn check --list-files``, ``mlfn check`` and ``mlfn pack`` all read this list.

``.funcignore`` looks like a .gitignore, but Core Tools does not read it as git does: each
pattern is matched from the start of the path relative to the app root, and not to its end. So
``dist`` also leaves out ``distance.py``, ``__pycache__`` only the one at the root (write
``**/__pycache__`` for the others), and ``!`` patterns win over the rest whatever their order.
``*`` is any run of characters other than ``/``, ``**`` any run at all. This module follows
Core Tools, since its reading is the one that decides what reaches Azure.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FUNCIGNORE = ".funcignore"
NEVER_DIRS = frozenset({".git", ".vscode"})  # at any depth
NEVER_FILES = frozenset({".funcignore", ".gitignore", "local.settings.json", "project.lock.json"})
# Core Tools deletes a local .python_packages/ before zipping for a remote build.
REMOTE_BUILD_DROPS = ".python_packages"
_SPECIAL = re.compile(r"[-\[\]/{}()+?.\\^$|]")


@dataclass(frozen=True)
class Package:
    """The files a publish uploads, as paths relative to the app root (sorted, POSIX), and the
    links it would not follow."""

    root: Path
    files: tuple[str, ...]
    broken_links: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum((self.root / f).stat().st_size for f in self.files)

    def includes(self, relative: str) -> bool:
        prefix = relative.rstrip("/") + "/"
        return any(f == relative or f.startswith(prefix) for f in self.files)


class FuncIgnore:
    """``.funcignore`` read the way Core Tools reads it (see the module's docstring)."""

    def __init__(self, text: str) -> None:
        drop: list[str] = []
        keep: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            line = line.removeprefix("!").removeprefix("/")
            (keep if negated else drop).append(_regex(line))
        self._drop = _either(drop)
        self._keep = _either(keep)

    def ignores(self, relative: str) -> bool:
        return bool(self._drop.match(relative)) and not self._keep.match(relative)


def _regex(pattern: str) -> str:
    escaped = _SPECIAL.sub(lambda m: "\\" + m.group(0), pattern)
    return escaped.replace("**", "(.+)").replace("*", "([^/]+)")


def _either(patterns: list[str]) -> re.Pattern[str]:
    if not patterns:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("(" + ")|(".join(patterns) + ")")


def is_virtualenv(folder: Path) -> bool:
    """A virtual environment, whatever its name (venv and virtualenv both write this file)."""
    return (folder / "pyvenv.cfg").is_file()


def funcignore(root: Path) -> FuncIgnore | None:
    path = root / FUNCIGNORE
    if not path.is_file():
        return None
    return FuncIgnore(path.read_text(encoding="utf-8", errors="replace"))


def package(root: Path) -> Package:
    root = root.resolve()
    ignore = funcignore(root)
    found: list[str] = []
    broken: list[str] = []
    for relative in _walk(root):
        if not (root / relative).exists():
            broken.append(relative)  # a link to nothing: Core Tools would fail reading it
        elif ignore is None or not ignore.ignores(relative):
            found.append(relative)
    return Package(root, tuple(sorted(found)), tuple(sorted(broken)))


def _walk(root: Path) -> Iterator[str]:
    never_files = {n.lower() for n in NEVER_FILES}
    for folder, dirs, names in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in NEVER_DIRS and not (here == Path(".") and d == REMOTE_BUILD_DROPS)
        )
        for name in sorted(names):
            if name.lower() not in never_files:
                yield (here / name).as_posix()


def write_zip(pkg: Package, out: Path) -> Path:
    """The zip that zip deploy (``--no-build``) would upload, streamed file by file (a model can
    be larger than memory), with fixed entry times so the same app gives the same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for relative in pkg.files:
            source = pkg.root / relative
            info = zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (source.stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with source.open("rb") as src, z.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return out
