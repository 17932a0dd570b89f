"""Model lifecycle seen from outside: `mlfn serve` over real HTTP while the model store goes
down and comes back, and the process's real memory under a budget."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from scripts import azurite as azurite_script
from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import heavy
from tests.support import LocalHost, app_env, copy_examples, make_app, wait_for

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
MB = 1024 * 1024


def test_store_down_is_503_and_back_up_is_served_without_a_restart(
    tmp_path: Path, azurite: AzuriteInfo, example_models: dict[str, Path]
) -> None:
    store_dir = tmp_path / "store"
    store = azurite_script.start(store_dir / "data", store_dir / "log1.txt")
    models = ContainerClient.from_connection_string(store.connection_string, "models")
    models.create_container()
    models.upload_blob("iris.onnx", example_models["iris"].read_bytes())
    ports = {"blob": store.blob_port, "queue": store.queue_port}
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "MLFN_MODEL_STORE_CONNECTION": store.connection_string,
        "MLFN_MODEL_STORE": "az://models",
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
    }
    store.stop()
    host = LocalHost(copy_examples(tmp_path / "app"), env, ("--no-queues",)).start()
    try:
        with host.client() as http:
            down = http.post("/api/iris/predict", json={"instances": [FLOWER]})
            assert down.status_code == 503, down.text
            assert int(down.headers["retry-after"]) > 0
            assert down.json()["error"]["type"] == "StoreUnavailable"
            restored = azurite_script.start(store_dir / "data", store_dir / "log2.txt", ports=ports)
            try:
                time.sleep(int(down.headers["retry-after"]))  # as a client honouring it would
                up = http.post("/api/iris/predict", json={"instances": [FLOWER]})
            finally:
                restored.stop()
        assert up.status_code == 200, up.text
        assert up.json()["predictions"][0]["label"] == "setosa"
    finally:
        host.stop()


HEAVY_ENDPOINT = """
from pydantic import BaseModel, Field
from runtime import Endpoint, OnnxModel

class Row(BaseModel):
    x: list[float] = Field(min_length=4, max_length=4)

class Out(BaseModel):
    y: float

endpoint = Endpoint(Row, Out, model=PATH)

@endpoint.predict
def predict(rows, model: OnnxModel):
    return [Out(y=y) for y in model.run({"x": [r.x for r in rows]})["y"].tolist()]
"""

IRIS_ENDPOINT = (
    Path(__file__).resolve().parents[1] / "functions" / "iris" / "endpoint.py"
).read_text()


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
def test_three_models_round_robin_stay_within_the_memory_budget_and_idle_unload_frees_them(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    budget_mb = 220  # two of these models, never three (see tests/models/test_memory.py)
    models = {
        n: heavy(tmp_path / f"{n}.onnx", seed, 64) for seed, n in enumerate(("ma", "mb", "mc"))
    }
    endpoints = {n: HEAVY_ENDPOINT.replace("PATH", repr(str(p))) for n, p in models.items()}
    endpoints["iris"] = IRIS_ENDPOINT.replace(
        'model="iris.onnx"', f"model={str(example_models['iris'])!r}"
    )
    env = {
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
        "MLFN_MEMORY_BUDGET_MB": str(budget_mb),
        "MLFN_IDLE_UNLOAD_S": "3",
    }
    host = LocalHost(make_app(tmp_path / "app", endpoints), env, ("--no-queues",)).start()
    assert host.process is not None
    try:
        with host.client() as http:
            assert http.post("/api/iris/predict", json={"instances": [FLOWER]}).status_code == 200
            baseline = _rss(host.process.pid)  # Python, onnxruntime, the runtime, one tiny model
            peaks = []
            for _ in range(3):
                for name in models:
                    r = http.post(f"/api/{name}/predict", json={"instances": [{"x": [1, 2, 3, 4]}]})
                    assert r.status_code == 200, r.text
                    peaks.append(_rss(host.process.pid))
            resident_lists = re.findall(r"resident=([\w,]*)", host.output())
            assert (
                max(len([n for n in r.split(",") if n.startswith("m")]) for r in resident_lists)
                == 2
            )
            # Stated overhead: one model file (64 MB). A load makes room for the file's size,
            # and the session measures a little more than that until the next eviction.
            assert max(peaks) <= baseline + (budget_mb + 64) * MB, (
                baseline / MB,
                [p / MB for p in peaks],
            )

            def nothing_resident() -> bool:
                states = re.findall(r"resident=([\w,]*)", host.output())
                return "reason=idle" in host.output() and states[-1] == ""

            wait_for(nothing_resident, 30, "idle unloads to empty memory")
            time.sleep(0.5)
            after_idle = _rss(host.process.pid)
            assert after_idle <= baseline + 64 * MB, (baseline / MB, after_idle / MB)
    finally:
        host.stop()


def test_preload_loads_named_models_at_start_before_any_request(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str
) -> None:
    env = app_env(azurite.connection_string, models_in_blob, tmp_path, MLFN_PRELOAD="iris, tulips")
    host = LocalHost(copy_examples(tmp_path / "app"), env, ("--no-queues",)).start()
    try:
        wait_for(lambda: "model loaded name=iris" in host.output(), 30, "iris to preload")
        assert "name=diabetes" not in host.output()
        assert "MLFN_PRELOAD names unknown endpoints ['tulips']" in host.output()
        assert "POST /api" not in host.output()  # no request was needed
    finally:
        host.stop()
