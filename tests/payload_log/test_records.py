"""The payload log in process: the iris example's functions as the worker builds them, each
request's record written to a local folder as Parquet, read back with pyarrow and pandas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.releases.apps import IrisApp, forget_endpoints
from tests.support import FLOWER_MODELS, copy_examples, make_app

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class App(IrisApp):
    """The app in ``app_dir`` with its payload log in ``logs``, called in process."""

    def __init__(self, app_dir: Path, store: Path, cache: Path, logs: Path, **settings: Any):
        forget_endpoints()
        super().__init__(app_dir, store, cache, payload_log=str(logs), **settings)
        self.logs = logs

    post = IrisApp.call

    def flushed(self) -> pd.DataFrame:
        """Every record written so far, after a flush, as one DataFrame."""
        assert self.services.payload_log.flush()
        return read_records(self.logs)

    def close(self) -> None:
        if self.services.payload_log is not None:
            self.services.payload_log.close()
        super().close()


def read_records(root: Path) -> pd.DataFrame:
    files = sorted(root.rglob("*.parquet"))
    assert files, f"no payload-log file under {root}"
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


@pytest.fixture
def iris(tmp_path: Path, store: Path) -> Iterator[App]:
    app = App(copy_examples(tmp_path / "app"), store, tmp_path / "cache", tmp_path / "logs")
    yield app
    app.close()


def test_each_instance_is_a_record_with_typed_input_and_prediction_columns(iris: App) -> None:
    two = {"instances": [FLOWER, {**FLOWER, "petal_length": 4.5}]}
    status, answer = iris.post("iris_predict", "iris/predict", two, {"x-request-id": "r-1"})
    assert status == 200

    records = iris.flushed()

    assert list(records["request_id"]) == ["r-1", "r-1"]
    assert list(records["row"]) == [0, 1]
    assert list(records["input_petal_length"]) == [1.4, 4.5]
    assert list(records["prediction_label"]) == [p["label"] for p in answer["predictions"]]
    assert dict(records["prediction_probabilities"][0]) == pytest.approx(
        answer["predictions"][0]["probabilities"]
    )
    assert set(records["status"]) == {200} and records["error"].isna().all()
    assert set(records["endpoint"]) == {"iris"} and set(records["source"]) == {"http"}
    assert set(records["model_sha256"]) == {answer["model"]["sha256"]}
    assert (records["latency_ms"] > 0).all()
    assert records["invocation_id"].isna().all()  # called without a host: no invocation id
    schema = pq.read_schema(next(iris.logs.rglob("*.parquet")))
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("input_sepal_length").type == pa.float64()
    assert schema.field("prediction_label").type == pa.string()
    assert schema.field("prediction_probabilities").type == pa.map_(pa.string(), pa.float64())
    assert schema.field("status").type == pa.int16()
    meta = json.loads(schema.metadata[b"mlfn.payload_log"])
    assert meta["endpoint"] == "iris" and meta["prediction_fields"] == ["label", "probabilities"]


def test_files_are_partitioned_by_endpoint_date_and_hour(iris: App) -> None:
    iris.post("iris_predict", "iris/predict", {"instances": [FLOWER]})
    iris.flushed()
    (file,) = iris.logs.rglob("*.parquet")
    endpoint, date, hour, _ = file.relative_to(iris.logs).parts
    assert endpoint == "iris" and date.startswith("date=20") and hour.startswith("hour=")
    assert not list(iris.logs.rglob("*.partial"))


def test_a_refused_request_is_one_record_with_its_status_and_error_type(iris: App) -> None:
    bad = {"instances": [{**FLOWER, "petal_width": -1}]}
    status, _ = iris.post("iris_predict", "iris/predict", bad, {"x-request-id": "bad-1"})
    assert status == 422

    (record,) = iris.flushed().to_dict("records")

    assert record["request_id"] == "bad-1"
    assert record["status"] == 422 and record["error"] == "ValidationFailed"
    assert pd.isna(record["input_petal_width"]) and pd.isna(record["prediction_label"])


def test_v2_requests_are_logged_with_their_tensors(iris: App) -> None:
    body = {
        "id": "v2-1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                    "data": [5.1, 3.5, 1.4, 0.2, 6.0, 3.0, 4.5, 1.5]}],
    }  # fmt: skip
    status, _ = iris.post("v2_model_infer", "v2/models/iris/infer", body, model_name="iris")
    assert status == 200

    records = iris.flushed()

    assert list(records["request_id"]) == ["v2-1", "v2-1"] and set(records["source"]) == {"v2"}
    assert records["input_input"][1].tolist() == pytest.approx([6.0, 3.0, 4.5, 1.5])
    assert "prediction_label" in records


SECRET_APP = (
    FLOWER_MODELS
    + """
from typing import Annotated
from runtime import Endpoint, Log, Model, NotLogged

class Person(Flower):
    email: Annotated[str, NotLogged()]
    note: str = ""

endpoint = Endpoint(Person, Out, model=Model("iris.onnx"), log=Log(sample=1.0))

@endpoint.predict
def predict(instances, model):
    import numpy as np
    x = np.array([[i.sepal_length, i.sepal_width, i.petal_length, i.petal_width]
                  for i in instances], dtype=np.float32)
    out = model.run({"input": x})
    return [Out(label=int(l), probabilities=list(map(float, p)))
            for l, p in zip(out["label"].tolist(), out["probabilities"].tolist())]
"""
)


def test_a_field_marked_not_logged_is_in_no_file_whatever_the_path(
    tmp_path: Path, store: Path
) -> None:
    app_dir = make_app(tmp_path / "app", {"people": SECRET_APP})
    app = App(app_dir, store, tmp_path / "cache", tmp_path / "logs")
    try:
        person = {**FLOWER, "email": "ada@example.com",
                  "note": "https://x.blob.core.windows.net/c?sig=SECRET"}  # fmt: skip
        assert app.post("people_predict", "people/predict", {"instances": [person]})[0] == 200
        tensors = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                               "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip
        assert (
            app.post("v2_model_infer", "v2/models/people/infer", tensors, model_name="people")[0]
            == 200
        )

        records = app.flushed()
    finally:
        app.close()

    assert "input_email" not in records and "input_note" in records
    assert "SECRET" not in str(records["input_note"][0])  # a credential redacted
    assert "input_input" not in records  # a tensor may hold the marked field
    for file in (tmp_path / "logs").rglob("*.parquet"):
        assert b"ada@example.com" not in file.read_bytes()
        assert "email" not in pq.read_schema(file).names


def test_sampling_takes_a_request_by_its_id_with_all_its_instances(
    tmp_path: Path, store: Path
) -> None:
    app = App(copy_examples(tmp_path / "app"), store, tmp_path / "cache", tmp_path / "logs",
              payload_log_sample=0.1)  # fmt: skip
    try:
        for i in range(400):
            body = {"instances": [FLOWER, FLOWER]}
            assert (
                app.post("iris_predict", "iris/predict", body, {"x-request-id": f"q{i}"})[0] == 200
            )
        records = app.flushed()
        log = app.services.predict.scorer("iris").log
        expected = {f"q{i}" for i in range(400) if log.sampled(f"q{i}")}
    finally:
        app.close()

    assert set(records["request_id"]) == expected
    assert 20 <= len(expected) <= 65  # about a tenth of 400
    assert (records.groupby("request_id").size() == 2).all()


def test_queue_messages_are_logged_by_job_id_and_a_hopeless_one_as_its_error(iris: App) -> None:
    jobs = iris.services.jobs
    message = {"id": "job-7", "instances": [FLOWER, {**FLOWER, "sepal_width": 3}]}
    many = {"id": "job-8", "instances": [FLOWER] * 300}  # scored as columns: raw rows logged
    run = iris.loop.run_until_complete
    assert run(jobs.process("iris", json.dumps(message).encode(), "m-7")).error is None
    assert run(jobs.process("iris", json.dumps(many).encode(), "m-8")).error is None
    assert run(jobs.process("iris", b'{"id": "job-9", "instances": 3}', "m-9")).error is not None

    records = iris.flushed()

    assert set(records["source"]) == {"queue"}
    seven = records[records["request_id"] == "job-7"]
    assert list(seven["input_sepal_width"]) == [3.5, 3.0]  # an int sent, a float logged
    assert (records["request_id"] == "job-8").sum() == 300
    (nine,) = records[records["request_id"] == "job-9"].to_dict("records")
    assert nine["status"] == 400 and nine["error"] == "BadRequest"


def test_a_nested_field_marked_not_logged_is_left_out_and_credentials_deep_inside_redacted() -> (
    None
):
    from typing import Annotated

    from pydantic import BaseModel

    from runtime import NotLogged
    from runtime.payload_log.columns import Layout
    from runtime.payload_log.records import Entry

    class Contact(BaseModel):
        email: Annotated[str, NotLogged()]
        city: str

    class Applicant(BaseModel):
        contact: Contact
        links: list[str]

    class Decision(BaseModel):
        ok: bool

    applicant = Applicant(
        contact=Contact(email="ada@example.com", city="Oslo"),
        links=["https://acct.blob.core.windows.net/c/b?sv=2020&sig=SECRET"],
    )
    entry = Entry(0.0, "http", None, None, None, "r", 200, 1.0, None, [applicant],
                  [b'{"ok":true}'], 1, 100)  # fmt: skip
    row = Layout("e", Applicant, Decision).table([entry]).to_pylist()[0]
    assert row["input_contact"] == {"city": "Oslo"}
    assert "SECRET" not in row["input_links"][0] and "REDACTED" in row["input_links"][0]


def test_without_pyarrow_the_log_is_off_said_once_and_requests_go_on(
    tmp_path: Path, store: Path, without_pyarrow: None, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(copy_examples(tmp_path / "app"), store, tmp_path / "cache", tmp_path / "logs")
    try:
        with caplog.at_level("ERROR", "mlfn.payload_log"):
            assert app.post("iris_predict", "iris/predict", {"instances": [FLOWER]})[0] == 200
    finally:
        app.close()
    assert app.services.payload_log is None
    assert "pip install 'mlfn[payload-log]'" in caplog.text


def test_one_odd_request_does_not_turn_a_files_column_into_json_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused request's text that is not UTF-8, and a V2 request's [batch, 1] tensors,
    beside ordinary requests: the columns keep their fields' types (drift compares them), the
    odd value a null, a tensor's row of one value that value."""
    import numpy as np
    from pydantic import BaseModel

    from runtime.payload_log.columns import Layout
    from runtime.payload_log.records import Entry

    class Applicant(BaseModel):
        age: float
        city: str
        children: int

    class Decision(BaseModel):
        ok: bool

    def entry(inputs: Any, status: int = 200) -> Entry:
        return Entry(0.0, "http", None, None, None, "r", status, 1.0, None, inputs, None, 1, 100)

    def v2(age: float, city: str, children: float) -> Entry:
        tensors = {
            "age": [[age]],
            "city": np.array([[city]], dtype=object),
            "children": [[children]],
        }
        return entry({k: np.array(v) for k, v in tensors.items()})

    entries = [
        entry([Applicant(age=30, city="oslo", children=0)]),
        entry([Applicant(age=41, city="rome", children=2)]),
        entry([Applicant(age=52, city="lone \ud800", children=1)], status=400),  # JSON's "\ud800"
        v2(63.0, "paris", 3.0),
        v2(64.0, "oslo", 1.5),  # no int: not truncated to 1
    ]
    with caplog.at_level("WARNING", "mlfn.payload_log"):
        table = Layout("e", Applicant, Decision).table(entries)
    assert table.schema.field("input_age").type == pa.float64()
    assert table.schema.field("input_city").type == pa.string()
    assert table.schema.field("input_children").type == pa.int64()
    assert table.column("input_age").to_pylist() == [30.0, 41.0, 52.0, 63.0, 64.0]
    assert table.column("input_city").to_pylist() == ["oslo", "rome", None, "paris", "oslo"]
    assert table.column("input_children").to_pylist() == [0, 2, 1, 3, None]
    assert "1 value(s) of column 'input_city' do not fit" in caplog.text
    assert "1 value(s) of column 'input_children' do not fit" in caplog.text


def test_odd_values_among_many_are_found_by_halves_not_one_conversion_a_value() -> None:
    from runtime.payload_log import columns

    values: list[Any] = ["a"] * 200_000
    values[123_456] = "\ud800"
    calls = []
    real = pa.array

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    kept = columns._fitting(type("pa", (), {"array": staticmethod(counted)}), values, pa.string())
    assert kept[123_456] is None and kept.count(None) == 1
    assert len(calls) < 40  # about two a halving: 18 halvings of 200,000
