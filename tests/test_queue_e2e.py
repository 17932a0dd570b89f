"""Queue scoring end to end: `mlfn serve` runs the queue triggers against Azurite; nothing is
lost, nothing answered twice differently, whatever the messages and whatever happens to the
host or the model store."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from azure.storage.blob import ContainerClient

from runtime.storage.queues import EndpointQueues
from scripts import azurite as azurite_script
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, app_env, make_app, queue_client, wait_for

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")

IRIS = (Path(__file__).resolve().parents[1] / "functions" / "iris" / "endpoint.py").read_text()


# Set in a host's environment, the seconds its predict sleeps instead of the app's own.
SLOW = "TEST_PREDICT_SLEEP_S"


def _endpoint(prefix: str, max_batch: int, sleep_s: float) -> str:
    """The iris example with its own queues, batch size and (for the kill test) a slow predict."""
    declared = (
        'endpoint = Endpoint(Flower, Species, model="iris.onnx", limits=Limits(max_batch_size=256))'
    )
    rows = "    rows = [[f.sepal_length"
    assert declared in IRIS and rows in IRIS, "the iris example changed; update this test"
    queues = f'Queues(requests="{prefix}-requests", results="{prefix}-results")'
    source = IRIS.replace(
        declared,
        f'endpoint = Endpoint(Flower, Species, model="iris.onnx", limits=Limits(max_batch_size={max_batch}), queues={queues})',
    ).replace(rows, f"    time.sleep(float(os.environ.get(SLOW, {sleep_s!r})))\n{rows}")
    return f"import os, time\nfrom runtime import Queues\nSLOW = {SLOW!r}\n" + source


def _app(tmp_path: Path, prefix: str, max_batch: int = 256, sleep_s: float = 0.0) -> Path:
    app = make_app(tmp_path / "app", {"flowers": _endpoint(prefix, max_batch, sleep_s)})
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["queues"] = {
        "maxPollingInterval": "00:00:01",
        "visibilityTimeout": "00:00:00",
    }
    (app / "host.json").write_text(json.dumps(host_json))
    return app


@pytest.fixture
def prefix() -> str:
    return f"q{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queues(azurite: AzuriteInfo, prefix: str) -> EndpointQueues:
    return EndpointQueues(azurite.connection_string, f"{prefix}-requests", f"{prefix}-results")


def _env(azurite: AzuriteInfo, container: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return app_env(azurite.connection_string, container, tmp_path, **extra)


def _flowers(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    rows = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4)).round(2)
    return [dict(zip(FIELDS, map(float, row), strict=True)) for row in rows]


def _expected(model_path: Path, instances: list[dict[str, float]]) -> tuple[list[str], np.ndarray]:
    x = np.array([[i[f] for f in FIELDS] for i in instances], dtype=np.float32)
    labels, probs = ort.InferenceSession(str(model_path)).run(None, {"input": x})
    return [SPECIES[i] for i in labels], probs


def _collect(
    queues: EndpointQueues, results: list[dict[str, Any]], until: int, timeout: float
) -> None:
    def enough() -> bool:
        results.extend(queues.receive(wait_s=0.5))
        return len({r.get("id") or r.get("message_id") for r in results}) >= until

    wait_for(enough, timeout, f"{until} results", every=0.1)


def test_200_messages_valid_invalid_and_claim_checked_all_end_as_results(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    example_models: dict[str, Path],
    queues: EndpointQueues,
    prefix: str,
) -> None:
    rng = np.random.default_rng(7)
    valid: dict[str, list[dict[str, float]]] = {}
    for i in range(175):
        valid[f"ok-{i}"] = _flowers(rng, int(rng.integers(1, 4)))
    for i in range(5):
        valid[f"big-{i}"] = _flowers(rng, 800)  # ~75 KB of JSON: over the 64 KB message limit
    sent = {
        job_id: queues.send("flowers", instances, job_id) for job_id, instances in valid.items()
    }
    assert all(sent[f"big-{i}"].instances_blob for i in range(5))
    assert not any(s.instances_blob for k, s in sent.items() if k.startswith("ok-"))

    invalid_with_id = {
        "bad-range-0": {
            "id": "bad-range-0",
            "instances": [{**valid["ok-0"][0], "petal_width": -1}],
        },
        "bad-range-1": {"id": "bad-range-1", "instances": [valid["ok-1"][0], {"sepal_length": 99}]},
        "bad-type-0": {"id": "bad-type-0", "instances": [{f: "wide" for f in FIELDS}]},
        "bad-missing-0": {"id": "bad-missing-0", "instances": [{"sepal_length": 5.0}]},
        "bad-empty-0": {"id": "bad-empty-0", "instances": []},
        "bad-shape-0": {"id": "bad-shape-0", "instances": {"not": "a list"}},
        "bad-shape-1": {"id": "bad-shape-1", "instances": [1, 2, 3]},
        "bad-blob-0": {"id": "bad-blob-0", "instances_blob": "requests/flowers/nowhere.jsonl"},
        "bad-blob-1": {"id": "bad-blob-1", "instances_blob": "no-such-container/x.jsonl"},
        "bad-blob-2": {"id": "bad-blob-2", "instances_blob": "not-a-path"},
        "bad-both-0": {"id": "bad-both-0", "instances": [], "instances_blob": "a/b"},
        "bad-none-0": {"id": "bad-none-0"},
    }
    for doc in invalid_with_id.values():
        queues.send_raw(json.dumps(doc))
    without_id = [
        "{not json",
        "[]",
        '"just a string"',
        '{"instances": []}',
        '{"id": "../../etc/passwd", "instances": []}',
        '{"id": 42, "instances": []}',
        "",
        '{"id": ""}',
    ]
    for body in without_id:
        queues.send_raw(body)
    total = len(valid) + len(invalid_with_id) + len(without_id)
    assert total == 200 and len(invalid_with_id) + len(without_id) == 20

    host = LocalHost(_app(tmp_path, prefix), _env(azurite, models_in_blob, tmp_path)).start()
    results: list[dict[str, Any]] = []
    try:
        _collect(queues, results, until=200, timeout=180)
    finally:
        host.stop()

    assert len(results) == 200  # one result message per request message, no more
    by_id = {r["id"]: r for r in results if r.get("id") in valid or r.get("id") in invalid_with_id}
    for job_id, instances in valid.items():
        result = by_id[job_id]
        assert "error" not in result, result
        if "predictions_blob" in result:
            assert job_id.startswith("big-")
            predictions = queues.read_blob(result["predictions_blob"])["predictions"]
        else:
            predictions = result["predictions"]
        labels, probs = _expected(example_models["iris"], instances)
        assert [p["label"] for p in predictions] == labels
        got = np.array(
            [[p["probabilities"][s] for s in SPECIES] for p in predictions], dtype=np.float32
        )
        # Rows scored in one merged batch can differ from a lone run in the last float32 bit.
        np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-7)
        assert result["model"]["name"] == "flowers"
    for job_id in invalid_with_id:
        assert by_id[job_id]["error"]["type"] in {
            "BadRequest",
            "ValidationFailed",
            "InputBlobMissing",
        }, by_id[job_id]
    assert by_id["bad-range-1"]["error"]["detail"][0]["field"] == "instances[1].sepal_length"
    assert by_id["bad-blob-0"]["error"]["type"] == "InputBlobMissing"
    anonymous = [r for r in results if r not in by_id.values()]
    assert len(anonymous) == len(without_id)
    assert all(r["error"]["type"] == "BadRequest" and r["message_id"] for r in anonymous)
    assert "(Failed" not in host.output()  # nothing was retried: every bad message got its answer


def test_a_host_killed_mid_batch_loses_nothing(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, queues: EndpointQueues, prefix: str
) -> None:
    rng = np.random.default_rng(11)
    ids = [f"job-{i}" for i in range(60)]
    for job_id in ids:
        queues.send("flowers", _flowers(rng, 2), job_id)
    app = _app(tmp_path, prefix, max_batch=4, sleep_s=0.25)
    env = _env(azurite, models_in_blob, tmp_path, MLFN_HOST_QUEUE_LEASE_S="3")
    results: list[dict[str, Any]] = []

    first = LocalHost(app, env).start()
    try:
        _collect(queues, results, until=5, timeout=60)
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    finally:
        first.stop()
    before = {r["id"] for r in results}
    assert 0 < len(before) < len(ids), "the kill must land in the middle of the work"

    second = LocalHost(app, {**env, SLOW: "0"}).start()  # the rest at full speed
    try:
        _collect(queues, results, until=len(ids), timeout=120)
    finally:
        second.stop()
    assert all("error" not in r for r in results)
    assert {r["id"] for r in results} == set(ids)  # every message ends with exactly one result id
    # A redelivered message may answer twice, but always with the same predictions.
    for job_id in ids:
        answers = [
            json.dumps(r["predictions"], sort_keys=True) for r in results if r["id"] == job_id
        ]
        assert len(set(answers)) == 1


def test_a_store_outage_sends_messages_to_poison_after_max_dequeue_count_and_they_can_be_replayed(
    tmp_path: Path,
    azurite: AzuriteInfo,
    example_models: dict[str, Path],
    queues: EndpointQueues,
    prefix: str,
) -> None:
    store_dir = tmp_path / "model-store"
    store = azurite_script.start(store_dir / "data", store_dir / "log.txt")
    ContainerClient.from_connection_string(store.connection_string, "models").create_container()
    ContainerClient.from_connection_string(store.connection_string, "models").upload_blob(
        "iris.onnx", example_models["iris"].read_bytes()
    )
    ports = {"blob": store.blob_port, "queue": store.queue_port}
    store.stop()  # the model store goes down; the queue store (the session's Azurite) stays up

    env = _env(
        azurite,
        "models",
        tmp_path,
        MLFN_MODEL_STORE_CONNECTION=store.connection_string,
        MLFN_STORE_RETRIES="0",  # each delivery fails at once: the count of them is the point
        AzureFunctionsJobHost__extensions__queues__maxDequeueCount="3",
    )
    row = _flowers(np.random.default_rng(3), 1)
    queues.send("flowers", row, "during-outage")
    poison = queue_client(azurite.connection_string, f"{prefix}-requests-poison")
    host = LocalHost(_app(tmp_path, prefix), env).start()
    try:
        wait_for(lambda: bool(poison.peek_messages()), 90, "the message to reach the poison queue")
        assert host.output().count("Executed 'Functions.flowers_queue' (Failed") == 3
        assert "StoreUnavailable" in host.output() or "cannot be reached" in host.output()
        assert list(queues.receive()) == []  # no result, and no error result: it may yet succeed

        restored = azurite_script.start(store_dir / "data", store_dir / "log2.txt", ports=ports)
        try:
            (message,) = poison.receive_messages()
            queue_client(azurite.connection_string, f"{prefix}-requests").send_message(
                message.content
            )
            poison.delete_message(message)
            results: list[dict[str, Any]] = []
            _collect(queues, results, until=1, timeout=60)
        finally:
            restored.stop()
    finally:
        host.stop()
    (result,) = results
    assert result["id"] == "during-outage" and "error" not in result
    labels, _ = _expected(example_models["iris"], row)
    assert result["predictions"][0]["label"] == labels[0]
