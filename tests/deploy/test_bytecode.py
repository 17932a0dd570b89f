"""``mlfn pack`` ships each Python file's bytecode: an app unpacked into a folder Python cannot
write to imports without compiling its own code, and a source changed since the pack is
compiled (the bytecode is checked against it), never run stale."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import main
from runtime.deploy import bytecode
from tests.deploy.test_commands import app  # noqa: F401  (fixture: an app from mlfn init)

# A fresh interpreter that imports the app as the Functions worker does and prints which of the
# app's files Python compiled from source (the loader reads valid bytecode without compiling).
CHILD = r"""
import importlib, importlib._bootstrap_external as external, json, sys
folder = sys.argv[1]
compiled = []
to_code = external.SourceLoader.source_to_code
def counted(self, data, path, **kwargs):
    if str(path).startswith(folder):
        compiled.append(str(path)[len(folder) + 1:])
    return to_code(self, data, path, **kwargs)
external.SourceLoader.source_to_code = counted
sys.path.insert(0, folder)
module = importlib.import_module("function_app")
loaded = sorted(m.__file__[len(folder) + 1:] for m in list(sys.modules.values())
                if (getattr(m, "__file__", None) or "").startswith(folder))
print(json.dumps({"compiled": compiled, "loaded": loaded,
                  "marked": getattr(module, "MARK", None)}))
"""


def _pack(app_dir: Path, *flags: str) -> zipfile.ZipFile:
    done = CliRunner().invoke(main, ["pack", str(app_dir), *flags])
    assert done.exit_code == 0, done.output
    return zipfile.ZipFile(app_dir / "build" / "package.zip")


def _unpacked(app_dir: Path, folder: Path, *flags: str) -> list[str]:
    """The names in the app's ``mlfn pack`` zip, unzipped into ``folder``."""
    with _pack(app_dir, *flags) as z:
        z.extractall(folder)
        return z.namelist()


def _import(folder: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # as from a read-only package
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_an_unpacked_app_imports_its_code_without_compiling_it(
    app: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    names = _unpacked(app, tmp_path / "site")
    sources = [n for n in names if n.endswith(".py")]
    assert [n for n in names if n.endswith(".pyc")] == [bytecode.cache_name(n) for n in sources]

    found = _import(tmp_path / "site")
    assert found["compiled"] == []
    assert "function_app.py" in found["loaded"] and len(found["loaded"]) == len(sources)

    # Without the bytecode (the same files, as Core Tools' publish sends them), each is compiled.
    assert not [
        n for n in _unpacked(app, tmp_path / "plain", "--no-bytecode") if n.endswith(".pyc")
    ]
    assert sorted(_import(tmp_path / "plain")["compiled"]) == sorted(found["loaded"])


def test_a_source_changed_after_the_pack_is_compiled_not_run_stale(
    app: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    _unpacked(app, tmp_path / "site")
    entry = tmp_path / "site" / "function_app.py"
    entry.write_text(entry.read_text() + "\nMARK = 'after the pack'\n")

    found = _import(tmp_path / "site")
    assert found["marked"] == "after the pack"
    assert found["compiled"] == ["function_app.py"]


def test_the_entries_are_hash_checked_for_this_python_and_replace_a_packed_cache(
    app: Path,  # noqa: F811
) -> None:
    # An app whose .funcignore lets caches through: its own (here a stale one) is not shipped
    # beside the fresh entry, and a file that does not compile ships as source only.
    ignore = app / ".funcignore"
    kept = [line for line in ignore.read_text().splitlines() if "pycache" not in line]
    ignore.write_text("\n".join(kept) + "\n")
    stale = app / bytecode.cache_name("function_app.py")
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"stale")
    (app / "functions" / "broken.py").write_text("def broken(:\n")

    with _pack(app) as z:
        names = z.namelist()
        shipped = z.read(bytecode.cache_name("function_app.py"))
    assert names.count(bytecode.cache_name("function_app.py")) == 1
    assert shipped[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(shipped[4:8], "little") == 0b11  # PEP 552: hash-based, checked
    source = (app / "function_app.py").read_bytes()
    assert shipped[8:16] == importlib.util.source_hash(source)
    assert "functions/broken.py" in names
    assert bytecode.cache_name("functions/broken.py") not in names
    assert bytecode.cache_name("function_app.py").endswith(f".{sys.implementation.cache_tag}.pyc")


def test_the_bytecode_keeps_its_asserts_when_mlfn_pack_runs_under_python_dash_o() -> None:
    # The worker runs without -O, and reads this bytecode by its name: its asserts must be in.
    script = (
        "import sys; from runtime.deploy import bytecode; "
        "sys.stdout.buffer.write(bytecode.compiled('m.py', b'assert False, 1' + bytes([10])))"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", script], capture_output=True, timeout=60, check=True
    )
    code = marshal.loads(done.stdout[16:])
    with pytest.raises(AssertionError):
        exec(code, {})
