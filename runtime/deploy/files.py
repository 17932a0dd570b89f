"""What ``func azure functionapp publish`` would upload: every file under the app root except
``.git`` and ``.vscode``, the files Core Tools never sends, and what ``.funcignore`` matches
(gitignore syntax). ``mlfn check --list-files`` and ``mlfn pack`` both read this list."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FUNCIGNORE = ".funcignore"
NEVER_DIRS = frozenset({".git", ".vscode"})
NEVER_FILES = frozenset({".funcignore", ".gitignore", "local.settings.json", "project.lock.json"})
# Core Tools deletes a local .python_packages/ before zipping for a remote build.
REMOTE_BUILD_DROPS = ".python_packages"


@dataclass(frozen=True)
class Package:
    """The files a publish uploads, as paths relative to the app root (sorted, POSIX)."""

    root: Path
    files: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum((self.root / f).stat().st_size for f in self.files)

    def includes(self, relative: str) -> bool:
        prefix = relative.rstrip("/") + "/"
        return any(f == relative or f.startswith(prefix) for f in self.files)


def is_virtualenv(folder: Path) -> bool:
    """A virtual environment, whatever its name (venv and virtualenv both write this file)."""
    return (folder / "pyvenv.cfg").is_file()


def ignore_spec(root: Path) -> object | None:
    """The app's ``.funcignore`` as a gitignore matcher (``pathspec``), or None without one."""
    path = root / FUNCIGNORE
    if not path.is_file():
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(path.read_text().splitlines())


def package(root: Path) -> Package:
    root = root.resolve()
    spec = ignore_spec(root)
    return Package(root, tuple(sorted(_walk(root, spec))))


def _walk(root: Path, spec: object | None) -> Iterator[str]:
    for folder, dirs, names in os.walk(root):
        here = Path(folder).relative_to(root)
        keep = []
        for d in sorted(dirs):
            relative = (here / d).as_posix()
            if here == Path(".") and (d in NEVER_DIRS or d == REMOTE_BUILD_DROPS):
                continue
            if not _ignored(spec, relative + "/"):
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            relative = (here / name).as_posix()
            if here == Path(".") and name in NEVER_FILES:
                continue
            if not _ignored(spec, relative):
                yield relative


def _ignored(spec: object | None, relative: str) -> bool:
    return spec is not None and bool(spec.match_file(relative))  # type: ignore[attr-defined]


def write_zip(pkg: Package, out: Path) -> Path:
    """The zip that zip deploy (``--no-build``) would upload, with stable entry times so the same
    app gives the same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for relative in pkg.files:
            info = zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = ((pkg.root / relative).stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, (pkg.root / relative).read_bytes())
    return out
