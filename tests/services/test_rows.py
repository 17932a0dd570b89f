"""The rows service: many independent rows, each with its prediction or its own error; a bad
row never fails its neighbours, a failure every row would meet fails the whole call."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime.config import Settings
from runtime.endpoint import BoundEndpoint, Endpoint, Limits
from runtime.errors import ModelNotInStore, PredictFailed, ValidationFailed
from runtime.models.onnx_model import OnnxModel
from runtime.models.registry import ModelRegistry
from runtime.services.predict import PredictService
from runtime.services.rows import RowService
from tests.services.test_predict import In, Out, _run


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.models.onnx_builders import multi_io

    return multi_io(tmp_path_factory.mktemp("models") / "multi.onnx")


def _rows(model: Path, tmp_path: Path, predict: Any, model_uri: str | None = None) -> RowService:
    endpoint = Endpoint(
        In, Out, model=model_uri or str(model), limits=Limits(max_batch_size=4), predict=predict
    )
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    return RowService(PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry))


def _plain(rows: list[In], model: OnnxModel) -> list[Out]:
    return _run(model, rows)


RAW = [{"count": 1}, {"count": "x"}, {"count": 3}, {}, {"count": -1}, {"count": 5}]


def _outcomes(scored: Any) -> list[Any]:
    return [
        json.loads(r.prediction) if r.error is None else (type(r.error), r.error.detail)
        for r in scored.rows
    ]


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_each_row_gets_its_prediction_or_its_own_error_in_order(
    model_file: Path, tmp_path: Path, mode: str
) -> None:
    svc = _rows(model_file, tmp_path, _plain)
    scored = asyncio.run(svc.score("ep", RAW)) if mode == "async" else svc.score_sync("ep", RAW)
    out = _outcomes(scored)
    assert out[0] == {"next": 2} and out[2] == {"next": 4} and out[5] == {"next": 6}
    assert out[1][0] is ValidationFailed and out[1][1][0]["field"] == "count"
    assert out[3][0] is ValidationFailed and out[3][1][0]["type"] == "missing"
    assert out[4][0] is ValidationFailed and out[4][1][0]["type"] == "greater_than_equal"
    assert scored.errors == 3 and scored.model is not None and scored.model.name == "ep"


def test_rows_with_nothing_valid_reach_no_model(model_file: Path, tmp_path: Path) -> None:
    scored = _rows(model_file, tmp_path, _plain).score_sync("ep", [{}, {"count": "no"}])
    assert scored.errors == 2 and scored.model is None


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_row_that_makes_predict_raise_fails_alone(
    model_file: Path, tmp_path: Path, mode: str
) -> None:
    def picky(model: OnnxModel, rows: list[In]) -> list[Out]:
        if any(r.count == 13 for r in rows):
            raise ValueError("unlucky")
        return _run(model, rows)

    svc = _rows(model_file, tmp_path, lambda rows, model: picky(model, rows))
    raw = [{"count": 12}, {"count": 13}, {"count": 14}]
    scored = asyncio.run(svc.score("ep", raw)) if mode == "async" else svc.score_sync("ep", raw)
    assert [r.prediction is not None for r in scored.rows] == [True, False, True]
    assert isinstance(scored.rows[1].error, PredictFailed)
    assert "unlucky" in scored.rows[1].error.message


def test_a_failure_every_row_would_meet_is_raised(model_file: Path, tmp_path: Path) -> None:
    svc = _rows(model_file, tmp_path, _plain, model_uri=str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelNotInStore):
        svc.score_sync("ep", [{"count": 1}])


def test_an_async_predict_scores_rows_without_an_event_loop(
    model_file: Path, tmp_path: Path
) -> None:
    async def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        await asyncio.sleep(0)
        return _run(model, rows)

    scored = _rows(model_file, tmp_path, predict).score_sync("ep", [{"count": 7}])
    assert _outcomes(scored) == [{"next": 8}]


def test_one_bad_row_among_many_costs_a_few_calls_not_one_a_row(
    model_file: Path, tmp_path: Path
) -> None:
    calls: list[int] = []

    def picky(rows: list[In], model: OnnxModel) -> list[Out]:
        calls.append(len(rows))
        if any(r.count == 999 for r in rows):
            raise ValueError("unlucky")
        return _run(model, rows)

    endpoint = Endpoint(
        In, Out, model=str(model_file), limits=Limits(max_batch_size=64), predict=picky
    )
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    svc = RowService(PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry))
    raw = [{"count": 999 if i == 40 else i} for i in range(64)]
    scored = svc.score_sync("ep", raw)
    assert [i for i, r in enumerate(scored.rows) if r.error] == [40]
    assert len(calls) <= 2 * 7 + 1  # halving: about two calls a level, 6 levels for 64 rows


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_predict_that_fails_on_every_row_fails_the_call(
    model_file: Path, tmp_path: Path, mode: str
) -> None:
    calls: list[int] = []

    def broken(rows: list[In], model: OnnxModel) -> list[Out]:
        calls.append(len(rows))
        raise RuntimeError("a bug in predict")

    svc = _rows(model_file, tmp_path, broken)
    raw = [{"count": i} for i in range(64)]
    with pytest.raises(PredictFailed, match="a bug in predict"):
        asyncio.run(svc.score("ep", raw)) if mode == "async" else svc.score_sync("ep", raw)
    # The rows together (a failed call stops at its first batch of 4), then 8 of them alone.
    assert len(calls) == 1 + 8


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_bad_rows_at_both_ends_of_the_rows_fail_alone(
    model_file: Path, tmp_path: Path, mode: str
) -> None:
    def picky(rows: list[In], model: OnnxModel) -> list[Out]:
        if any(r.count == 99 for r in rows):
            raise ValueError("unlucky")
        return _run(model, rows)

    svc = _rows(model_file, tmp_path, picky)
    raw = [{"count": 99 if i in (0, 15) else i} for i in range(16)]
    scored = asyncio.run(svc.score("ep", raw)) if mode == "async" else svc.score_sync("ep", raw)
    assert _outcomes(scored)[1:15] == [{"next": i + 1} for i in range(1, 15)]
    assert [i for i, r in enumerate(scored.rows) if isinstance(r.error, PredictFailed)] == [0, 15]


def test_a_few_rows_that_all_fail_alone_are_each_their_row_s_error(
    model_file: Path, tmp_path: Path
) -> None:
    def picky(rows: list[In], model: OnnxModel) -> list[Out]:
        if any(r.count == 13 for r in rows):
            raise ValueError("unlucky")
        return _run(model, rows)

    raw = [{"count": 13}, {"count": "x"}, {"count": 13}]  # two valid rows, both bad for predict
    scored = _rows(model_file, tmp_path, picky).score_sync("ep", raw)
    assert [type(r.error) for r in scored.rows] == [PredictFailed, ValidationFailed, PredictFailed]


def test_an_output_that_cannot_be_written_as_json_is_that_row_s_error(
    model_file: Path, tmp_path: Path
) -> None:
    from pydantic import BaseModel

    from runtime.errors import PredictContractError

    class Raw(BaseModel):
        data: bytes

    def predict(rows: list[In], model: OnnxModel) -> list[Raw]:
        return [Raw(data=b"\xff" if r.count == 2 else b"ok") for r in rows]

    endpoint = Endpoint(
        In, Raw, model=str(model_file), limits=Limits(max_batch_size=4), predict=predict
    )
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    svc = RowService(PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry))
    scored = svc.score_sync("ep", [{"count": 1}, {"count": 2}, {"count": 3}])
    assert [r.prediction for r in scored.rows] == [b'{"data":"ok"}', None, b'{"data":"ok"}']
    assert isinstance(scored.rows[1].error, PredictContractError)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_bad_rows_wherever_they_sit_are_their_rows_errors_not_the_files(
    model_file: Path, tmp_path: Path, mode: str
) -> None:
    # Rows that fail at the places the rows service once tried alone (an even spread, ends
    # included) made it take predict for broken: 1,024 rows, no output. Whoever writes the
    # rows knows where they sit; which rows are tried alone must not be theirs to choose.
    bad = {round(i * 1023 / 7) for i in range(8)}
    calls: list[int] = []

    def picky(rows: list[In], model: OnnxModel) -> list[Out]:
        calls.append(len(rows))
        if any(r.count in bad for r in rows):
            raise ValueError("unlucky")
        return _run(model, rows)

    endpoint = Endpoint(
        In, Out, model=str(model_file), limits=Limits(max_batch_size=1024), predict=picky
    )
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    svc = RowService(PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry))
    raw = [{"count": i} for i in range(1024)]
    scored = asyncio.run(svc.score("ep", raw)) if mode == "async" else svc.score_sync("ep", raw)
    assert [i for i, r in enumerate(scored.rows) if isinstance(r.error, PredictFailed)] == sorted(
        bad
    )
    assert sum(r.prediction is not None for r in scored.rows) == 1016
    assert len(calls) < 2 * 8 * 10 + 1 + 8  # halving: 8 bad rows, about 2 calls a level each


def test_rows_merged_with_other_requests_are_isolated_once_not_twice(
    model_file: Path, tmp_path: Path
) -> None:
    """A bad row among rows that waited beside other requests: the rows service halves them
    down to it, and that is the only isolation they get. The batcher does not first run a
    merged batch that fails, then each request alone, then the rows' halves on top."""
    calls: list[list[int]] = []
    started, release = threading.Event(), threading.Event()

    def picky(rows: list[In], model: OnnxModel) -> list[Out]:
        calls.append([r.count for r in rows])
        started.set()
        release.wait(30)  # the first run holds the endpoint's one slot while the rest queue
        if any(r.count == 11 for r in rows):
            raise ValueError("unlucky")
        return _run(model, rows)

    limits = Limits(max_batch_size=8, inline_fast_runs=False)
    endpoint = Endpoint(In, Out, model=str(model_file), limits=limits, predict=picky)
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    predict = PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry)
    rows, batcher = RowService(predict), predict.scorer("ep").batcher

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(3000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("never")

    async def main() -> tuple[Any, list[Any]]:
        first = asyncio.ensure_future(predict.predict("ep", [{"count": 100}]))
        await until(started.is_set)
        scoring = asyncio.ensure_future(rows.score("ep", [{"count": c} for c in (10, 11, 12, 13)]))
        await until(lambda: len(batcher._bulk) == 1)
        others = [asyncio.ensure_future(predict.predict("ep", [{"count": c}])) for c in (101, 102)]
        await until(lambda: len(batcher._bulk) == 3)
        release.set()
        return await scoring, await asyncio.gather(first, *others)

    scored, answered = asyncio.run(main())
    assert [r.error is not None for r in scored.rows] == [False, True, False, False]
    assert [json.loads(a.predictions[0]) for a in answered] == [
        {"next": n} for n in (101, 102, 103)
    ]
    assert calls == [
        [100],  # running while the others queued
        [10, 11, 12, 13],  # the rows: alone, never merged with the others' requests
        [101, 102],  # the others, merged: none of them is run again
        [10, 11],  # the rows' halves, down to the bad row
        [10],
        [11],
        [12, 13],
    ]


class Text(BaseModel):
    text: str


class Echo(BaseModel):
    echo: str


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_string_no_model_can_take_is_that_rows_400_alone(tmp_path: Path, mode: str) -> None:
    from runtime.errors import ModelInputRefused
    from tests.models.onnx_builders import strings

    def echo(rows: list[Text], model: OnnxModel) -> list[Echo]:
        out = model.run({"text": [r.text for r in rows]}, ["echo"])["echo"]
        return [Echo(echo=str(value)) for value in out]

    endpoint = Endpoint(Text, Echo, model=str(strings(tmp_path / "s.onnx")), predict=echo)
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    svc = RowService(PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry))
    raw = [{"text": "a"}, {"text": "lone \ud800"}, {"text": "c"}]  # JSON may carry "\ud800"
    scored = asyncio.run(svc.score("ep", raw)) if mode == "async" else svc.score_sync("ep", raw)
    assert [json.loads(r.prediction) for r in (scored.rows[0], scored.rows[2])] == [
        {"echo": "a"},
        {"echo": "c"},
    ]
    error = scored.rows[1].error
    assert isinstance(error, ModelInputRefused) and error.status == 400
    assert "holds '\\ud800', which UTF-8 cannot encode" in error.message
