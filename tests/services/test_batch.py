"""The batch-file service decides what one version of a file becomes: its results and summary,
an error summary for a file that cannot be read, nothing for a file gone or overwritten
meanwhile, or a raise the host retries. In process, against Azurite; no host."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from runtime.endpoint import Batch
from runtime.errors import ModelNotInStore
from runtime.protocol import batch
from runtime.services import Services
from runtime.storage import blob_files
from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import adder
from tests.services.pairs import by_columns, by_rows, pairs, services, sums


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adder(tmp_path_factory.mktemp("models") / "adder.onnx")


Containers = tuple[ContainerClient, ContainerClient]


def _services(
    model: str | Path, tmp_path: Path, azurite: AzuriteInfo, c: Containers, **kw: Any
) -> Services:
    files, results = c
    return services(
        model,
        tmp_path,
        {"AzureWebJobsStorage": azurite.connection_string},
        batch=Batch(files=files.container_name, results=results.container_name),
        **kw,
    )


def _form(columnar: bool) -> dict[str, Any]:
    return {"predict": by_columns, "columnar": True} if columnar else {}


def _score(app: Services, c: Containers, path: str) -> batch.Summary | None:
    return asyncio.run(app.batch.score_blob("pairs", path, c[1].container_name))


def _upload(c: Containers, path: str, data: bytes) -> str:
    blob = c[0].get_blob_client(path)
    return str(blob.upload_blob(data, overwrite=True)["etag"])


def _stored_summary(c: Containers, path: str, etag: str) -> dict[str, Any]:
    return json.loads(c[1].download_blob(batch.summary_path(path, etag)).readall())


# Both forms of predict: rows through the rows service, columns through the columns pipeline.
FORMS = pytest.mark.parametrize("columnar", [False, True], ids=["rows", "columns"])


@FORMS
def test_a_file_s_rows_come_back_in_order_with_each_bad_row_s_error(
    model: Path, tmp_path: Path, azurite: AzuriteInfo, containers: Containers, columnar: bool
) -> None:
    good = pairs(300)
    lines = [json.dumps(p) for p in good]
    lines[7] = "{not json"
    lines[150] = json.dumps({"x": [1.0], "y": [1.0, 2.0]})  # too short
    etag = _upload(containers, "day/rows.jsonl", "\n".join(lines).encode())
    app = _services(model, tmp_path, azurite, containers, **_form(columnar))
    summary = _score(app, containers, "day/rows.jsonl")
    assert summary is not None and summary.error is None
    assert (summary.rows, summary.errors, summary.format) == (300, 2, "jsonl")
    assert summary.output == batch.result_path("day/rows.jsonl", etag)
    assert summary.model is not None and summary.model["name"] == "pairs"
    assert _stored_summary(containers, "day/rows.jsonl", etag)["rows"] == 300
    got = [
        json.loads(x) for x in containers[1].download_blob(summary.output).readall().splitlines()
    ]
    assert [g["row"] for g in got] == list(range(300))
    expected = sums(good)
    for i, row in enumerate(got):
        if i in (7, 150):
            assert "prediction" not in row and row["error"]["type"], row
        else:
            assert row["prediction"]["sum"] == expected[i]


@pytest.mark.parametrize(
    ("path", "data", "error", "says"),
    [
        ("notes.txt", b"hello", "UnknownFormat", "extension"),
        ("empty.csv", b"", "FileUnreadable", "header"),
        ("rows.json", b'[\n{"a": 1}\n]', "FileUnreadable", "JSON array"),
        ("rows.parquet", b"PAR1 not really", "FileUnreadable", ""),
    ],
)
def test_a_file_that_cannot_be_read_gets_an_error_summary_and_no_output(
    model: Path,
    tmp_path: Path,
    azurite: AzuriteInfo,
    containers: Containers,
    path: str,
    data: bytes,
    error: str,
    says: str,
) -> None:
    etag = _upload(containers, path, data)
    summary = _score(_services(model, tmp_path, azurite, containers), containers, path)
    assert summary is not None and summary.error is not None
    assert summary.error["type"] == error and says in summary.error["message"]
    assert (summary.output, summary.rows, summary.errors) == (None, 0, 0)
    stored = _stored_summary(containers, path, etag)
    assert stored["error"]["type"] == error and stored["output"] is None
    # The summary alone: no results blob beside it.
    assert [b.name for b in containers[1].list_blobs()] == [batch.summary_path(path, etag)]


def _parquet_of(**columns: list[list[float]]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(
        pa.table({k: pa.array(v, pa.list_(pa.float64())) for k, v in columns.items()}), sink
    )
    return sink.getvalue()


@FORMS
@pytest.mark.parametrize(
    ("path", "data", "missing", "header"),
    [
        ("wrong.csv", b'a,y\n"[1, 2]","[3, 4]"\n"[5, 6]","[7, 8]"\n', "x", "; its header: a, y"),
        ("wrong.parquet", _parquet_of(a=[[1.0, 2.0]], y=[[3.0, 4.0]]), "x", ""),
        ("other.parquet", _parquet_of(a=[[1.0, 2.0]], b=[[3.0, 4.0]]), "x, y", ""),  # none read
    ],
)
def test_a_file_without_a_column_for_a_required_field_is_one_error_not_one_a_row(
    model: Path,
    tmp_path: Path,
    azurite: AzuriteInfo,
    containers: Containers,
    columnar: bool,
    path: str,
    data: bytes,
    missing: str,
    header: str,
) -> None:
    etag = _upload(containers, path, data)
    summary = _score(
        _services(model, tmp_path, azurite, containers, **_form(columnar)), containers, path
    )
    assert summary is not None and summary.error is not None
    assert summary.error["type"] == "FileUnreadable"
    assert summary.error["message"] == (
        f"the file has no column for the required field(s) {missing}, so every row would fail"
        f"{header}"
    )
    assert summary.error["detail"] == {"missing": missing.split(", ")}
    assert (summary.output, summary.rows, summary.errors) == (None, 0, 0)
    assert [b.name for b in containers[1].list_blobs()] == [batch.summary_path(path, etag)]


def test_a_file_gone_before_it_is_scored_is_nothing_to_score(
    model: Path, tmp_path: Path, azurite: AzuriteInfo, containers: Containers
) -> None:
    summary = _score(_services(model, tmp_path, azurite, containers), containers, "gone.jsonl")
    assert summary is None
    assert not containers[1].exists() or list(containers[1].list_blobs()) == []


@FORMS
def test_a_model_missing_from_the_store_is_raised_for_the_host_to_retry(
    tmp_path: Path, azurite: AzuriteInfo, containers: Containers, columnar: bool
) -> None:
    etag = _upload(containers, "rows.jsonl", json.dumps(pairs(1)[0]).encode())
    app = _services("./adder.onnx", tmp_path, azurite, containers, **_form(columnar))
    with pytest.raises(ModelNotInStore):
        _score(app, containers, "rows.jsonl")
    # No summary: a retry, once the model is there, scores the file.
    assert not containers[1].get_blob_client(batch.summary_path("rows.jsonl", etag)).exists()


@FORMS
def test_a_file_overwritten_while_it_is_scored_is_left_to_its_new_version(
    model: Path,
    tmp_path: Path,
    azurite: AzuriteInfo,
    containers: Containers,
    monkeypatch: pytest.MonkeyPatch,
    columnar: bool,
) -> None:
    # Ranges of 64 KiB: the file is read in many, so one is asked for after the overwrite;
    # slabs of columns as short as the rows' (16,384 rows would hold the whole file).
    monkeypatch.setattr(blob_files, "READ_BYTES", 64 * 1024)
    monkeypatch.setattr("runtime.services.batch.COLUMN_SLAB_ROWS", 1024)
    old = "\n".join(json.dumps(p) for p in pairs(20_000)).encode()
    etag = _upload(containers, "rows.jsonl", old)
    overwritten: list[str] = []

    def overwriting(rows: Any, model: Any) -> Any:
        if not overwritten:  # the first batch: the reader is a few slabs ahead, no more
            overwritten.append(_upload(containers, "rows.jsonl", b'{"x": [1, 2], "y": [3, 4]}'))
        return (by_columns if columnar else by_rows)(rows, model)

    app = _services(model, tmp_path, azurite, containers, predict=overwriting, columnar=columnar)
    assert _score(app, containers, "rows.jsonl") is None
    assert overwritten and overwritten[0] != etag
    # Nothing committed for the old version: neither results nor a summary.
    assert [b.name for b in containers[1].list_blobs()] == []


def test_a_slab_whose_results_cannot_be_written_fails_the_file_and_stops_its_threads(
    model: Path,
    tmp_path: Path,
    azurite: AzuriteInfo,
    containers: Containers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A columnar endpoint's slabs are read, scored and written on threads of the file's own:
    # a failure on one of them is the file's (here a bug: an error summary, no output), and
    # no slab is read or scored after it.
    from runtime.protocol import batch_formats

    monkeypatch.setattr("runtime.services.batch.COLUMN_SLAB_ROWS", 256)
    etag = _upload(
        containers, "rows.jsonl", "\n".join(json.dumps(p) for p in pairs(20_000)).encode()
    )
    writes: list[int] = []
    writer = batch_formats.writer

    def failing_writer(*args: Any) -> Any:
        made = writer(*args)
        write = made.write

        def second_write_fails(start: int, outcomes: Any, prepared: Any = None) -> int:
            writes.append(start)
            if len(writes) == 2:
                raise RuntimeError("the disk is on fire")
            return write(start, outcomes, prepared)

        made.write = second_write_fails  # type: ignore[method-assign]
        return made

    monkeypatch.setattr(batch_formats, "writer", failing_writer)
    scored: list[int] = []

    def counting(columns: Any, model: Any) -> Any:
        scored.append(len(columns["x"]))
        return by_columns(columns, model)

    app = _services(model, tmp_path, azurite, containers, predict=counting, columnar=True)
    summary = _score(app, containers, "rows.jsonl")
    assert summary is not None and summary.error is not None
    assert (summary.error["type"], summary.output, summary.rows) == ("InternalError", None, 0)
    assert _stored_summary(containers, "rows.jsonl", etag)["error"]["type"] == "InternalError"
    assert writes == [0, 256]  # in order, and nothing written after the failure
    # Slabs in flight when it failed may finish; the other 70-odd are never scored.
    assert sum(scored) <= 256 * 8 < 20_000


@FORMS
@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("none.csv", b"x,y\n"),
        ("none.jsonl", b""),
        ("blank.jsonl", b"\n\n"),
        ("none.parquet", _parquet_of(x=[], y=[])),
    ],
)
def test_a_file_of_no_rows_gets_an_output_of_no_rows(
    model: Path,
    tmp_path: Path,
    azurite: AzuriteInfo,
    containers: Containers,
    columnar: bool,
    path: str,
    data: bytes,
) -> None:
    _upload(containers, path, data)
    app = _services(model, tmp_path, azurite, containers, **_form(columnar))
    summary = _score(app, containers, path)
    assert summary is not None and summary.error is None, summary
    assert (summary.rows, summary.errors) == (0, 0) and summary.output is not None
    written = containers[1].download_blob(summary.output).readall()
    if path.endswith(".parquet"):
        import io

        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(written))
        assert (table.num_rows, table.column_names) == (0, ["row", "sum", "error"])
    else:
        assert written == (b"row,sum,error\r\n" if path.endswith(".csv") else b"")


@FORMS
def test_a_slab_the_columns_cannot_hold_is_scored_by_the_rows_service(
    model: Path, tmp_path: Path, azurite: AzuriteInfo, containers: Containers, columnar: bool
) -> None:
    # No row of the file reads (the columns hold none): the rows service says so for each,
    # through the loop, from the columns pipeline's scoring thread.
    _upload(containers, "bad.jsonl", b"{not json\n[1, 2\n{nor this\n")
    app = _services(model, tmp_path, azurite, containers, **_form(columnar))
    summary = _score(app, containers, "bad.jsonl")
    assert summary is not None and summary.error is None, summary
    assert (summary.rows, summary.errors) == (3, 3)
    got = [
        json.loads(x) for x in containers[1].download_blob(summary.output).readall().splitlines()
    ]
    assert [(g["row"], g["error"]["type"]) for g in got] == [(i, "BadRequest") for i in range(3)]


@FORMS
def test_a_file_scored_with_one_default_thread_to_spare_never_starves_the_rows_service(
    model: Path, tmp_path: Path, azurite: AzuriteInfo, containers: Containers, columnar: bool
) -> None:
    """Rows the columns cannot hold (values of mixed kinds) go to the rows service, which
    validates them in the loop's default executor; the file's own threads are not taken from
    that executor, so a loop with a single default thread still scores the file."""
    mixed = [{"x": [1, 2], "y": [0.5, 1.5]}, {"x": ["3", "4"], "y": [0.25, 1]}]
    _upload(containers, "mixed.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in mixed))
    app = _services(model, tmp_path, azurite, containers, **_form(columnar))

    async def main() -> batch.Summary | None:
        with ThreadPoolExecutor(1) as one:
            asyncio.get_running_loop().set_default_executor(one)
            return await asyncio.wait_for(
                app.batch.score_blob("pairs", "mixed.jsonl", containers[1].container_name), 60
            )

    summary = asyncio.run(main())
    assert summary is not None and summary.error is None, summary
    assert (summary.rows, summary.errors) == (2, 0)
    got = [
        json.loads(x) for x in containers[1].download_blob(summary.output).readall().splitlines()
    ]
    assert [g["prediction"]["sum"] for g in got] == [[1.5, 3.5], [3.25, 5.0]]


def test_a_file_with_a_column_for_no_field_is_refused_though_every_field_is_optional() -> None:
    """Every field imputed (optional): a header of other names ("Age" for "age", a file cut
    by semicolons) scored every row alike with 0 errors; now one error says so. A file that
    fills some fields scores, and the summary names those it does not fill."""
    from pydantic import BaseModel

    from runtime.errors import FileUnreadable
    from runtime.services.batch import _columns_checker

    class Applicant(BaseModel):
        age: float | None = None
        income: float | None = None

    summary = batch.Summary("f.csv", "e", None, "csv")
    check = _columns_checker(Applicant, batch.Format.CSV, summary)
    with pytest.raises(FileUnreadable, match="a column for none of the input fields") as refused:
        check(["Age", "Income"])
    assert refused.value.detail == {"missing": ["age", "income"]}
    assert "; its header: Age, Income" in refused.value.message
    check(["age", "outcome"])
    assert summary.extra == {"absent": ["income"]}
    assert json.loads(summary.to_json())["absent"] == ["income"]


def test_a_files_missing_columns_are_named_as_its_header_would_name_them() -> None:
    # The field's Python name was told ("annual_income"), where the file's header, and the
    # DataFrame it came from, say "annual income".
    from pydantic import BaseModel, Field

    from runtime.errors import FileUnreadable
    from runtime.services.batch import _columns_checker

    class Loan(BaseModel):
        age: int
        annual_income: float = Field(alias="annual income")
        city_code: str | None = Field(default=None, alias="city code")

    summary = batch.Summary("loans.csv", '"0x1"', None, "csv")
    check = _columns_checker(Loan, batch.Format.CSV, summary)
    with pytest.raises(FileUnreadable) as refused:
        check(["age", "city"])
    with pytest.raises(FileUnreadable):  # pydantic reads the field by its alias only
        check(["age", "annual_income"])
    assert "no column for the required field(s) annual income, so every row" in (
        refused.value.message
    )
    assert refused.value.detail == {"missing": ["annual income"]}
    check(["age", "annual income"])
    assert summary.extra["absent"] == ["city code"]


def test_a_files_columns_are_read_by_the_keys_pydantic_reads() -> None:
    # The columns check took every name and alias a field has, whatever the model's config:
    # by name only, an alias column "filled" the field, and every row then failed.
    from pydantic import AliasChoices, BaseModel, ConfigDict, Field

    from runtime.protocol.batch_formats import column_names, missing_columns

    class ByName(BaseModel):
        model_config = ConfigDict(validate_by_alias=False, validate_by_name=True)
        annual_income: float = Field(alias="annual income")

    class Choices(BaseModel):
        x: float = Field(validation_alias=AliasChoices("first", "second"))

    assert missing_columns(ByName, ["annual income"]) == ["annual_income"]
    assert column_names(ByName, ["annual_income"]) == ["annual_income"]
    assert missing_columns(Choices, ["x"]) == ["x"] and missing_columns(Choices, ["second"]) == []
    assert column_names(Choices, ["x"]) == ["first"]
    for model, row in ((ByName, {"annual income": 1}), (Choices, {"x": 1})):
        with pytest.raises(ValueError):  # pydantic reads neither: the check says so first
            model.model_validate(row)
