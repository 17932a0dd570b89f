"""``mlfn batch`` as a user types it: against a real local host and Azurite, what it says and
how it exits when rows fail, and how its ``--wait`` is read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from azure.storage.blob import ContainerClient
from click.testing import CliRunner

from runtime.cli import main
from runtime.cli.batch_files import batch
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, Mlfn, make_app, mlfn_in, wait_for
from tests.test_batch_e2e import _endpoint, _host
from tests.test_cli import UNREACHABLE

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def prefix() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


@pytest.fixture
def host(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, prefix: str
) -> Iterator[LocalHost]:
    host = _host(tmp_path, azurite, models_in_blob, prefix).start()
    # The host makes the batch container when its blob trigger starts, just after HTTP.
    inbox = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-in")
    wait_for(inbox.exists, 30, f"container {prefix}-in")
    yield host
    host.stop()


@pytest.fixture
def mlfn(host: LocalHost, monkeypatch: pytest.MonkeyPatch, isolated_imports: None) -> Mlfn:
    """``mlfn ARGS`` typed in the host's app folder, with its settings, run in this process."""
    return mlfn_in(host.app_dir, host.env, monkeypatch)


def _rows(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _all_bad(folder: Path, fmt: str) -> Path:
    """A file of five rows that all fail: three one way, two another."""
    wide = {f: "wide" for f in FLOWER}  # not numbers
    negative = {f: -1.0 for f in FLOWER}  # out of range
    if fmt == "jsonl":
        return _rows(folder / "bad.jsonl", [wide, "{not json", wide, "{not json", wide])
    if fmt == "csv":
        path = folder / "bad.csv"
        lines = [",".join(FLOWER), *[",".join(map(str, r.values())) for r in (wide,) * 3]]
        path.write_text("\n".join([*lines, "-1,-1,-1,-1", "-1,-1,-1,-1"]) + "\n")
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = {**FLOWER, "petal_width": None}
    path = folder / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([missing, negative, missing, negative, missing]), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_row_failing_exits_3_and_names_the_commonest_errors(
    mlfn: Mlfn, tmp_path: Path, fmt: str
) -> None:
    source = _all_bad(tmp_path, fmt)
    done = mlfn("batch", "flowers", str(source), "--wait", "120")
    assert done.exit_code == 3, (done.output, done.exc_info)
    assert "5 rows, 5 errors" in done.stdout
    assert f"waiting for the app to score {source.name}" in done.stderr
    counted = [line.strip() for line in done.stderr.splitlines() if line.startswith("  ")]
    assert len(counted) == 2, done.stderr
    assert counted[0].startswith("3 rows: invalid row: "), done.stderr
    assert counted[1].startswith("2 rows: "), done.stderr
    assert f"every row of {source.name} failed" in done.stderr


def test_one_failed_row_is_said_in_the_singular_and_fails_only_when_asked(
    mlfn: Mlfn, tmp_path: Path
) -> None:
    source = _rows(tmp_path / "some.jsonl", [FLOWER, "{not json", FLOWER])
    done = mlfn("batch", "flowers", str(source), "--wait", "120")
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert "3 rows, 1 error," in done.stdout
    assert "the row that failed carries" in done.stderr and "1 row: " in done.stderr
    strict = mlfn("batch", "flowers", str(source), "--wait", "120", "--fail-on-errors")
    assert strict.exit_code == 3, (strict.output, strict.exc_info)
    assert "1 row of some.jsonl failed" in strict.stderr


def test_a_gzip_file_is_uploaded_as_what_it_holds_and_inflated_as_it_is_read(
    mlfn: Mlfn, tmp_path: Path
) -> None:
    # rows.csv.gz was refused by its extension, though the host reads a blob stored with
    # Content-Encoding: gzip.
    import gzip

    text = ",".join(FLOWER) + "\n" + (",".join(map(str, FLOWER.values())) + "\n") * 3
    source = tmp_path / "rows.csv.gz"
    source.write_bytes(gzip.compress(text.encode()))
    done = mlfn("batch", "flowers", str(source), "--wait", "120")
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert "3 rows, 0 errors" in done.stdout, done.stdout
    assert "-in/rows.csv (ETag" in done.stdout  # stored as what it holds
    written = (tmp_path / "rows.flowers.results.csv").read_text().splitlines()
    assert written[0].startswith("row,") and len(written) == 4
    parquet = tmp_path / "rows.parquet.gz"
    parquet.write_bytes(gzip.compress(b"PAR1"))
    refused = mlfn("batch", "flowers", str(parquet), "--wait", "0")
    assert refused.exit_code == 2 and "read by seeking" in refused.output


@pytest.mark.parametrize(
    ("args", "wait_s"),
    [
        (["FILE", "--wait"], 600.0),
        (["--wait", "5", "FILE"], 5.0),
        (["--wait", "FILE"], 600.0),
        (["FILE", "--wait=7"], 7.0),
        (["FILE"], 600.0),
    ],
)
def test_wait_takes_the_number_after_it_and_leaves_a_file_a_file(
    tmp_path: Path, args: list[str], wait_s: float
) -> None:
    source = _rows(tmp_path / "rows.jsonl", [FLOWER])
    argv = ["flowers", *(str(source) if a == "FILE" else a for a in args)]
    ctx = batch.make_context("batch", argv)
    assert ctx.params["file"] == source and ctx.params["wait_s"] == wait_s


def test_wait_is_documented_with_the_exit_codes() -> None:
    shown = CliRunner().invoke(main, ["batch", "--help"]).output
    assert "--wait alone" in shown and "--fail-on-errors" in shown
    assert "3  rows failed" in shown


def test_an_out_file_that_cannot_be_written_is_refused_before_the_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> None:
    app = make_app(tmp_path / "app", {"flowers": _endpoint("unwritten")})
    source = _rows(tmp_path / "rows.jsonl", [FLOWER])
    monkeypatch.chdir(app)
    # Nothing listens here: a refusal after the upload would say storage cannot be reached.
    monkeypatch.setenv("AzureWebJobsStorage", UNREACHABLE)
    monkeypatch.setenv("MLFN_STORE_RETRIES", "0")
    blocked = tmp_path / "no-such-folder" / "out.jsonl"
    done = CliRunner().invoke(main, ["batch", "flowers", str(source), "--out", str(blocked)])
    assert done.exit_code == 1, (done.output, done.exc_info)
    assert done.stderr == f"Error: {blocked}: folder {blocked.parent} does not exist\n"


def test_a_usage_error_exits_2() -> None:
    done = CliRunner().invoke(main, ["batch", "flowers", "/nonexistent/rows.jsonl"])
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit)
    with pytest.raises(click.UsageError):
        batch.make_context("batch", ["flowers"])


@pytest.mark.parametrize(
    "args",
    [
        ["FILE", "--wait", "-5"],
        ["FILE", "--wait", "nan"],
        ["FILE", "--wait", "inf"],
        ["FILE", "--wait", "abc"],
        ["--wait", "abc", "FILE"],
        ["FILE", "--wait=abc"],
        ["FILE", "--wait="],
    ],
)
def test_wait_must_be_a_finite_number_of_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    source = _rows(tmp_path / "rows.jsonl", [FLOWER])
    # No app here: a value that got past the option would fail reading the app, with exit 1.
    monkeypatch.chdir(tmp_path)
    argv = ["batch", "flowers", *(str(source) if a == "FILE" else a for a in args)]
    done = CliRunner().invoke(main, argv)
    assert done.exit_code == 2, (done.output, done.exc_info)
    said = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(said) == 1 and "'--wait'" in said[0] and "seconds" in said[0], done.stderr


def test_mlfn_batch_outside_the_app_s_folder_says_where_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _rows(tmp_path / "rows.jsonl", [FLOWER])
    monkeypatch.chdir(tmp_path)  # a data folder, not the app's
    done = CliRunner().invoke(main, ["batch", "flowers", str(source)])
    assert done.exit_code == 1, (done.output, done.exc_info)
    assert done.stderr == (
        f"Error: no function_app.py in {tmp_path}: run mlfn in the app's folder (where "
        "function_app.py and local.settings.json are)\n"
    )
