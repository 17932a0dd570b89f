"""The columns service scores Arrow columns as the rows service scores rows: the same
predictions, the same error for each bad row, through a columnar predict."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import BaseModel, ConfigDict, Field, field_serializer

from runtime import stacked
from runtime.columnar import frame
from runtime.config import Settings
from runtime.endpoint import BoundEndpoint, Endpoint, Limits
from runtime.errors import PredictContractError, PredictFailed
from runtime.models.onnx_model import OnnxModel
from runtime.models.registry import ModelRegistry
from runtime.services.columns import ColumnService
from runtime.services.predict import PredictService
from runtime.services.rows import RowService

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class Flower(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    sepal_length: float = Field(gt=0, le=50)
    sepal_width: float = Field(gt=0, le=50)
    petal_length: float = Field(gt=0, le=50)
    petal_width: float = Field(gt=0, le=50, alias="petalWidth")


class Species(BaseModel):
    label: int
    probabilities: list[float]


def by_rows(flowers: list[Flower], model: OnnxModel) -> list[Species]:
    x = [[getattr(f, n) for n in FEATURES] for f in flowers]
    out = model.run({"input": x})
    return [
        Species(label=label, probabilities=probs)
        for label, probs in zip(out["label"].tolist(), out["probabilities"].tolist(), strict=True)
    ]


def by_columns(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    x = np.column_stack([columns[n] for n in FEATURES]).astype(np.float32)
    out = model.run({"input": x})
    return {"label": out["label"], "probabilities": out["probabilities"]}


def _services(model: Path, tmp: Path, **predicts: Any) -> PredictService:
    endpoints = {}
    for name, fn in predicts.items():
        endpoint = Endpoint(Flower, Species, model=str(model), limits=Limits(max_batch_size=16))
        if fn is by_columns or getattr(fn, "columnar", False):
            endpoint.predict_columns(fn)
        else:
            endpoint.predict(fn)
        endpoints[name] = BoundEndpoint(name, endpoint)
    registry = ModelRegistry(Settings(cache_dir=tmp / "cache"), tmp)
    return PredictService(endpoints, registry)


def _table(n: int, bad_every: int = 100) -> dict[str, pa.Array]:
    rng = np.random.default_rng(7)
    columns: dict[str, list[Any]] = {
        "sepal_length": rng.uniform(4, 8, n).tolist(),
        "sepal_width": rng.uniform(2, 4.5, n).tolist(),
        "petal_length": rng.uniform(1, 7, n).tolist(),
        "petalWidth": rng.uniform(0.1, 2.5, n).tolist(),
    }
    bad = [-1.0, math.inf, None, 0.0, 51.0, math.nan]
    for j, i in enumerate(
        range(3, n, bad_every) if bad_every else ()
    ):  # 1% of the rows, each bad its own way
        columns[list(columns)[j % 4]][i] = bad[j % len(bad)]
    return {k: pa.array(v, type=pa.float64()) for k, v in columns.items()}


def _raw_rows(given: dict[str, pa.Array]) -> Any:
    def rows(indices: list[int]) -> list[dict[str, Any]]:
        lists = {k: c.take(pa.array(indices)).to_pylist() for k, c in given.items()}
        return [{k: v[j] for k, v in lists.items() if v[j] is not None}
                for j in range(len(indices))]  # fmt: skip

    return rows


@pytest.fixture(scope="module")
def iris(example_models: dict[str, Path]) -> Path:
    return example_models["iris"]


def test_columns_score_as_rows_do_and_each_bad_row_gets_the_row_paths_error(
    iris: Path, tmp_path: Path
) -> None:
    predict = _services(iris, tmp_path, rows=by_rows, columns=by_columns)
    given = _table(1000)
    raw = _raw_rows(given)(list(range(1000)))
    expected = RowService(predict).score_sync("rows", raw).rows

    service = ColumnService(predict)
    assert service.plan("columns") is not None and service.plan("rows") is None
    scored = service.score_sync("columns", given, 1000, _raw_rows(given))

    failed = {i for i, r in enumerate(expected) if r.error is not None}
    assert len(failed) == 10 and set(scored.errors) == failed
    for i in failed:
        assert scored.errors[i].to_dict() == expected[i].error.to_dict()  # type: ignore[union-attr]
    labels = scored.outputs["label"].to_pylist()
    probabilities = scored.outputs["probabilities"].to_pylist()
    for i, row in enumerate(expected):
        if row.prediction is None:
            assert labels[i] is None and probabilities[i] is None
            continue
        want = json.loads(row.prediction)
        assert labels[i] == want["label"]
        assert probabilities[i] == pytest.approx(want["probabilities"], abs=1e-6)


def test_a_predict_that_fails_on_some_rows_fails_only_them(iris: Path, tmp_path: Path) -> None:
    def fussy(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
        if (columns["sepal_length"] > 7.9).any():
            raise ValueError("too long")
        return by_columns(columns, model)

    fussy.columnar = True  # type: ignore[attr-defined]
    predict = _services(iris, tmp_path, fussy=fussy)
    given = _table(200, bad_every=0)
    long = np.flatnonzero(given["sepal_length"].to_numpy() > 7.9).tolist()
    assert 0 < len(long) < 10
    scored = ColumnService(predict).score_sync("fussy", given, 200, _raw_rows(given))
    assert sorted(scored.errors) == long
    assert all(isinstance(e, PredictFailed) for e in scored.errors.values())
    assert scored.outputs["label"].null_count == len(long)


def test_an_output_the_output_model_refuses_is_that_rows_error(iris: Path, tmp_path: Path) -> None:
    given = _table(40, bad_every=0)
    fifth = given["sepal_length"][5].as_py()

    def short(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
        out = by_columns(columns, model)
        label = out["label"].astype(object)
        label[columns["sepal_length"] == fifth] = "five"  # the output model refuses it
        return {"label": label, "probabilities": out["probabilities"]}

    short.columnar = True  # type: ignore[attr-defined]
    predict = _services(iris, tmp_path, short=short)
    scored = ColumnService(predict).score_sync("short", given, 40, _raw_rows(given))
    assert list(scored.errors) == [5]
    error = scored.errors[5]
    assert isinstance(error, PredictContractError)
    assert "label: Input should be a valid integer" in error.message


def test_a_columnar_predict_serves_rows_too(iris: Path, tmp_path: Path) -> None:
    predict = _services(iris, tmp_path, rows=by_rows, columns=by_columns)
    given = _table(50, bad_every=0)
    raw = _raw_rows(given)(list(range(50)))
    want = RowService(predict).score_sync("rows", raw).rows
    got = RowService(predict).score_sync("columns", raw).rows
    for a, b in zip(want, got, strict=True):
        assert a.prediction is not None and b.prediction is not None
        x, y = json.loads(a.prediction), json.loads(b.prediction)
        assert x["label"] == y["label"]
        assert x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-6)


def test_a_columnar_predict_over_http_needs_no_pyarrow(iris: Path, tmp_path: Path) -> None:
    # pyarrow is an optional extra (Parquet, Spark): requests reach a columnar predict without.
    import subprocess
    import sys

    code = f"""
import asyncio, json, sys
sys.modules["pyarrow"] = None  # importing it fails, as where it is not installed
import numpy as np
from pathlib import Path
from pydantic import BaseModel
from runtime.config import Settings
from runtime.endpoint import BoundEndpoint, Endpoint
from runtime.models.registry import ModelRegistry
from runtime.services.predict import PredictService

class Flower(BaseModel):
    x: list[float]

class Species(BaseModel):
    label: int

endpoint = Endpoint(Flower, Species, model={str(iris)!r})

@endpoint.predict_columns
def predict(columns, model):
    return {{"label": model.run({{"input": columns["x"]}})["label"]}}

tmp = Path({str(tmp_path)!r})
registry = ModelRegistry(Settings(cache_dir=tmp / "cache"), tmp)
service = PredictService({{"ep": BoundEndpoint("ep", endpoint)}}, registry)
body = json.dumps({{"instances": [{{"x": [5.1, 3.5, 1.4, 0.2]}}]}}).encode()
scored = asyncio.run(service.predict_body("ep", body))
print(json.loads(scored.predictions[0])["label"])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # setosa


def test_without_pyarrow_the_rows_service_scores_bulk_rows(
    iris: Path, tmp_path: Path, without_pyarrow: None
) -> None:
    service = ColumnService(_services(iris, tmp_path, columns=by_columns))
    assert service.plan("columns") is None  # batch files then go row by row, as they can


def test_a_queue_message_of_many_instances_is_scored_as_columns_and_answers_alike(
    iris: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.services import columns as columns_service
    from runtime.services.jobs import COLUMNS_FROM, JobService
    from runtime.storage.payloads import Payloads

    predict = _services(iris, tmp_path, rows=by_rows, columns=by_columns)
    service = ColumnService(predict)
    jobs = JobService(predict, Payloads(Settings(cache_dir=tmp_path / "c")), lambda: service)
    given = _table(COLUMNS_FROM + 44, bad_every=0)
    instances = _raw_rows(given)(list(range(COLUMNS_FROM + 44)))
    through_columns = []
    score = ColumnService.score_instances

    def spy(self: ColumnService, name: str, raw: Any) -> Any:
        done = score(self, name, raw)
        through_columns.append((name, done is not None))
        return done

    monkeypatch.setattr(columns_service.ColumnService, "score_instances", spy)

    def answer(name: str, rows: list[Any]) -> dict[str, Any]:
        body = json.dumps({"id": "j1", "instances": rows}).encode()
        result: dict[str, Any] = json.loads(asyncio.run(jobs.process(name, body)).text)
        return result

    want, got = answer("rows", instances), answer("columns", instances)
    assert through_columns == [("rows", False), ("columns", True)]
    assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
    for a, b in zip(want["predictions"], got["predictions"], strict=True):
        assert b["probabilities"] == pytest.approx(a["probabilities"], abs=1e-6)

    instances[100] = {**instances[100], "sepal_width": -1.0}  # one bad instance: the same error
    assert answer("columns", instances)["error"] == answer("rows", instances)["error"]
    assert through_columns[2:] == [("columns", False), ("rows", False)]


class Coerced(BaseModel):
    label: int
    flag: bool
    score: float
    tags: list[int]


class Serialized(BaseModel):
    tag: str
    probs: dict[str, float]

    @field_serializer("tag")
    def upper(self, value: str) -> str:
        return value.upper()


def _odd_outputs(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    n = len(columns["sepal_length"])
    return {
        "label": np.ones(n),  # whole floats for an int
        "flag": np.arange(n) % 2,  # 0 and 1 for a bool
        "score": np.arange(n),  # ints for a float
        "tags": np.ones((n, 2)),  # whole floats for list[int]
        "tag": ["a"] * n,
        "probs": [{"b": 0.5} if i % 2 else {"a": 0.5} for i in range(n)],  # keys differ
    }


@pytest.mark.parametrize("output", [Coerced, Serialized])
def test_bulk_outputs_are_what_pydantic_makes_of_them_as_on_the_row_path(
    iris: Path, tmp_path: Path, output: type[BaseModel]
) -> None:
    endpoint = Endpoint(Flower, output, model=str(iris), limits=Limits(max_batch_size=16))
    endpoint.predict_columns(_odd_outputs)
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    predict = PredictService({"odd": BoundEndpoint("odd", endpoint)}, registry)
    given = _table(300, bad_every=0)
    raw = _raw_rows(given)(list(range(300)))
    by_rows = [
        json.loads(r.prediction or b"") for r in RowService(predict).score_sync("odd", raw).rows
    ]
    scored = ColumnService(predict).score_instances("odd", raw)
    assert scored is not None
    assert [json.loads(p) for p in scored.predictions] == by_rows


def test_column_runs_and_the_batchers_runs_share_the_endpoints_bound(
    iris: Path, tmp_path: Path
) -> None:
    import threading

    inside = threading.Event()
    running = [0]
    peak = [0]
    lock = threading.Lock()

    def slow(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        inside.set()
        threading.Event().wait(0.3)  # long enough for the other run to try to start
        with lock:
            running[0] -= 1
        return by_columns(columns, model)

    slow.columnar = True  # type: ignore[attr-defined]
    predict = _services(iris, tmp_path, slow=slow)  # max_concurrent_batches: 1, the default
    given = _table(20, bad_every=0)
    bulk = threading.Thread(
        target=ColumnService(predict).score_sync,
        args=("slow", given, 20, _raw_rows(given)),
    )
    bulk.start()
    assert inside.wait(30)

    async def request() -> Any:
        return await predict.predict("slow", _raw_rows(given)([0]))

    asyncio.run(request())
    bulk.join(30)
    assert peak[0] == 1  # never two predict calls of the endpoint at once


def test_a_matrix_predict_stacks_is_made_once_a_slab_and_each_call_gets_its_rows(
    iris: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, Any]] = []

    def stacking(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
        x = stacked(columns, FEATURES, np.float32)
        seen.append((x, np.column_stack([columns[n] for n in FEATURES]).astype(np.float32)))
        out = model.run({"input": x})
        return {"label": out["label"], "probabilities": out["probabilities"]}

    stacking.columnar = True  # type: ignore[attr-defined]
    predict = _services(iris, tmp_path, stacking=stacking, columns=by_columns)
    made = []
    stack = frame.stack_columns
    monkeypatch.setattr(frame, "stack_columns", lambda *a: made.append(a) or stack(*a))
    for bad_every in (0, 100):  # every row: slices of the slab; 1 % bad: rows by index
        seen.clear()
        made.clear()
        given = _table(200, bad_every=bad_every)
        got = ColumnService(predict).score_sync("stacking", given, 200, _raw_rows(given))
        want = ColumnService(predict).score_sync("columns", given, 200, _raw_rows(given))
        assert got.errors.keys() == want.errors.keys()
        assert got.outputs is not None and want.outputs is not None
        assert got.outputs["label"] == want.outputs["label"]
        assert len(seen) == math.ceil((200 - len(got.errors)) / 16)  # max_batch_size 16
        assert len(made) == 1  # once for the slab's 13 calls
        if not bad_every:
            assert all(not x.flags.writeable for x, _ in seen)
        for x, own in seen:
            np.testing.assert_array_equal(x, own)  # each call's own rows, in order
            assert x.dtype == np.float32
            # A view of the slab's matrix is read-only: no call changes another's rows (rows
            # taken by index are a copy of their own).
            assert x.flags.writeable == (x.base is None)


def test_stacked_lays_the_named_columns_side_by_side_for_any_batch() -> None:
    columns = {"a": np.array([1.0, 2.0]), "b": np.array([[3.0, 4.0], [5.0, 6.0]])}
    x = stacked(columns, ("a", "b"), np.float32)  # an HTTP request's columns: a plain dict
    np.testing.assert_array_equal(x, [[1, 3, 4], [2, 5, 6]])
    assert x.dtype == np.float32
    assert stacked(columns, ["b"]).dtype == np.float64


def test_a_slab_parts_stacked_is_of_the_columns_its_predict_holds() -> None:
    # A call's matrix comes from the slab's while its columns are those it was given; a column
    # predict replaced or added is stacked as a plain dict's would be, and none is changed in
    # place (each is read-only, a view or a copy alike), so the slab's matrix stays right.
    slab = frame.Slab({"a": np.arange(4.0), "b": np.arange(4.0) * 10})
    part = slab.part(slice(0, 2))
    np.testing.assert_array_equal(stacked(part, ("a", "b")), [[0, 0], [1, 10]])
    part["a"] = np.log1p(part["a"])
    part["r"] = part["b"] / 10
    np.testing.assert_array_equal(
        stacked(part, ("a", "b", "r")), [[0, 0, 0], [np.log1p(1.0), 10, 1]]
    )
    for rows in (slice(2, 4), [1, 3]):
        with pytest.raises(ValueError, match="read-only"):
            slab.part(rows)["b"][0] = 5.0
    np.testing.assert_array_equal(stacked(slab.part([1, 3]), ("a", "b")), [[1, 10], [3, 30]])
    structured = stacked(slab.part(slice(2, 4)), ("a",), [("v", "<f8")])  # no dict key
    assert len(structured) == 2
    zeros = np.zeros(2)
    changes: list[Callable[[dict[str, Any]], object]] = [
        lambda p: p.update(a=zeros),
        lambda p: p.setdefault("z", zeros),  # an added column is a change too
        lambda p: p.__ior__({"a": zeros}),
        lambda p: (p.pop("a"), p.setdefault("a", zeros)),
        lambda p: (p.popitem(), p.setdefault("b", zeros)),
    ]
    for change in changes:
        part = slab.part(slice(0, 2))
        change(part)
        np.testing.assert_array_equal(
            stacked(part, ("a", "b")), np.column_stack([part["a"], part["b"]])
        )
    part = slab.part(slice(0, 2))
    del part["a"]
    with pytest.raises(KeyError):
        stacked(part, ("a", "b"))
    part.clear()
    with pytest.raises(KeyError):
        stacked(part, ("b",))
