"""``mlfn init``, ``pack`` and ``publish`` through the command line, in process."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from runtime.cli import main
from runtime.deploy import bytecode, example_model
from runtime.deploy.check import check


@pytest.fixture
def app(tmp_path: Path) -> Path:
    wheel = tmp_path / "mlfn-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")  # what check looks at: the file exists and is published
    done = CliRunner().invoke(main, ["init", str(tmp_path / "app"), "--wheel", str(wheel)])
    assert done.exit_code == 0, done.output
    return tmp_path / "app"


def test_init_writes_an_app_that_passes_check(app: Path) -> None:
    for name in (
        "host.json",
        "function_app.py",
        "requirements.txt",
        "local.settings.json",
        ".funcignore",
        ".gitignore",
        "README.md",
        "functions/example/endpoint.py",
        "wheels/mlfn-0.1.0-py3-none-any.whl",
    ):
        assert (app / name).is_file(), name
    assert "./wheels/mlfn-0.1.0-py3-none-any.whl" in (app / "requirements.txt").read_text()
    report = check(app, env={})
    assert report.ok, [str(f) for f in report.findings]
    assert {"example_predict", "example_queue", "health_live"} <= set(report.functions)


def test_init_without_a_wheel_says_mlfn_is_not_on_pypi_and_check_agrees(tmp_path: Path) -> None:
    # From a checkout (an editable install) there is no wheel to copy.
    done = CliRunner().invoke(main, ["init", str(tmp_path / "app")])
    assert done.exit_code == 0, done.output
    assert "mlfn is not on PyPI" in done.stderr
    report = check(tmp_path / "app", env={})
    assert [f.where for f in report.findings] == ["requirements.txt"]
    assert "mlfn is not on PyPI" in report.findings[0].message


def test_init_refuses_a_folder_that_already_has_an_app(app: Path) -> None:
    before = (app / "host.json").read_text()
    done = CliRunner().invoke(main, ["init", str(app)])
    assert done.exit_code == 1
    assert "already has host.json" in done.output and "not overwriting" in done.output
    assert (app / "host.json").read_text() == before


def test_the_example_model_is_valid_onnx_and_computes_what_it_says() -> None:
    data = example_model.build()
    assert data == example_model.build()  # the same bytes on every run
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    rows = [[1.0, 2.0, 3.0, 4.0], [-1.5, 0.0, 2.5, 10.0]]
    (y,) = ort.InferenceSession(data).run(None, {"x": np.array(rows, dtype=np.float32)})
    np.testing.assert_allclose(y.ravel(), example_model.expected(rows), rtol=1e-6)


def test_pack_writes_exactly_the_files_publish_would_upload(app: Path) -> None:
    listed = CliRunner().invoke(main, ["check", str(app), "--list-files"])
    done = CliRunner().invoke(main, ["pack", str(app)])
    assert done.exit_code == 0, done.output
    with zipfile.ZipFile(app / "build" / "package.zip") as z:
        names = z.namelist()
        assert z.read("host.json") == (app / "host.json").read_bytes()
    files = listed.stdout.split()
    # Those, then each Python file's bytecode (tests/deploy/test_bytecode.py).
    compiled = [bytecode.cache_name(f) for f in files if f.endswith(".py")]
    assert names == files + compiled and compiled
    assert "local.settings.json" not in names and "models/example.onnx" in names
    again = CliRunner().invoke(main, ["pack", str(app)])  # the zip itself is not packed
    assert again.exit_code == 0
    with zipfile.ZipFile(app / "build" / "package.zip") as z:
        assert z.namelist() == names


def test_publish_checks_first_and_says_how_to_get_core_tools(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no `func` here, whatever this machine has
    dry = CliRunner().invoke(main, ["publish", "myapp", "--dry-run", "--directory", str(app)])
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.strip() == "func azure functionapp publish myapp --python"
    real = CliRunner().invoke(main, ["publish", "myapp", "--directory", str(app)])
    assert real.exit_code == 1
    assert "Core Tools" in real.stderr and "func azure functionapp publish myapp" in real.stdout

    (app / "requirements.txt").unlink()
    broken = CliRunner().invoke(main, ["publish", "myapp", "--dry-run", "--directory", str(app)])
    assert broken.exit_code == 1
    assert "requirements.txt: is missing" in broken.stdout
    assert "func azure" not in broken.stdout


def test_new_outside_an_app_folder_says_so_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(example_model.build())
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["new", "linear", "--model", str(model)])
    assert done.exit_code == 1
    assert "has no function_app.py" in done.output and "mlfn init" in done.output
    assert not (tmp_path / "functions").exists()


def test_new_with_a_model_outside_the_app_says_it_will_not_be_published(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = app.parent / "model.onnx"
    model.write_bytes(example_model.build())
    monkeypatch.chdir(app)
    done = CliRunner().invoke(main, ["new", "linear", "--model", "../model.onnx"])
    assert done.exit_code == 0, done.output
    assert "outside the app folder, so a publish will not carry it" in done.output
    report = check(app, env={})
    assert any("not in the published package" in str(f) for f in report.findings)


def test_init_refuses_to_overwrite_a_model_or_a_wheel_already_there(tmp_path: Path) -> None:
    wheel = tmp_path / "mlfn-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    for existing in ("models/example.onnx", "wheels/mlfn-0.1.0-py3-none-any.whl"):
        target = tmp_path / existing.replace("/", "_")
        (target / existing).parent.mkdir(parents=True)
        (target / existing).write_bytes(b"mine")
        done = CliRunner().invoke(main, ["init", str(target), "--wheel", str(wheel)])
        assert done.exit_code == 1 and "not overwriting" in done.output, done.output
        assert (target / existing).read_bytes() == b"mine"
        assert not (target / "host.json").exists()  # refused before writing anything


def _add_data(app: Path) -> None:
    """A 2 MiB CSV of rows and a NumPy array: data by mlfn check's rule."""
    row = "5.1,3.5,1.4,0.2\n"
    (app / "data.csv").write_text(row * ((2 << 20) // len(row) + 1))
    np.save(app / "train.npy", np.zeros((4, 4), dtype=np.float32))


def test_pack_names_the_data_files_it_packs_with_the_funcignore_lines(
    app: Path, isolated_imports: None
) -> None:
    _add_data(app)
    done = CliRunner().invoke(main, ["pack", str(app)])
    assert done.exit_code == 0, done.output
    with zipfile.ZipFile(app / "build" / "package.zip") as z:
        assert {"data.csv", "train.npy"} <= set(z.namelist())  # packed, as asked
    notes = done.stderr.splitlines()
    assert len(notes) == 1, done.stderr
    assert notes[0].startswith("note: packed data mlfn check fails on: "), done.stderr
    assert "data.csv (CSV rows, 2.0 MiB)" in notes[0] and "train.npy (a NumPy array" in notes[0]
    assert "add `data.csv` and `train.npy` to .funcignore" in notes[0], done.stderr
    assert not check(app, env={}).ok  # and check fails on them, as the note says
    shown = " ".join(CliRunner().invoke(main, ["pack", "--help"]).output.split())
    assert "Data files (mlfn check's rule" in shown and "pack exits 0 all the same" in shown


def test_pack_does_not_call_an_endpoints_model_data(app: Path, isolated_imports: None) -> None:
    # Over 10 MiB, a file no endpoint names is data; the example's model is named by its endpoint.
    model = app / "models" / "example.onnx"
    model.write_bytes(model.read_bytes() + b"\0" * (11 << 20))
    (app / "big.bin").write_bytes(b"\0" * (11 << 20))
    done = CliRunner().invoke(main, ["pack", str(app)])
    assert done.exit_code == 0, done.output
    assert "big.bin (a large file" in done.stderr and "models" not in done.stderr, done.stderr


def test_list_files_lists_what_pack_takes_and_names_the_secrets_publish_would_upload(
    app: Path, isolated_imports: None
) -> None:
    # A .funcignore that lets .env through, as Core Tools would upload it.
    ignore = app / ".funcignore"
    kept = [line for line in ignore.read_text().splitlines() if not line.startswith(".env")]
    ignore.write_text("\n".join(kept) + "\n")
    (app / ".env").write_text("KEY=secret\n")
    assert any(f.where == ".env" for f in check(app, env={}).findings)
    listed = CliRunner().invoke(main, ["check", str(app), "--list-files"])
    assert listed.exit_code == 0, listed.output
    assert ".env" not in listed.stdout.split()
    said = listed.stderr.splitlines()
    assert said[0].endswith(f" files mlfn pack takes, {_size(app, listed.stdout):,} bytes")
    assert said[1].startswith("note: not listed, as they look like secrets: .env ("), said
    assert "func azure functionapp publish would upload them: add `.env`" in said[1], said
    shown = " ".join(CliRunner().invoke(main, ["check", "--help"]).output.split())
    assert "Print the files mlfn pack takes" in shown


def _size(app: Path, listing: str) -> int:
    return sum((app / name).stat().st_size for name in listing.split())
