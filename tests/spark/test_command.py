"""``mlfn spark-score``: a file in, the scored file out, on a local Spark session."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.spark.spark_support import needs_spark
from tests.support import MLFN, copy_examples

pytestmark = [needs_spark, pytest.mark.timeout(300)]

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _mlfn(
    app: Path, models: Path, *args: str, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFN_", "AzureWebJobs"))}
    env.update(MLFN_MODEL_STORE=str(models), MLFN_CACHE_DIR=str(app / "cache"), **env_extra)
    return subprocess.run(
        [str(MLFN), *args], cwd=app, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's app, once for the tests that each write files of their own names."""
    return copy_examples(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def models(example_models: dict[str, Path]) -> Path:
    return example_models["iris"].parent


def _part_lines(output: Path, suffix: str) -> Iterator[str]:
    """OUTPUT is a folder of part files, as Spark writes it: their lines, in part order."""
    for part in sorted(output.glob(f"part-*{suffix}")):
        yield from part.read_text().splitlines()


def test_a_json_lines_file_is_scored_into_parquet_with_an_error_per_bad_row(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    import pyarrow.parquet as pq

    app = copy_examples(tmp_path / "app")
    rows = [{"id": i, **FLOWER} for i in range(20)]
    rows[3]["petal_width"] = -1
    rows[11]["sepal_length"] = "long"
    (app / "flowers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    done = _mlfn(
        app, example_models["iris"].parent,
        "spark-score", "iris", "flowers.jsonl", "scored.parquet", "--master", "local[1]",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("scored 20 rows (2 errors) into scored.parquet in ")

    table = pq.read_table(app / "scored.parquet")
    assert table.column_names[-3:] == ["label", "probabilities", "error"]
    out = {r["id"]: r for r in table.to_pylist()}
    assert sorted(out) == list(range(20))
    assert '"field":"petal_width"' in out[3]["error"] and out[3]["label"] is None
    assert '"field":"sepal_length"' in out[11]["error"]
    assert {out[i]["label"] for i in out if i not in (3, 11)} == {"setosa"}


def test_the_app_is_shipped_to_the_executors_as_a_zip(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    # What a cluster's executors get (a non-local master ships it by default): the app zipped,
    # shipped with the job and taken from Spark's files, unpacked under their temporary folder.
    app = copy_examples(tmp_path / "app")
    (app / "flowers.jsonl").write_text(json.dumps({"id": 1, **FLOWER}) + "\n")
    (app / ".funcignore").write_text("notes/\n")
    (app / "notes").mkdir()
    (app / "notes" / "todo.txt").write_text("not for the executors")
    (app / "train.npy").write_bytes(b"\x93NUMPY" + bytes(100))  # data: mlfn check's rule
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = _mlfn(
        app, example_models["iris"].parent,
        "spark-score", "iris", "flowers.jsonl", "scored.jsonl", "--master", "local[1]",
        "--ship-app", TMPDIR=str(tmp),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.match(r"scored 1 rows? \(0 errors\) into scored.jsonl", done.stdout), done.stdout
    unpacked = [p.parent.parent.parent for p in tmp.glob("mlfn-app-*/functions/iris/endpoint.py")]
    assert len(unpacked) == 1, sorted(p.name for p in tmp.iterdir())
    assert not (unpacked[0] / "notes").exists()  # what publish leaves out, the zip does too
    assert not (unpacked[0] / "flowers.jsonl").exists()  # the job's own input: not shipped
    assert not (unpacked[0] / "train.npy").exists()
    assert "left out of the app zip as data (mlfn check's rule): train.npy" in done.stderr
    assert not list(tmp.glob("mlfn-spark-*"))  # the zip, once the job is over
    assert json.loads(next(_part_lines(app / "scored.jsonl", ".json")))["label"] == "setosa"


def test_the_shipped_zip_leaves_out_the_job_s_files_and_data_in_one_pass(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    isolated_imports: None,
) -> None:
    import tempfile
    import zipfile

    from runtime.cli.spark_score import app_zip

    app = copy_examples(tmp_path / "app")
    (app / "in.jsonl").write_text(json.dumps(FLOWER) + "\n")
    (app / "models").mkdir(exist_ok=True)
    (app / "models" / "scaler.joblib").write_bytes(b"pickle")
    (app / "samples.npy").write_bytes(b"\x93NUMPY")
    (app / "old-out").mkdir()
    for name in ("_SUCCESS", "part-00000-abc.json", "part-00001-abc.json"):
        (app / "old-out" / name).write_text("{}\n")
    (app / "out.parquet").mkdir()  # the job's OUTPUT, written by an earlier run
    (app / "out.parquet" / "part-00000-x.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the zip is written

    archive = app_zip(app, [app / "in.jsonl", app / "out.parquet"])
    names = zipfile.ZipFile(archive).namelist()
    assert "functions/iris/endpoint.py" in names and "function_app.py" in names
    data = ("in.jsonl", "out.parquet/", "models/scaler.joblib", "samples.npy", "old-out/")
    assert [n for n in names if n.startswith(data)] == []
    # Said in one line, the job's own files (the command's arguments) not among them.
    assert capsys.readouterr().err == (
        "spark-score: left out of the app zip as data (mlfn check's rule): "
        "models/, old-out/, samples.npy (docs/spark.md)\n"
    )


def test_errors_are_one_line_without_a_traceback(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    app = copy_examples(tmp_path / "app")
    models = example_models["iris"].parent

    unknown = _mlfn(app, models, "spark-score", "nope", "in.parquet", "out.parquet")
    assert unknown.returncode == 1
    assert unknown.stderr == "Error: no endpoint named 'nope'\n"

    absent = _mlfn(
        app, models, "spark-score", "iris", "absent.parquet", "out.parquet", "--master", "local[1]"
    )
    assert absent.returncode == 1
    last = absent.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Spark job failed: [PATH_NOT_FOUND]"), absent.stderr[-2000:]
    assert "absent.parquet" in last and "Traceback" not in absent.stderr

    (app / "noise.parquet").write_bytes(os.urandom(2000))  # no Parquet footer
    corrupt = _mlfn(
        app, models, "spark-score", "iris", "noise.parquet", "out.parquet", "--master", "local[1]"
    )
    assert corrupt.returncode == 1
    last = corrupt.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Spark job failed: "), corrupt.stderr[-2000:]
    assert "Traceback" not in corrupt.stderr and "Py4JJavaError" not in corrupt.stderr


def test_an_endpoint_that_fails_to_import_is_one_line_naming_file_and_line(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    # As mlfn serve, batch, enqueue and results say it (runtime.discovery.import_failure).
    app = copy_examples(tmp_path / "app")
    broken = app / "functions" / "broken"
    broken.mkdir()
    (broken / "endpoint.py").write_text(
        '"""An endpoint whose import fails."""\n\nimport not_a_module_xyz\n'
    )
    done = _mlfn(app, example_models["iris"].parent, "spark-score", "iris", "in.jsonl", "o.jsonl")
    assert done.returncode == 1
    assert done.stderr == (
        "Error: importing the app's endpoints failed: functions/broken/endpoint.py, line 3: "
        "ModuleNotFoundError: No module named 'not_a_module_xyz'\n"
    )


def test_json_lines_out_when_every_row_scored(app: Path, models: Path) -> None:
    # Spark's JSON writer leaves out null fields: with no bad row, no line has an error.
    rows = [{"id": i, **FLOWER} for i in range(5)]
    (app / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    done = _mlfn(
        app, models, "spark-score", "iris", "valid.jsonl", "valid-out.jsonl", "--master", "local[1]"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("scored 5 rows (0 errors) into valid-out.jsonl in ")
    out = [json.loads(line) for line in _part_lines(app / "valid-out.jsonl", ".json")]
    assert sorted(r["id"] for r in out) == list(range(5))
    assert {r["label"] for r in out} == {"setosa"} and not any("error" in r for r in out)


def test_a_csv_file_is_scored_into_csv_read_back_by_pythons_csv_module(
    app: Path, models: Path
) -> None:
    lines = ["id,sepal_length,sepal_width,petal_length,petal_width", "1,5.1,3.5,1.4,0.2"]
    lines += ["2,5.1,3.5,1.4,-1"]  # a bad row: its error JSON holds quotes
    (app / "flowers.csv").write_text("\n".join(lines) + "\n")

    done = _mlfn(
        app, models, "spark-score", "iris", "flowers.csv", "scored.csv", "--master", "local[1]"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.match(r"scored 2 rows \(1 errors?\) into scored.csv in ", done.stdout), done.stdout
    out = {r["id"]: r for r in csv.DictReader(_part_lines(app / "scored.csv", ".csv"))}
    assert out["1"]["label"] == "setosa" and out["1"]["error"] == ""
    assert set(json.loads(out["1"]["probabilities"])) == {"setosa", "versicolor", "virginica"}
    assert json.loads(out["2"]["error"])["type"] == "ValidationFailed" and out["2"]["label"] == ""


def test_a_parquet_file_is_scored_into_json_lines_with_the_bad_rows_error(
    app: Path, models: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": i, **FLOWER} for i in range(3)]
    rows[1]["petal_width"] = -1.0
    pq.write_table(pa.Table.from_pylist(rows), app / "flowers.parquet")

    done = _mlfn(
        app, models, "spark-score", "iris", "flowers.parquet", "out.jsonl", "--master", "local[1]"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.match(r"scored 3 rows \(1 errors?\) into out.jsonl in ", done.stdout), done.stdout
    out = {r["id"]: r for r in map(json.loads, _part_lines(app / "out.jsonl", ".json"))}
    assert '"field":"petal_width"' in out[1]["error"] and "label" not in out[1]
    assert out[0]["label"] == out[2]["label"] == "setosa" and "error" not in out[0]


def test_csv_quotes_read_as_written_and_a_dotted_column_is_carried_through(
    app: Path, models: Path
) -> None:
    # RFC 4180, as Python's csv module writes it: a quote inside a field doubled. Spark's
    # default backslash escape split such a field and dropped the row's last values; and a
    # column named user.id read as field id of a struct user (UNRESOLVED_COLUMN).
    header = ["user.id", "sepal_length", "sepal_width", "petal_length", "petal_width"]
    with (app / "quoted.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow(['x",1,2', 5.1, 3.5, 1.4, 0.2])
        writer.writerow(["plain", 5.1, 3.5, 1.4, 0.2])
    (app / "quoted-out.csv").mkdir()
    (app / "quoted-out.csv" / "part-stale.csv").write_text("from an earlier run\n")

    done = _mlfn(
        app, models,
        "spark-score", "iris", "quoted.csv", "quoted-out.csv", "--master", "local[1]",
        "--overwrite",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("scored 2 rows (0 errors) into quoted-out.csv in ")
    out = list(csv.DictReader(_part_lines(app / "quoted-out.csv", ".csv")))
    assert list(out[0])[: len(header)] == header
    assert {r["user.id"]: (r["label"], r["error"]) for r in out} == {
        'x",1,2': ("setosa", ""),
        "plain": ("setosa", ""),
    }


def test_an_existing_output_is_refused_before_spark_starts(app: Path, models: Path) -> None:
    (app / "taken.jsonl").mkdir()
    (app / "in.jsonl").write_text(json.dumps(FLOWER) + "\n")
    done = _mlfn(app, models, "spark-score", "iris", "in.jsonl", "taken.jsonl")
    assert done.returncode == 1
    # One line and nothing else: Spark, which logs as it starts, never started.
    assert done.stderr == "Error: OUTPUT taken.jsonl exists: pass --overwrite to replace it\n"


def test_a_format_no_extension_tells_is_refused_before_spark_starts(
    app: Path, models: Path
) -> None:
    # Said after Spark had started (about 10 s, and its start-up lines) before.
    (app / "in.jsonl").write_text(json.dumps(FLOWER) + "\n")
    done = _mlfn(app, models, "spark-score", "iris", "in.jsonl", "out.csv.out")
    assert done.returncode == 1
    assert done.stderr == (
        "Error: cannot tell the format of out.csv.out from its extension: pass --format\n"
    )
    # An output with no extension (a folder) is written as the input is, as before.
    from runtime.spark.files import formats

    assert formats("in/", "out/", "json", None) == ("json", "json")
    assert formats("in.parquet", "out", None, None) == ("parquet", "parquet")


def test_an_existing_output_spark_finds_is_told_as_the_command_s_option() -> None:
    # Where this machine cannot look first (abfss://, s3a://, HDFS), Spark's refusal.
    from runtime.errors import BadRequest
    from runtime.spark.files import _failed

    target = "abfss://out@acct.dfs.core.windows.net/scored"
    line = (
        f'[PATH_ALREADY_EXISTS] Path {target} already exists. Set mode as "overwrite" to '
        "overwrite the existing path. SQLSTATE: 42K04"
    )
    told = _failed(line, target)
    assert isinstance(told, BadRequest)
    assert told.message == f"OUTPUT {target} exists: pass --overwrite to replace it"


def test_csv_output_cells_a_spreadsheet_would_run_are_made_inert(app: Path, models: Path) -> None:
    # Text carried through (or echoed by predict) reaches whoever opens the CSV in a
    # spreadsheet: the rule batch files' CSV results follow, OWASP's leading quote.
    notes = {
        "1": ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        "2": ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        "3": ("@SUM(1+1)", "'@SUM(1+1)"),
        "4": ("+1+1", "'+1+1"),
        "5": ("-1.5", "-1.5"),  # a number stays a number
        "6": ("plain", "plain"),
    }
    with (app / "notes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "note", *FLOWER])
        for i, (note, _) in notes.items():
            writer.writerow([i, note, *FLOWER.values()])

    done = _mlfn(
        app, models, "spark-score", "iris", "notes.csv", "notes-out.csv", "--master", "local[1]"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = {r["id"]: r for r in csv.DictReader(_part_lines(app / "notes-out.csv", ".csv"))}
    assert {i: r["note"] for i, r in out.items()} == {i: inert for i, (_, inert) in notes.items()}
    assert {r["label"] for r in out.values()} == {"setosa"}
