"""The predict service: validation, micro-batching, the predict function's contract, and where
a sync or an async predict function runs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from runtime.config import Settings
from runtime.endpoint import BoundEndpoint, Endpoint, Limits, Model
from runtime.errors import (
    BadRequest,
    PayloadTooLarge,
    PredictContractError,
    PredictFailed,
    ValidationFailed,
)
from runtime.models.onnx_model import OnnxModel
from runtime.models.registry import ModelRegistry
from runtime.protocol import v1
from runtime.scheduling import Busy, placement
from runtime.scored import Scored
from runtime.services.predict import PredictService
from tests.models.onnx_builders import multi_io


class In(BaseModel):
    count: int = Field(ge=0)


class Out(BaseModel):
    next: int


def _run(model: OnnxModel, rows: list[In]) -> list[Out]:
    n = len(rows)
    feeds = {
        "features:0": [[[0.0, 0.0], [0.0, 0.0]]] * n,
        "count": [r.count for r in rows],
        "mask": [[True, False]] * n,
    }
    return [Out(next=v) for v in model.run(feeds)["next"].tolist()]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return multi_io(tmp_path_factory.mktemp("models") / "multi.onnx")


Service = Callable[..., PredictService]


@pytest.fixture
def service(model_file: Path, tmp_path: Path) -> Service:
    def make(predict: Any, max_batch_size: int = 64, max_request_bytes: int = 1024) -> Any:
        limits = Limits(max_batch_size=max_batch_size, max_request_bytes=max_request_bytes)
        endpoint = Endpoint(In, Out, model=str(model_file), limits=limits, predict=predict)
        registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
        return PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry)

    return make


def _decoded(scored: Scored) -> list[Any]:
    return [json.loads(p) for p in scored.predictions]


def _counts(*counts: int) -> list[dict[str, int]]:
    return [{"count": c} for c in counts]


def test_a_sync_predict_runs_in_a_worker_thread(service: Service) -> None:
    threads: list[int] = []

    def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        threads.append(threading.get_ident())
        return _run(model, rows)

    async def main() -> tuple[Any, int]:
        return await service(predict).predict("ep", _counts(1, 41)), threading.get_ident()

    scored, loop_thread = asyncio.run(main())
    assert _decoded(scored) == [{"next": 2}, {"next": 42}]
    assert scored.model.name == "ep" and len(scored.model.sha256) == 64
    assert threads and loop_thread not in threads


def test_an_async_predict_is_awaited_on_the_event_loop(service: Service) -> None:
    threads: list[int] = []

    async def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        threads.append(threading.get_ident())
        await asyncio.sleep(0)  # a real coroutine, suspended once
        return _run(model, rows)

    async def main() -> tuple[list[Any], int]:
        svc = service(predict, max_batch_size=2)
        both = await asyncio.gather(
            svc.predict("ep", _counts(1, 2, 3)), svc.predict("ep", _counts(9))
        )
        return list(both), threading.get_ident()

    (first, second), loop_thread = asyncio.run(main())
    assert _decoded(first) == [{"next": 2}, {"next": 3}, {"next": 4}]
    assert _decoded(second) == [{"next": 10}]
    assert set(threads) == {loop_thread}


def test_a_callable_object_with_an_async_call_is_awaited(service: Service) -> None:
    class Predictor:
        async def __call__(self, rows: list[In], model: OnnxModel) -> list[Out]:
            return _run(model, rows)

    scored = asyncio.run(service(Predictor()).predict("ep", _counts(5)))
    assert _decoded(scored) == [{"next": 6}]


def test_requests_over_max_batch_size_reach_predict_in_chunks(service: Service) -> None:
    sizes: list[int] = []

    def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        sizes.append(len(rows))
        return _run(model, rows)

    scored = asyncio.run(service(predict, max_batch_size=2).predict("ep", _counts(*range(5))))
    assert [p["next"] for p in _decoded(scored)] == [1, 2, 3, 4, 5]
    assert sizes == [2, 2, 1]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_sync_and_async_predicts_are_chunked_checked_and_encoded_alike(
    service: Service, asynchronous: bool
) -> None:
    sizes: list[int] = []

    def predict(rows: list[In], model: OnnxModel) -> list[Any]:
        sizes.append(len(rows))
        return [{"next": "x"} if r.count == 3 else {"next": r.count} for r in rows]

    async def predict_async(rows: list[In], model: OnnxModel) -> list[Any]:
        await asyncio.sleep(0)
        return predict(rows, model)

    svc = service(predict_async if asynchronous else predict, max_batch_size=2)
    scored = asyncio.run(svc.predict("ep", _counts(0, 1, 2)))
    assert _decoded(scored) == [{"next": 0}, {"next": 1}, {"next": 2}] and sizes == [2, 1]
    with pytest.raises(PredictContractError, match="invalid output for instance 3"):
        asyncio.run(svc.predict("ep", _counts(0, 1, 2, 3)))  # in the second chunk


def test_a_sync_predict_that_returns_an_awaitable_breaks_the_contract(service: Service) -> None:
    async def inner(rows: list[In], model: OnnxModel) -> list[Out]:
        return _run(model, rows)

    def predict(rows: list[In], model: OnnxModel) -> Any:
        return inner(rows, model)  # forgot to declare predict itself async def

    with pytest.raises(PredictContractError, match="declare predict async def"):
        asyncio.run(service(predict).predict("ep", _counts(1)))


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (lambda rows: [], "returned 0 outputs for 2 instances"),
        (lambda rows: None, "returned no list outputs for 2 instances"),
        (lambda rows: [{"next": "x"}, {"next": 1}], "invalid output for instance 0"),
    ],
)
def test_outputs_that_break_the_contract_are_a_server_error(
    service: Service, returned: Callable[[list[In]], Any], message: str
) -> None:
    with pytest.raises(PredictContractError, match=message) as caught:
        asyncio.run(service(lambda rows, model: returned(rows)).predict("ep", _counts(1, 2)))
    assert caught.value.status == 500


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_predict_that_raises_is_a_server_error_naming_the_exception(
    service: Service, asynchronous: bool
) -> None:
    def fail(rows: list[In], model: OnnxModel) -> list[Out]:
        raise ZeroDivisionError("no")

    async def fail_async(rows: list[In], model: OnnxModel) -> list[Out]:
        raise ZeroDivisionError("no")

    with pytest.raises(PredictFailed, match="raised ZeroDivisionError: no") as caught:
        asyncio.run(service(fail_async if asynchronous else fail).predict("ep", _counts(1)))
    assert caught.value.status == 500


def test_an_mlfn_error_from_predict_keeps_its_status(service: Service) -> None:
    def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        raise ValidationFailed("count 7 is unlucky", detail=[{"field": "instances[0].count"}])

    with pytest.raises(ValidationFailed, match="unlucky"):
        asyncio.run(service(predict).predict("ep", _counts(7)))


def test_validation_names_each_failing_field(service: Service) -> None:
    svc = service(lambda rows, model: _run(model, rows))
    with pytest.raises(ValidationFailed) as caught:
        asyncio.run(svc.predict("ep", [{"count": 1}, {"count": -1}, {}]))
    assert [d["field"] for d in caught.value.detail] == ["instances[1].count", "instances[2].count"]
    with pytest.raises(ValidationFailed, match="at least one instance"):
        asyncio.run(svc.predict("ep", []))


def test_a_v1_body_is_decoded_within_the_endpoints_byte_limit(service: Service) -> None:
    svc = service(lambda rows, model: _run(model, rows), max_request_bytes=64)
    scored = asyncio.run(svc.predict_body("ep", b'{"instances": [{"count": 3}]}'))
    assert _decoded(scored) == [{"next": 4}]
    with pytest.raises(PayloadTooLarge):
        asyncio.run(svc.predict_body("ep", b'{"instances": [' + b'{"count": 3},' * 10 + b"]}"))
    with pytest.raises(BadRequest):
        asyncio.run(svc.predict_body("ep", b"[]"))


@pytest.mark.parametrize(("limit_s", "inline"), [(60.0, True), (1e-9, False)])
def test_a_loaded_model_faster_than_a_thread_hop_runs_on_the_loop(
    service: Service, monkeypatch: pytest.MonkeyPatch, limit_s: float, inline: bool
) -> None:
    # The limit stands for "a thread hop": every run is under 60 s, none under a nanosecond.
    monkeypatch.setattr(placement, "INLINE_BELOW_S", limit_s)
    threads: list[int] = []

    def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        threads.append(threading.get_ident())
        return _run(model, rows)

    async def main() -> int:
        svc = service(predict)
        for count in range(5):
            await svc.predict("ep", _counts(count))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[0] != loop_thread  # the first run loads the model and is measured
    assert all((t == loop_thread) is inline for t in threads[2:])


def test_the_fast_and_the_careful_decoder_agree() -> None:
    """Bodies pydantic parses natively and the ones it refuses (then read the careful way for
    the contract's answer) give what the V1 codec and validation give."""
    bound = BoundEndpoint("ep", Endpoint(In, Out, model="m.onnx", predict=lambda r, m: r))
    svc = PredictService({"ep": bound}, ModelRegistry(Settings(), Path(".")))
    scorer = svc._scorer("ep")
    good = b'{"instances": [{"count": 1}, {"count": 2.0}], "other": null}'
    assert [i.count for i in scorer.decode_valid(good) or []] == [1, 2]
    assert [i.count for i in scorer.decode(good)] == [1, 2]
    for body, error in [
        (b"{", BadRequest),
        (b'{"instances": 1}', BadRequest),
        (b"[]", BadRequest),
        (b'{"instances": []}', ValidationFailed),
        (b'{"instances": [{"count": -1}, {}]}', ValidationFailed),
        (b'{"instances": [{"count": NaN}]}', BadRequest),  # NaN is not JSON
    ]:
        assert scorer.decode_valid(body) is None  # the fast path gives up on it
        with pytest.raises(error) as fast:
            scorer.decode(body)
        with pytest.raises(error) as careful:
            svc.validate("ep", v1.decode_request(body, max_bytes=1024))
        assert (fast.value.message, fast.value.detail) == (
            careful.value.message,
            careful.value.detail,
        )


def test_a_model_unloaded_meanwhile_is_loaded_again_in_a_thread_never_on_the_loop(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement, "INLINE_BELOW_S", 60.0)  # every run counts as fast
    threads: list[int] = []

    def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        threads.append(threading.get_ident())
        return _run(model, rows)

    endpoint = Endpoint(In, Out, model=str(model_file), predict=predict)
    # Long enough that the second call finds it loaded on a loaded machine (0.05 s was not).
    settings = Settings(cache_dir=tmp_path / "cache", idle_unload_s=1.0)
    registry = ModelRegistry(settings, tmp_path)
    svc = PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry)

    async def main() -> int:
        await svc.predict("ep", _counts(1))  # loads, in a thread
        await svc.predict("ep", _counts(2))  # loaded and fast: on the loop
        deadline = time.monotonic() + 30
        while registry.resident() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the idle reaper unloads it
        assert registry.resident() == {}
        await svc.predict("ep", _counts(3))  # fast, but not in memory: loaded in a thread
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert [t == loop_thread for t in threads] == [False, True, False]


def test_an_output_subclass_keeps_its_fields_and_odd_strings_still_encode(
    service: Service,
) -> None:
    class Richer(Out):
        note: str

    def predict(rows: list[In], model: OnnxModel) -> list[Out]:
        return [Richer(next=r.count, note="\ud800 lone") for r in rows]

    scored = asyncio.run(service(predict).predict("ep", _counts(4)))
    assert _decoded(scored) == [{"next": 4, "note": "\ud800 lone"}]


def test_a_queue_job_with_thousands_of_invalid_instances_gets_an_error_result_that_fits(
    service: Service,
) -> None:
    from runtime.protocol import jobs
    from runtime.services.jobs import JobService

    svc = service(lambda rows, model: _run(model, rows))
    job = JobService(svc, payloads=None)  # type: ignore[arg-type]  # no claim check here
    body = json.dumps({"id": "many", "instances": [{"count": -1}] * 20_000}).encode()
    result = asyncio.run(job.process("ep", body, "m-1"))
    assert len(result.text.encode()) < jobs.INLINE_RESULT_LIMIT  # fits a queue message
    assert type(result.error).__name__ == "ValidationFailed"
    error = json.loads(result.text)["error"]
    assert error["type"] == "ValidationFailed" and len(error["detail"]) == 100
    assert "and 19995 more (100 listed)" in error["message"]


def test_ragged_rows_are_the_requests_fault(model_file: Path, tmp_path: Path) -> None:
    from runtime.errors import ModelInputRefused

    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    model = registry.get("m", Model(str(model_file)))
    feeds = {"features:0": [[[0.0, 0.0], [0.0]]], "count": [1], "mask": [[True, False]]}
    with pytest.raises(ModelInputRefused, match="input 'features:0'") as caught:
        model.run(feeds)
    assert caught.value.status == 400


def test_a_hanging_store_answers_a_whole_batch_once_not_one_timeout_per_request(
    tmp_path: Path,
) -> None:
    import socket

    from runtime.errors import StoreUnavailable

    accepted: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def hang() -> None:  # accepts, reads nothing, answers nothing
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:  # closed by the test
                return

    threading.Thread(target=hang, daemon=True).start()
    port = server.getsockname()[1]
    endpoint = Endpoint(
        In, Out, model=f"http://127.0.0.1:{port}/c/m.onnx?sig=x", limits=Limits(max_batch_size=8)
    )
    endpoint.predict(lambda rows, model: _run(model, rows))
    settings = Settings(cache_dir=tmp_path / "cache", store_read_timeout_s=1, store_retries=0)
    svc = PredictService({"ep": BoundEndpoint("ep", endpoint)}, ModelRegistry(settings, tmp_path))

    async def main() -> list[object]:
        together = [svc.predict("ep", _counts(i)) for i in range(8)]
        answers = await asyncio.gather(*together, return_exceptions=True)
        try:
            await svc.predict("ep", _counts(9))  # within Retry-After: the same answer at once
        except StoreUnavailable as exc:
            answers.append(exc)
        return answers

    try:
        answers = asyncio.run(main())
    finally:
        stop.set()
        server.close()
        for connection in accepted:
            connection.close()
    assert len(answers) == 9 and all(isinstance(a, StoreUnavailable) for a in answers)
    assert len(accepted) == 1  # one attempt for all nine, not one per request


def test_non_finite_predictions_are_encoded_as_null(service: Service) -> None:
    class Loose(BaseModel):
        next: float

    def predict(rows: list[In], model: OnnxModel) -> list[Any]:
        return [{"next": float("nan")}, {"next": float("inf")}]

    endpoint = Endpoint(In, Loose, model="m.onnx", predict=predict)
    registry = ModelRegistry(Settings(), Path("."))
    svc = PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry)
    scorer = svc._scorer("ep")
    encoded = scorer._dump([In(count=1), In(count=2)], predict([], None), 0)  # type: ignore[arg-type]
    assert encoded == [b'{"next":null}', b'{"next":null}']  # standard JSON, not NaN


def test_a_run_slot_taken_on_the_loop_is_given_back_when_holding_the_model_fails(
    tmp_path: Path,
) -> None:
    """Holding the model can raise (its revalidation starts a thread, and a process may have
    none left): the slot taken for the run must not stay taken, or every later run of the
    endpoint waits for it forever."""
    from runtime.services.predict import _Runs

    class Failing(ModelRegistry):
        def use_loaded(self, name: str, ref: Model) -> Any:
            raise RuntimeError("can't start new thread")

    endpoint = Endpoint(In, Out, model="models/none.onnx")
    registry = Failing(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    runs = _Runs(BoundEndpoint("ep", endpoint), "ep", endpoint.model, registry, Busy())
    for _ in range(2):  # the second finds the slot free again
        with pytest.raises(RuntimeError, match="new thread"):
            runs.held_now()


@pytest.mark.parametrize("followed", [False, True])
def test_with_a_latency_target_a_request_the_line_would_make_late_is_refused_unread(
    model_file: Path, tmp_path: Path, followed: bool
) -> None:
    """Before its body is parsed, whether or not the endpoint follows a release (with no
    document, its requests go to its own line): under overload, reading what is refused is
    work taken from what is not."""
    from runtime.errors import Shed
    from runtime.releases.follow import Follower

    limits = Limits(latency_target_ms=50)
    endpoint = Endpoint(In, Out, model=str(model_file), limits=limits, predict=_run)
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    followers = {}
    if followed:  # no document: routes stay None; the next read of it is far off
        follower = Follower("ep", str(tmp_path / "ep.release.json"), lambda uri: None, 60)  # type: ignore[arg-type,return-value]
        follower.check_at = time.monotonic() + 60
        followers["ep"] = follower
    service = PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry, followers)
    scorer = service.scorer("ep")
    assert (scorer.release is not None) is followed
    for n in (1, 2, 4):  # a second a run: far over the 50 ms target
        scorer.batcher.run_times.learn(n, 1.0)
    scorer.batcher._probed_at = time.monotonic() + 60  # no probe run meanwhile

    with pytest.raises(Shed):  # not a 400 for the body: it was never read
        asyncio.run(scorer.predict_body(b"{not json"))


class Imputed(BaseModel):
    count: int | None = Field(default=None, ge=0)
    annual_income: float | None = Field(default=None, alias="annual income")


def test_an_instance_naming_no_field_of_an_all_optional_schema_is_refused(
    model_file: Path, tmp_path: Path
) -> None:
    """Every column imputed: {"Age": 41} validated as all defaults and answered 200 with the
    defaults' prediction; it is a 422 naming the fields, over V1 and in queue messages."""

    def run(rows: list[Imputed], model: OnnxModel) -> list[Out]:
        return _run(model, [In(count=r.count or 0) for r in rows])

    endpoint = Endpoint(Imputed, Out, model=str(model_file), predict=run)
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    svc = PredictService({"ep": BoundEndpoint("ep", endpoint)}, registry)
    fine = asyncio.run(
        svc.predict_body("ep", b'{"instances": [{"count": 3}, {"annual income": 2}]}')
    )
    assert _decoded(fine) == [{"next": 4}, {"next": 1}]
    for body in (b'{"instances": [{"count": 3}, {"Count": 4}]}', b'{"instances": [{}]}'):
        with pytest.raises(ValidationFailed) as refused:
            asyncio.run(svc.predict_body("ep", body))
        (detail,) = refused.value.detail
        assert detail["type"] == "no_field_set" and detail["field"].startswith("instances[")
        assert "sets none of the input fields (count, annual income)" in detail["message"]
    with pytest.raises(ValidationFailed, match=r"invalid instances: instances\[0\]"):
        asyncio.run(svc.predict("ep", [{"Count": 4}]))  # a queue message's instances
