"""Counting the failed rows of a downloaded results file (what mlfn batch tells a person)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.errors import MlfnError
from runtime.protocol.batch import Format
from runtime.protocol.batch_errors import tally


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def test_a_csv_results_file_with_cells_wider_than_the_csv_module_s_limit_is_counted(
    tmp_path: Path,
) -> None:
    # An embedding written as JSON: one cell far over the csv module's default 128 KiB.
    wide = json.dumps([0.123456789] * 40_000)
    error = json.dumps({"type": "BadRequest", "message": "bad row"})
    path = tmp_path / "in.0x1.results.csv"
    path.write_text(f"row,vector,error\r\n0,{_quoted(wide)},\r\n1,,{_quoted(error)}\r\n")
    found = tally(path, Format.CSV)
    assert found.top == [("bad row", 1)] and found.total == 1


@pytest.mark.parametrize("data", [b"PAR1 not a parquet file", b""], ids=["not parquet", "empty"])
def test_a_results_file_that_cannot_be_read_is_one_line_naming_it(
    tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "results.parquet"
    path.write_bytes(data)
    with pytest.raises(MlfnError, match="cannot be read as Parquet results") as caught:
        tally(path, Format.PARQUET)
    assert str(path) in caught.value.message and "\n" not in caught.value.message


def test_parquet_results_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    errors = [None, json.dumps({"message": "no"}), json.dumps({"message": "no"})]
    pq.write_table(pa.table({"row": [0, 1, 2], "error": errors}), path)
    assert tally(path, Format.PARQUET).top == [("no", 2)]
