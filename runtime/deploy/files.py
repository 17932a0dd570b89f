"""What ``func azure functionapp publish`` would upload: every file under the app root except
``.git`` and ``.vscode`` folders, the files Core Tools never sends, and what ``.funcignore``
leaves out. ``mlfn check --list-files``, ``mlfn check``, ``mlfn pack`` and ``spark-score
--ship-app`` all read this list, less what mlfn never packs: files that look like secrets
(runtime/deploy/secret_files.py) and links that lead out of the app folder (refused).

``.funcignore`` looks like a .gitignore, but Core Tools does not read it as git does
(src/Cli/func/Common/GitIgnoreParser.cs, a port of codemix/gitignore-parser): each pattern is
matched from the start of the path relative to the app root, up to a word boundary, and not to
its end. So ``dist`` leaves out ``dist/app.whl`` and ``dist.txt`` but not ``distance.py``,
``__azurite_db_`` leaves out nothing of ``__azurite_db_blob__.json`` (``_`` and ``b`` are both
word characters: write ``__azurite_db_*``), ``__pycache__`` only the one at the root (write
``**/__pycache__`` for the others), and ``!`` patterns win over the rest whatever their order.
``*`` is one or more characters other than ``/``, ``**`` one or more of any. This module
follows Core Tools, since its reading is the one that decides what reaches Azure.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.deploy.secret_files import secret
from runtime.errors import DeployError

FUNCIGNORE = ".funcignore"
NEVER_DIRS = frozenset({".git", ".vscode"})  # at any depth
NEVER_FILES = frozenset({".funcignore", ".gitignore", "local.settings.json", "project.lock.json"})
# Core Tools deletes a local .python_packages/ before zipping for a remote build.
REMOTE_BUILD_DROPS = ".python_packages"
_SPECIAL = re.compile(r"[-\[\]/{}()+?.\\^$|]")


@dataclass(frozen=True)
class Package:
    """The files mlfn packs, as paths relative to the app root (sorted, POSIX), and what it
    leaves out that Core Tools would not: each pair is (path, what it is or where it leads)."""

    root: Path
    files: tuple[str, ...]
    broken_links: tuple[str, ...] = ()
    # Secret-looking files or folders .funcignore lets through: publish would upload them.
    secrets: tuple[tuple[str, str], ...] = ()
    # Links to a file or folder outside the app: packing refuses them.
    escapes: tuple[tuple[str, str], ...] = ()
    # Links to a folder inside the app: not followed (its files are packed where they are).
    linked_folders: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> int:
        return sum((self.root / f).stat().st_size for f in self.files)

    def includes(self, relative: str) -> bool:
        prefix = relative.rstrip("/") + "/"
        return any(f == relative or f.startswith(prefix) for f in self.files)

    def refuse_escapes(self) -> None:
        """Raise DeployError naming the first link that leads out of the app folder."""
        for link, target in self.escapes:
            raise DeployError(escape_message(link, target))


def escape_message(link: str, target: str) -> str:
    return (
        f"{link} is a link to {target}, outside the app folder: mlfn packs nothing from "
        f"outside it; copy what the app needs into the folder, or add {link} to .funcignore"
    )


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
    # Core Tools' regex ends in \b (ECMAScript's, so ASCII word characters): a pattern is a
    # prefix of the path that stops where a word does.
    return re.compile("((" + ")|(".join(patterns) + "))\\b", re.ASCII)


def is_virtualenv(folder: Path) -> bool:
    """A virtual environment, whatever its name (venv and virtualenv both write this file)."""
    return (folder / "pyvenv.cfg").is_file()


def funcignore(root: Path) -> FuncIgnore | None:
    path = root / FUNCIGNORE
    if not path.is_file():
        return None
    return FuncIgnore(path.read_text(encoding="utf-8", errors="replace"))


def package(root: Path) -> Package:
    """What mlfn packs from the app at ``root``: what a publish uploads, less secrets and links
    that cannot be followed (each said in the Package)."""
    root = root.resolve()
    ignore = funcignore(root)

    def ignored(relative: str) -> bool:
        return ignore is not None and ignore.ignores(relative)

    found: list[str] = []
    broken: list[str] = []
    secrets: dict[str, str] = {}
    escapes: list[tuple[str, str]] = []
    linked: list[tuple[str, str]] = []
    for relative, is_link_to_folder in _walk(root):
        path = root / relative
        if is_link_to_folder:
            # Core Tools matches file paths only: the folder's fate is its files'.
            if ignored(relative) or ignored(f"{relative}/x"):
                continue
            target = path.resolve()
            if not target.is_relative_to(root):
                escapes.append((relative, str(target)))
            else:
                linked.append((relative, target.relative_to(root).as_posix()))
            continue
        if ignored(relative):
            continue
        if not path.exists():
            broken.append(relative)  # a link to nothing: Core Tools would fail reading it
            continue
        looks_secret = secret(relative)
        if looks_secret is not None:
            secrets.setdefault(*looks_secret)
            continue
        target = path.resolve()
        if not target.is_relative_to(root):
            escapes.append((relative, str(target)))
            continue
        found.append(relative)
    return Package(
        root,
        tuple(sorted(found)),
        tuple(sorted(broken)),
        tuple(sorted(secrets.items())),
        tuple(sorted(escapes)),
        tuple(sorted(linked)),
    )


def _walk(root: Path) -> Iterator[tuple[str, bool]]:
    """Every file under ``root`` Core Tools would consider, and each link to a folder (True),
    which os.walk lists but does not enter."""
    never_files = {n.lower() for n in NEVER_FILES}
    for folder, dirs, names in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in NEVER_DIRS and not (here == Path(".") and d == REMOTE_BUILD_DROPS)
        )
        for d in dirs:
            if (Path(folder) / d).is_symlink():
                yield (here / d).as_posix(), True
        for name in sorted(names):
            if name.lower() not in never_files:
                yield (here / name).as_posix(), False


def write_zip(pkg: Package, out: Path, *, bytecode: bool = False) -> Path:
    """The package as a zip, streamed file by file (a model can be larger than memory), with
    fixed entry times so the same app gives the same bytes. It holds the app's files and no
    dependencies: a remote build installs requirements.txt. With ``bytecode``, each Python
    file's hash-checked bytecode for this interpreter rides beside it (runtime/deploy/
    bytecode.py), in place of any packed file of that name. Refuses (DeployError) a package
    with a link out of the app, also one made since the package was listed."""
    from runtime.deploy import bytecode as pyc

    pkg.refuse_escapes()
    out.parent.mkdir(parents=True, exist_ok=True)
    made = {pyc.cache_name(f) for f in pkg.files if f.endswith(".py")} if bytecode else set()
    compiled: list[tuple[zipfile.ZipInfo, bytes]] = []  # after the files, in their order
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for relative in pkg.files:
            if relative in made:
                continue  # a cache of the packer's own, written fresh below
            source = (pkg.root / relative).resolve()
            if not source.is_relative_to(pkg.root):
                raise DeployError(escape_message(relative, str(source)))
            mode = source.stat().st_mode
            entry = _entry(relative, mode)
            if bytecode and relative.endswith(".py"):  # read once: packed and compiled
                text = source.read_bytes()
                z.writestr(entry, text)
                code = pyc.compiled(relative, text)
                if code is not None:
                    compiled.append((_entry(pyc.cache_name(relative), mode), code))
                continue
            with source.open("rb") as src, z.open(entry, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        for entry, code in compiled:
            z.writestr(entry, code)
    return out


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (mode & 0o777) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def funcignore_line(relative: str, inside: Sequence[str] | None = None) -> str:
    """A .funcignore line that leaves out the file ``relative`` or, given the files ``inside``
    it, the folder, as Core Tools reads the file: its word-boundary rule fails ``folder/`` for a
    name such as ``.hidden`` and a plain path that ends in ``~`` or ``-``, so other forms are
    tried then."""
    bare = relative.strip("/")
    if inside is not None:
        candidates, samples = [f"{bare}/", f"{bare}/**"], list(inside) or [f"{bare}/x"]
    else:
        candidates, samples = [bare, re.sub(r"\W+$", "", bare, flags=re.ASCII)], [bare]
    for line in candidates:
        rules = FuncIgnore(line)
        if line and all(rules.ignores(s) for s in samples):
            return line
    return candidates[0]
