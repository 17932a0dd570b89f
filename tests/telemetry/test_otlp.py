"""Telemetry over OTLP, end to end: `mlfn serve` exports to a real OTLP/HTTP receiver while real
HTTP requests and queue messages carrying a W3C ``traceparent`` are scored."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from runtime.storage.queues import EndpointQueues
from tests.conftest import AzuriteInfo
from tests.support import ROOT, LocalHost, app_env, make_app, wait_for
from tests.telemetry.receiver import Receiver, Span

IRIS = (ROOT / "functions" / "iris" / "endpoint.py").read_text()
FLOWER = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
HEADER = "x-mlfn-invocation-id"


def _endpoint(prefix: str, runs: Path) -> str:
    """The iris example with queues of its own and a predict slow enough (0.3 s) that requests
    arriving while it runs wait, and are merged into the next batch. Each run writes a line to
    ``runs`` as it starts, for a test to know one is under way."""
    declared = "limits=Limits(max_batch_size=256))"
    rows = "    rows = [[f.sepal_length"
    assert declared in IRIS and rows in IRIS, "the iris example changed; update this test"
    queues = f'Queues(requests="{prefix}-requests", results="{prefix}-results")'
    limits = "limits=Limits(max_batch_size=256, inline_fast_runs=False)"
    source = IRIS.replace(declared, f"{limits}, queues={queues})")
    return "import time\nfrom runtime import Queues\n" + source.replace(
        rows,
        f"    with open({str(runs)!r}, 'a') as started:\n        started.write('run\\n')\n"
        f"    time.sleep(0.3)\n{rows}",
    )


def _traceparent() -> tuple[str, str, str]:
    """A caller's trace parent, with its trace and span ids."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Where the endpoint's predict says each run has started."""
    return tmp_path / "runs.txt"


def _started(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


@pytest.fixture
def host(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    receiver: Receiver,
    prefix: str,
    runs: Path,
) -> Iterator[LocalHost]:
    app = make_app(tmp_path / "app", {"flowers": _endpoint(prefix, runs)})
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["queues"] = {"maxPollingInterval": "00:00:01"}
    (app / "host.json").write_text(json.dumps(host_json))
    env = app_env(
        azurite.connection_string,
        models_in_blob,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="mlfn-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRIC_EXPORT_INTERVAL="300",
    )
    served = LocalHost(app, env).start()
    yield served
    served.stop()


def _predict(client: httpx.Client, traceparent: str, instance: object = FLOWER) -> httpx.Response:
    body = {"instances": [instance]}
    return client.post("/api/flowers/predict", json=body, headers={"traceparent": traceparent})


def _spans(receiver: Receiver, trace_id: str, *names: str) -> dict[str, Span]:
    """The spans of a trace by name, once every one of ``names`` has arrived."""
    wait_for(
        lambda: set(names) <= {s.name for s in receiver.trace(trace_id)},
        30,
        f"spans {names} of trace {trace_id}",
    )
    return {s.name: s for s in receiver.trace(trace_id)}


def test_http_spans_continue_the_callers_trace_and_include_the_model_load_and_the_batch(
    host: LocalHost, receiver: Receiver, example_models: dict[str, Path]
) -> None:
    traceparent, trace_id, caller_span = _traceparent()
    with host.client() as client:
        response = _predict(client, traceparent)
    assert response.status_code == 200, response.text
    load = ("mlfn.model.load", "mlfn.model.fetch", "mlfn.model.download", "mlfn.model.verify")
    cold = (*load, "mlfn.model.session", "mlfn.model.warm_up")
    spans = _spans(receiver, trace_id, "POST /api/flowers/predict", "mlfn.batch", *cold)

    invocation = spans["POST /api/flowers/predict"]
    assert invocation.parent_span_id == caller_span and invocation.kind == "SERVER"
    assert invocation.service == "mlfn-under-test"
    assert invocation.attributes["faas.invocation_id"] == response.headers[HEADER]
    assert invocation.attributes["faas.coldstart"] is True
    assert invocation.attributes["http.response.status_code"] == 200
    assert invocation.attributes["http.route"] == "/api/flowers/predict"
    parent = {s.name: next((p.name for p in spans.values() if p.span_id == s.parent_span_id), None)
              for s in spans.values()}  # fmt: skip
    assert parent["mlfn.validate"] == parent["mlfn.batch"] == "POST /api/flowers/predict"
    assert parent["mlfn.model.load"] == parent["mlfn.run"] == parent["mlfn.encode"] == "mlfn.batch"
    assert parent["mlfn.model.fetch"] == parent["mlfn.model.session"] == "mlfn.model.load"
    assert parent["mlfn.model.download"] == "mlfn.model.fetch"
    model_load = spans["mlfn.model.load"].attributes
    assert model_load["mlfn.model.cache"] == "miss"
    assert model_load["mlfn.model.bytes"] == example_models["iris"].stat().st_size
    batch = spans["mlfn.batch"].attributes
    assert batch["mlfn.batch.size"] == 1 and batch["mlfn.endpoint"] == "flowers"


def test_merged_requests_are_links_of_one_batch_and_histograms_arrive(
    host: LocalHost, receiver: Receiver, runs: Path
) -> None:
    callers = [_traceparent() for _ in range(5)]
    with host.client() as client:
        assert _predict(client, _traceparent()[0]).status_code == 200  # the model is loaded
        with ThreadPoolExecutor(5) as pool:  # the first runs (0.3 s); the others wait for it
            before = _started(runs)
            first = pool.submit(_predict, client, callers[0][0])
            wait_for(lambda: _started(runs) > before, 30, "the first request's run", every=0.01)
            answers = list(pool.map(lambda c: _predict(client, c[0]), callers[1:]))
        refused = _predict(client, _traceparent()[0], {"sepal_length": -1})
    assert [r.status_code for r in [first.result(), *answers]] == [200] * 5
    assert refused.status_code == 422

    invocations = {
        c[1]: _spans(receiver, c[1], "POST /api/flowers/predict")["POST /api/flowers/predict"]
        for c in callers
    }
    batches = [s for c in callers for s in receiver.trace(c[1]) if s.name == "mlfn.batch"]
    merged = [b for b in batches if b.attributes["mlfn.batch.requests"] > 1]
    assert merged, f"no batch merged requests: {[b.attributes for b in batches]}"
    for batch in merged:
        parent = invocations[batch.trace_id]
        assert batch.parent_span_id == parent.span_id
        assert len(batch.links) == batch.attributes["mlfn.batch.requests"] - 1
        for trace_id, span_id in batch.links:  # each link is another request's invocation
            assert invocations[trace_id].span_id == span_id and trace_id != batch.trace_id

    def histograms_arrived() -> bool:
        durations = receiver.latest("mlfn.request.duration", **{"faas.name": "flowers_predict"})
        statuses = {p.attributes["http.response.status_code"]: p.value for p in durations}
        sizes = receiver.latest("mlfn.batch.size", **{"mlfn.endpoint": "flowers"})
        waits = receiver.latest("mlfn.batch.wait", **{"mlfn.endpoint": "flowers"})
        loads = receiver.latest("mlfn.model.load.duration", **{"mlfn.endpoint": "flowers"})
        return (
            statuses.get(200, 0) == 6
            and statuses.get(422, 0) == 1
            and sum(p.total for p in sizes) == 6  # instances, in fewer batches (merged)
            and sum(p.value for p in sizes) < 6
            and sum(p.value for p in waits) == 6  # one wait per request
            and [p.value for p in loads] == [1]
        )

    wait_for(histograms_arrived, 30, "request, batch and load histograms")
    assert [p.value for p in receiver.latest("mlfn.cold_starts")] == [1]
    assert [p.value for p in receiver.latest("mlfn.models.resident")][-1] == 1
    failed = _spans(receiver, refused.request.headers["traceparent"][3:35], "mlfn.validate")
    assert failed["mlfn.validate"].attributes["error.type"] == "ValidationFailed"
    assert failed["POST /api/flowers/predict"].attributes["error.type"] == "ValidationFailed"
    assert failed["POST /api/flowers/predict"].status == 0  # the client's fault, not an error


def test_a_queue_jobs_trace_continues_from_the_producers_traceparent(
    host: LocalHost, receiver: Receiver, azurite: AzuriteInfo, prefix: str
) -> None:
    queues = EndpointQueues(azurite.connection_string, f"{prefix}-requests", f"{prefix}-results")
    traceparent, trace_id, producer_span = _traceparent()
    queues.send("flowers", [FLOWER], "job-traced", traceparent)
    fresh = queues.send("flowers", [FLOWER], "job-fresh")  # mlfn starts the producer's trace
    queues.send("flowers", [{"sepal_length": "x"}], "job-refused", _traceparent()[0])
    results: list[dict[str, object]] = []
    wait_for(lambda: bool(results.extend(queues.receive())) or len(results) >= 3, 30, "results")
    assert sorted(str(r["id"]) for r in results) == ["job-fresh", "job-refused", "job-traced"]

    name = f"{prefix}-requests process"
    spans = _spans(receiver, trace_id, name, "mlfn.validate", "mlfn.batch", "mlfn.run")
    consumer = spans[name]
    assert consumer.parent_span_id == producer_span and consumer.kind == "CONSUMER"
    assert consumer.attributes["mlfn.queue.outcome"] == "processed"
    assert spans["mlfn.batch"].parent_span_id == consumer.span_id
    assert fresh.traceparent is not None
    assert (
        _spans(receiver, fresh.traceparent[3:35], name)[name].parent_span_id
        == (fresh.traceparent[36:52])
    )

    def counted() -> dict[str, float]:
        points = receiver.latest("mlfn.queue.messages", **{"mlfn.endpoint": "flowers"})
        return {p.attributes["mlfn.queue.outcome"]: p.value for p in points}

    wait_for(lambda: counted() == {"processed": 2, "errored": 1}, 30, "queue message counts")
