"""Guardrails: a canary judged against the stable version over a window, and rolled back by a
conditional write that two instances cannot both make; in process, a canary that fails a fifth
of its requests and one far slower than the stable version are each rolled back within the
window, and a second instance on the same store then serves the stable version too."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from runtime.config import Settings
from runtime.model_store import locate
from runtime.registration import build_app
from runtime.releases.document import Guardrails, Release, Version, parse
from runtime.releases.guard import Figures, Summary, rollback, verdict
from scripts.build_models import build_all
from tests.models.onnx_builders import iris_canary
from tests.support import copy_examples

RAILS = Guardrails(
    window_s=5,
    min_requests=10,
    max_error_rate_increase=0.05,
    max_p99_ratio=2,
    min_p99_increase_ms=1,
)
GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
FAILS_ON_CANARY = {**GOOD, "sepal_length": 9.0}  # the failing canary's Gather is out of bounds


def _release(**weights: float) -> Release:
    versions = {k: Version(k, f"{k}.onnx") for k in ("v1", "v2")}
    return Release(versions, "v1", weights, guardrails=RAILS)


def test_figures_keep_the_window_and_tell_the_p99() -> None:
    figures = Figures(window_s=10)
    for i in range(100):
        figures.record(now=float(i), failed=i % 10 == 0, seconds=i / 1000)
    # At t=100 the window holds t=90..99: one failure (t=90) in ten.
    assert figures.summary(100.0) == Summary(10, 1, 0.099)
    assert figures.summary(200.0) == Summary(0, 0, 0.0)


def test_the_verdict_needs_enough_requests_and_a_margin() -> None:
    release = _release(v1=90, v2=10)
    fine = {"v1": Summary(100, 1, 0.010), "v2": Summary(50, 2, 0.015)}
    assert verdict(release, fine) is None
    few = {"v1": Summary(100, 0, 0.010), "v2": Summary(9, 9, 0.5)}
    assert verdict(release, few) is None  # nine requests judge nothing
    failing = {"v1": Summary(100, 1, 0.010), "v2": Summary(50, 10, 0.010)}
    canary, why = verdict(release, failing) or ("", "")
    assert canary == "v2" and "error rate 20.0% over 50 requests against 1.0%" in why
    slow = {"v1": Summary(100, 0, 0.010), "v2": Summary(50, 0, 0.030)}
    canary, why = verdict(release, slow) or ("", "")
    assert canary == "v2" and "p99 latency 30.0 ms against 10.0 ms" in why
    barely = {"v1": Summary(100, 0, 0.0002), "v2": Summary(50, 0, 0.0009)}
    assert verdict(release, barely) is None  # 4.5x, but 0.7 ms: under min_p99_increase_ms
    alone = {"v2": Summary(50, 10, 0.010)}  # no stable traffic: judged on its own errors
    assert verdict(_release(v2=1), alone) is not None
    assert verdict(Release(release.versions, "v1", {"v1": 9, "v2": 1}), failing) is None  # no rails


def test_two_instances_rolling_back_at_once_write_once(tmp_path: Path) -> None:
    document = tmp_path / "iris.release.json"
    document.write_bytes(_release(v1=50, v2=50).to_json())
    source = locate(str(document), Settings())
    results: list[bool] = []
    start = threading.Barrier(2)

    def judge() -> None:
        start.wait()
        results.append(rollback(source, "v2", "error rate too high", "iris"))

    threads = [threading.Thread(target=judge) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False, True]  # one wrote; the other found it done
    after = parse(document.read_bytes())
    assert after.live == [("v1", 1.0)]
    assert after.rolled_back is not None and after.rolled_back.version == "v2"
    assert after.rolled_back.reason == "error rate too high"
    assert after.guardrails == RAILS and after.versions == _release(v1=1).versions


class Instance:
    """The iris example's functions, built as the worker builds them, on a shared store."""

    def __init__(self, app_dir: Path, store: Path, cache: Path) -> None:
        settings = Settings(model_store=str(store), cache_dir=cache, release_check_s=0.2)
        app = build_app(app_dir / "functions", settings=settings)
        self.predict = next(
            f.get_user_function()
            for f in app.get_functions()
            if f.get_function_name() == "iris_predict"
        )
        self.loop = asyncio.new_event_loop()

    def call(self, flower: dict[str, float]) -> tuple[int, Any]:
        body = json.dumps({"instances": [flower]}).encode()
        request = func.HttpRequest(
            "POST", "http://localhost/api/iris/predict", headers={}, body=body
        )
        response = self.loop.run_until_complete(self.predict(req=request))
        return response.status_code, json.loads(response.get_body())


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[tuple[Instance, Instance, Path]]:
    for module in list(sys.modules):  # an earlier app's endpoints
        if module == "functions" or module.startswith("functions."):
            del sys.modules[module]
    store = tmp_path / "models"
    build_all(store)
    iris_canary(store / "failing.onnx", fail_from=8.0)
    iris_canary(store / "slow.onnx", slow=300)
    app_dir = copy_examples(tmp_path / "app")
    made = (Instance(app_dir, store, tmp_path / "a"), Instance(app_dir, store, tmp_path / "b"))
    try:
        yield made[0], made[1], store
    finally:
        for instance in made:
            instance.loop.close()


def _canary(store: Path, model: str) -> None:
    doc = {
        "versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": model}},
        "stable": "v1",
        "weights": {"v1": 50, "v2": 50},
        "guardrails": {"window_s": RAILS.window_s, "min_requests": RAILS.min_requests,
                       "max_error_rate_increase": RAILS.max_error_rate_increase,
                       "max_p99_ratio": RAILS.max_p99_ratio,
                       "min_p99_increase_ms": RAILS.min_p99_increase_ms},
    }  # fmt: skip
    (store / "iris.release.json").write_text(json.dumps(doc))


def _until_rolled_back(a: Instance, store: Path, flowers: list[dict[str, float]]) -> float:
    """Requests to ``a`` until the document says rolled back; the seconds that took."""
    started = time.monotonic()
    seen_v2 = False
    while time.monotonic() - started < RAILS.window_s:
        for flower in flowers:
            status, doc = a.call(flower)
            seen_v2 = seen_v2 or (status == 200 and doc["model"]["version"] == "v2")
        if parse((store / "iris.release.json").read_bytes()).rolled_back is not None:
            assert seen_v2, "the canary never answered"
            return time.monotonic() - started
    raise AssertionError(f"no rollback within the window of {RAILS.window_s} s")


def _serves_stable(instance: Instance) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        versions = {instance.call(GOOD)[1]["model"]["version"] for _ in range(20)}
        if versions == {"v1"}:
            return
        time.sleep(0.05)
    raise AssertionError("the instance still serves the canary")


@pytest.mark.parametrize(
    ("model", "flowers", "why"),
    [
        ("failing.onnx", [GOOD] * 4 + [FAILS_ON_CANARY], "error rate"),  # a fifth fail on v2
        ("slow.onnx", [GOOD], "p99 latency"),
    ],
)
def test_a_bad_canary_is_rolled_back_within_the_window_and_both_instances_follow(
    instances: tuple[Instance, Instance, Path],
    model: str,
    flowers: list[dict[str, float]],
    why: str,
) -> None:
    a, b, store = instances
    for instance in (a, b):  # both serving the code's model, then both read the release
        assert instance.call(GOOD)[0] == 200
    _canary(store, model)
    time.sleep(0.3)
    for instance in (a, b):
        instance.call(GOOD)  # starts the background read
    time.sleep(0.3)
    took = _until_rolled_back(a, store, flowers)
    after = parse((store / "iris.release.json").read_bytes())
    assert after.live == [("v1", 1.0)] and after.rolled_back is not None
    assert after.rolled_back.version == "v2" and why in after.rolled_back.reason
    assert took <= RAILS.window_s
    _serves_stable(a)
    _serves_stable(b)  # b saw none of it: it follows the document
