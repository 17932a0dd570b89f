"""Deadlines under ``mlfn serve``, over real HTTP: a request whose run outlasts its deadline
(its own header's, or its endpoint's ``Limits(timeout_ms=...)``) is answered 504 with
Retry-After at the deadline, while the run it left goes on; the endpoint then serves on."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from scripts.build_models import build_all
from tests.support import FLOWER_MODELS, LocalHost, make_app

SLOW = (
    FLOWER_MODELS
    + """
import time
from runtime import Endpoint, Limits, Model

endpoint = Endpoint(Flower, Out, model=Model("iris.onnx"), limits=Limits(timeout_ms=LIMIT))

@endpoint.predict
def predict(instances, model):
    time.sleep(instances[0].sepal_length / 10)  # 5.0: half a second
    return [Out(label=0, probabilities=[1.0, 0.0, 0.0]) for _ in instances]
"""
)
FAST = {"sepal_length": 0.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
SLOW_FLOWER = {**FAST, "sepal_length": 5.0}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    tmp = tmp_path_factory.mktemp("deadlines")
    build_all(tmp / "models")
    app = make_app(tmp / "app", {
        "slow": SLOW.replace("LIMIT", "None"), "bounded": SLOW.replace("LIMIT", "150"),
    })  # fmt: skip
    env = {"MLFN_MODEL_STORE": str(tmp / "models"), "MLFN_CACHE_DIR": str(tmp / "cache")}
    server = LocalHost(app, env, ("--no-queues",)).start()
    yield server
    server.stop()


def test_a_run_past_the_callers_deadline_is_answered_504_at_the_deadline(host: LocalHost) -> None:
    with host.client() as http:
        assert http.post("/api/slow/predict", json={"instances": [FAST]}).status_code == 200
        began = time.monotonic()
        late = http.post(
            "/api/slow/predict", json={"instances": [SLOW_FLOWER]},
            headers={"x-mlfn-timeout-ms": "100"},
        )  # fmt: skip
        answered_in = time.monotonic() - began
        after = http.post("/api/slow/predict", json={"instances": [FAST]})

    assert late.status_code == 504 and late.headers["retry-after"] == "1"
    assert late.json()["error"]["type"] == "DeadlineExceeded"
    assert answered_in < 0.45  # at its deadline: the run it left takes 0.5 s
    assert after.status_code == 200  # after the run it left ended
    # The function answered (504): Succeeded, as the Functions host says of any answer, and
    # the run it left, failing later on its passed deadline, is no error of anyone's.
    log = host.output()
    assert re.search(
        r"Executed 'Functions\.slow_predict' \(Succeeded, [^)]*\) \"POST /api/slow/predict\" 504",
        log,
    )
    assert "(Failed" not in log and "never retrieved" not in log


def test_an_endpoints_own_timeout_holds_for_requests_without_one(host: LocalHost) -> None:
    with host.client() as http:
        late = http.post("/api/bounded/predict", json={"instances": [SLOW_FLOWER]})
        bad = http.post(
            "/api/bounded/predict", json={"instances": [FAST]}, headers={"x-mlfn-timeout-ms": "-5"}
        )
    assert late.status_code == 504
    assert late.json()["error"]["detail"] == {"timeout_ms": 150}
    assert bad.status_code == 400 and "x-mlfn-timeout-ms" in bad.json()["error"]["message"]
