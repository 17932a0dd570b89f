"""``mlfn drift`` over real record files in a local folder, through click's runner."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner, Result

from runtime.cli import main
from tests.drift.records import (
    features,
    hours_ago,
    record_table,
    traffic,
    write_hour,
    write_reference,
)


def drift(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["drift", "iris", *args], catch_exceptions=False, env={"MLFN_PAYLOAD_LOG": None}
    )


def table_rows(output: str) -> list[list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("field "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_reference(tmp_path / "train.parquet")


def test_one_shifted_feature_is_ranked_first_above_the_threshold_and_fails(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    traffic(tmp_path / "logs", seed=7, n=3000, shift_width=0.3)

    result = drift(tmp_path, "--reference", str(reference), "--logs", str(tmp_path / "logs"))

    print(result.output)
    assert result.exit_code == 1
    rows = table_rows(result.output)
    assert rows[0][:3] == ["sepal_width", "input", "number"]
    assert float(rows[0][3]) > 0.2
    others = {r[0]: float(r[3]) for r in rows[1:]}
    assert set(others) == {"sepal_length", "petal_count", "species", "label"}
    assert all(value < 0.1 for value in others.values()), others
    assert "drift above 0.2 in sepal_width" in result.output
    # Only the 3,000 successful records count; the 200 failed ones with wild inputs do not.
    assert rows[0][5] == "3,000"
    assert (tmp_path / "drift-iris.html").is_file()


def test_unshifted_traffic_passes(tmp_path: Path, reference: Path) -> None:
    traffic(tmp_path / "logs", seed=8, n=3000)
    report = tmp_path / "out" / "report.html"
    report.parent.mkdir()

    result = drift(
        tmp_path, "--reference", str(reference), "--logs", str(tmp_path / "logs"),
        "--report", str(report),
    )  # fmt: skip

    print(result.output)
    assert result.exit_code == 0
    assert all(float(r[3]) < 0.1 for r in table_rows(result.output))
    assert report.is_file()


def test_a_csv_reference_and_the_setting_for_the_logs(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "train.csv")
    traffic(tmp_path / "logs", seed=9, n=2000)

    result = CliRunner().invoke(
        main,
        ["drift", "iris", "--reference", str(reference), "--report", str(tmp_path / "r.html")],
        env={"MLFN_PAYLOAD_LOG": str(tmp_path / "logs")},
    )

    assert result.exit_code == 0, result.output
    assert {r[0] for r in table_rows(result.output)} >= {"sepal_width", "species", "label"}


def test_since_prunes_partitions_by_their_folders_then_rows_by_time(
    tmp_path: Path, reference: Path
) -> None:
    logs = tmp_path / "logs"
    now = datetime.now(UTC)
    recent = features(10, 1000)
    write_hour(logs, now, record_table(recent, [now - timedelta(minutes=1)] * 1000))
    # An hour folder outside the window: its file is never listed, so neither its rows (whose
    # times say "now", which only a read would find) nor its bytes (not Parquet) are seen.
    old = hours_ago(5, now)
    wild = features(11, 500, shift_width=40.0)
    write_hour(logs, old, record_table(wild, [now] * 500), name="old")
    (logs / "iris" / f"date={old:%Y-%m-%d}" / f"hour={old:%H}" / "broken.parquet").write_bytes(
        b"not parquet"
    )
    # In the window's folders, rows older than the window are filtered by their time.
    stale = features(12, 300, shift_width=40.0)
    write_hour(logs, now, record_table(stale, [now - timedelta(hours=3)] * 300))

    result = drift(
        tmp_path, "--reference", str(reference), "--logs", str(logs), "--since", "2h",
        "--report", str(tmp_path / "r.html"),
    )  # fmt: skip

    print(result.output)
    assert result.exit_code == 0
    assert "broken" not in result.output and "skipped" not in result.output
    assert "1,000 successful records of 1,000 in 2 files of the last 2h" in result.output
    assert {r[5] for r in table_rows(result.output)} == {"1,000"}


def test_fields_on_one_side_only_are_listed_with_why(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "train.parquet", owner=["x"] * 4000)
    logs = tmp_path / "logs"
    now = datetime.now(UTC)
    first = features(13, 1000)
    write_hour(logs, hours_ago(2, now), record_table(first, [hours_ago(2, now)] * 1000))
    # A later file logs one more field, one the reference does not have.
    later = {**features(14, 1000), "channel": np.array(["web"] * 1000)}
    write_hour(logs, now, record_table(later, [now] * 1000))

    result = drift(
        tmp_path, "--reference", str(reference), "--logs", str(logs),
        "--report", str(tmp_path / "r.html"),
    )  # fmt: skip

    print(result.output)
    assert result.exit_code == 0
    rows = {r[0]: r for r in table_rows(result.output)}
    assert rows["owner"][1:4] == ["-", "category", "-"]
    assert "not in the records" in rows["owner"][-1]
    assert rows["channel"][1:4] == ["input", "category", "-"]
    assert rows["channel"][-1] == "not in the reference"
    assert rows["sepal_width"][5] == "2,000"


def test_a_column_added_in_a_later_file_is_counted_where_it_is(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "train.parquet")
    logs = tmp_path / "logs"
    now = datetime.now(UTC)
    first = features(15, 1000)
    del first["petal_count"]
    write_hour(logs, hours_ago(2, now), record_table(first, [hours_ago(2, now)] * 1000))
    write_hour(logs, now, record_table(features(16, 1000), [now] * 1000))

    result = drift(
        tmp_path, "--reference", str(reference), "--logs", str(logs),
        "--report", str(tmp_path / "r.html"),
    )  # fmt: skip

    rows = {r[0]: r for r in table_rows(result.output)}
    assert rows["petal_count"][5] == "1,000"
    assert rows["petal_count"][-1] == "logged in 1 of 2 files"


def test_no_records_in_the_window_is_a_usage_error(tmp_path: Path, reference: Path) -> None:
    logs = tmp_path / "logs"
    write_hour(logs, hours_ago(30), record_table(features(17, 10), [hours_ago(30)] * 10))

    result = drift(tmp_path, "--reference", str(reference), "--logs", str(logs))

    assert result.exit_code == 2
    assert f"no records of iris under {logs} in the last 24h" in result.output


def test_records_that_all_failed_are_a_usage_error(tmp_path: Path, reference: Path) -> None:
    logs = tmp_path / "logs"
    write_hour(logs, hours_ago(0), record_table(features(18, 10), [hours_ago(0)] * 10, 500))

    result = drift(tmp_path, "--reference", str(reference), "--logs", str(logs))

    assert result.exit_code == 2
    assert "none of the 10 records of iris in the last 24h succeeded" in result.output


def test_an_unreadable_reference_is_named(tmp_path: Path) -> None:
    traffic(tmp_path / "logs", seed=19, n=300)
    broken = tmp_path / "train.parquet"
    broken.write_bytes(b"PAR1 not really")

    result = drift(tmp_path, "--reference", str(broken), "--logs", str(tmp_path / "logs"))

    assert result.exit_code == 2
    assert f"Error: reference {broken}: not readable as parquet" in result.output


def test_a_reference_of_another_format_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "train.json"
    other.write_text("{}")

    result = drift(tmp_path, "--reference", str(other), "--logs", str(tmp_path))

    assert result.exit_code == 2
    assert "expected a .parquet or .csv file" in result.output


def test_usage_errors_exit_2(tmp_path: Path, reference: Path) -> None:
    no_logs = drift(tmp_path, "--reference", str(reference))
    assert no_logs.exit_code == 2
    assert "Give --logs ROOT" in no_logs.output and "MLFN_PAYLOAD_LOG" in no_logs.output

    bad_since = drift(tmp_path, "--reference", str(reference), "--logs", ".", "--since", "1w")
    assert bad_since.exit_code == 2
    assert "'1w' is not a duration" in bad_since.output

    missing = drift(tmp_path, "--reference", str(reference), "--logs", str(tmp_path / "none"))
    assert missing.exit_code == 2
    assert f"{tmp_path / 'none'}: no such folder" in missing.output


def test_an_unreadable_record_file_is_skipped_with_a_warning(
    tmp_path: Path, reference: Path
) -> None:
    logs = tmp_path / "logs"
    traffic(logs, seed=20, n=600)
    now = datetime.now(UTC)
    broken = write_hour(logs, now, pa.table({"x": [1]}), name="foreign")

    result = drift(
        tmp_path, "--reference", str(reference), "--logs", str(logs),
        "--report", str(tmp_path / "r.html"),
    )  # fmt: skip

    assert result.exit_code == 0
    assert f"Warning: skipped {broken}: not a payload log file" in result.output


def test_names_from_the_records_are_escaped_in_the_report(tmp_path: Path) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    reference = write_reference(tmp_path / "train.parquet", **{hostile: ["<b>"] * 4000})
    logs = tmp_path / "logs"
    now = datetime.now(UTC)
    data = {**features(21, 500), hostile: np.array(["<b>", "</svg>"] * 250)}
    write_hour(logs, now, record_table(data, [now] * 500))
    report = tmp_path / "r.html"

    result = drift(tmp_path, "--reference", str(reference), "--logs", str(logs),
                   "--report", str(report))  # fmt: skip

    assert result.exit_code == 1  # half the values are new: "other"
    html = report.read_text()
    assert hostile not in html and '</svg>"' not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html


def test_without_pyarrow_the_command_says_what_to_install_and_exits_2(
    tmp_path: Path, reference: Path, without_pyarrow: None
) -> None:
    result = drift(tmp_path, "--reference", str(reference), "--logs", str(tmp_path / "logs"))
    assert result.exit_code == 2
    assert "pip install 'mlfn[payload-log]'" in result.output
