"""A release followed by the app's own functions, called in process as the Functions worker
calls them: V1 predict split and sticky, V2's version routes, the bulk paths on the stable
version; the models are two real iris versions in a store folder."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from runtime.config import Settings
from runtime.registration import build_app
from scripts.build_models import build_all, build_iris
from tests.support import copy_examples

FLOWER = {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 4.5, "petal_width": 1.5}


class App:
    def __init__(self, tmp: Path) -> None:
        for module in list(sys.modules):  # an earlier app's endpoints
            if module == "functions" or module.startswith("functions."):
                del sys.modules[module]
        self.store = tmp / "models"
        build_all(self.store)
        build_iris(self.store / "iris-v2.onnx", c=0.01)
        app_dir = copy_examples(tmp / "app")
        # A long check interval: each test says when the document is read again.
        settings = Settings(
            model_store=str(self.store), cache_dir=tmp / "cache", release_check_s=3600
        )
        app = build_app(app_dir / "functions", settings=settings)
        self.services = app.services  # type: ignore[attr-defined]
        self.functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}
        self.loop = asyncio.new_event_loop()

    def call(self, function: str, route: str, body: Any, headers: dict[str, str] | None = None,
             **params: str) -> tuple[int, Any]:  # fmt: skip
        request = func.HttpRequest(
            "POST", f"http://localhost/api/{route}", headers=headers or {},
            route_params=params, body=json.dumps(body).encode(),
        )  # fmt: skip
        response = self.loop.run_until_complete(self.functions[function](req=request))
        return response.status_code, json.loads(response.get_body())

    def predict(self, key: str | None = None) -> dict[str, Any]:
        headers = {"x-mlfn-route-key": key} if key else {}
        status, doc = self.call("iris_predict", "iris/predict", {"instances": [FLOWER]}, headers)
        assert status == 200, doc
        return doc  # type: ignore[no-any-return]

    def release(self, **weights: float) -> None:
        doc = {
            "versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": "iris-v2.onnx"}},
            "stable": "v1",
            "weights": weights,
        }
        (self.store / "iris.release.json").write_text(json.dumps(doc))
        self.scorer().release.follower.refresh()

    def scorer(self) -> Any:
        return self.services.predict.scorer("iris")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    made = App(tmp_path)
    try:
        yield made
    finally:
        made.loop.close()


def test_the_split_answers_by_version_and_a_route_key_keeps_its_version(app: App) -> None:
    before = app.predict()["model"]
    assert before["version"] == before["sha256"][:12]  # no document: the code's model
    app.release(v1=90, v2=10)
    versions = Counter(app.predict()["model"]["version"] for _ in range(5000))
    assert set(versions) == {"v1", "v2"} and 400 <= versions["v2"] <= 600, versions  # 10 +- 2 %
    answers = {json.dumps(app.predict("customer-7")) for _ in range(30)}
    assert len(answers) == 1  # one version, one answer
    # The two versions are different models: their answers differ, each its own.
    v1 = next(
        d for d in (app.predict(f"k{i}") for i in range(200)) if d["model"]["version"] == "v1"
    )
    v2 = next(
        d for d in (app.predict(f"k{i}") for i in range(200)) if d["model"]["version"] == "v2"
    )
    assert v1["predictions"] != v2["predictions"]
    assert v1["model"]["sha256"] != v2["model"]["sha256"]


def test_v2_reaches_each_version_by_name_and_lists_them(app: App) -> None:
    app.predict()
    app.release(v1=1)
    tensor = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                          "data": list(FLOWER.values())}]}  # fmt: skip
    answers = {}
    for version in ("v1", "v2"):
        status, doc = app.call(
            "v2_model_version_infer", f"v2/models/iris/versions/{version}/infer", tensor,
            model_name="iris", model_version=version,
        )  # fmt: skip
        assert status == 200, doc
        assert doc["model_version"] == version and doc["model_name"] == "iris"
        answers[version] = doc["outputs"]
    assert answers["v1"] != answers["v2"]
    status, doc = app.call(
        "v2_model_version_infer", "v2/models/iris/versions/v9/infer", tensor,
        model_name="iris", model_version="v9",
    )  # fmt: skip
    assert status == 404 and "v9" in doc["error"]
    status, doc = app.call("v2_model_infer", "v2/models/iris/infer", tensor, model_name="iris")
    assert status == 200 and doc["model_version"] == "v1"  # all traffic on v1


def test_bulk_work_scores_with_the_stable_version(app: App) -> None:
    app.predict()
    app.release(v2=1)  # every request to the canary, the stable version still v1
    assert app.predict()["model"]["version"] == "v2"
    scored = app.loop.run_until_complete(app.services.rows.score("iris", [FLOWER] * 3))
    assert scored.errors == 0 and scored.model is not None
    assert scored.model.version == "v1"
