"""A release followed by the app's own functions, called in process as the Functions worker
calls them: V1 predict split and sticky, V2's version routes, the bulk paths on the stable
version; the models are two real iris versions in a store folder."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.build_models import build_iris
from tests.releases.apps import IrisApp, running

FLOWER = {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 4.5, "petal_width": 1.5}


class App(IrisApp):
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


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running(App, tmp_path) as made:
        yield made


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


def _resident(app: App) -> set[str]:
    return set(app.services.registry.resident())


def test_a_label_pointed_at_other_bytes_serves_them_even_while_the_old_is_held(
    app: App, tmp_path: Path
) -> None:
    from runtime.digest import sha256_file

    app.predict()
    app.release(v2=1)
    old = app.predict()["model"]
    assert old["version"] == "v2"
    [old_key] = [k for k in _resident(app) if k.startswith("iris@v2#")]
    held = app.services.registry.use(old_key, app.scorer().release._versions["v2"].model_ref)
    held.__enter__()  # a request still running on the old bytes
    build_iris(app.store / "iris-v3.onnx", c=0.1)
    pinned = sha256_file(app.store / "iris-v3.onnx")
    doc = {"versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": "iris-v3.onnx", "sha256": pinned}},
           "stable": "v1", "weights": {"v2": 1}}  # fmt: skip
    (app.store / "iris.release.json").write_text(json.dumps(doc))
    app.scorer().release.follower.refresh()
    now = app.predict()["model"]
    assert (now["version"], now["sha256"]) == ("v2", pinned)
    assert old_key in _resident(app)  # held: unloaded once its request ends
    held.__exit__(None, None, None)
    assert old_key not in _resident(app)


def test_versions_a_release_drops_are_unloaded_and_the_code_model_when_it_takes_over(
    app: App,
) -> None:
    app.predict()
    assert _resident(app) == {"iris"}
    app.release(v1=50, v2=50)
    for i in range(40):
        app.predict(f"key-{i}")
    assert {k.split("#")[0] for k in _resident(app)} == {"iris@v1", "iris@v2"}
    doc = {"versions": {"v1": {"uri": "iris.onnx"}}, "stable": "v1"}
    (app.store / "iris.release.json").write_text(json.dumps(doc))
    app.scorer().release.follower.refresh()
    assert app.predict()["model"]["version"] == "v1"
    assert {k.split("#")[0] for k in _resident(app)} == {"iris@v1"}


def test_a_version_whose_load_fails_makes_queue_messages_wait_not_fail_again(app: App) -> None:
    app.predict()
    (app.store / "broken.onnx").write_bytes(b"not an onnx model")
    doc = {"versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": "broken.onnx"}},
           "stable": "v1", "weights": {"v2": 1}}  # fmt: skip
    (app.store / "iris.release.json").write_text(json.dumps(doc))
    app.scorer().release.follower.refresh()
    status, doc = app.call("iris_predict", "iris/predict", {"instances": [FLOWER]})
    assert status == 500 and doc["error"]["type"] == "ModelLoadFailed", doc
    assert app.services.predict.retry_in("iris") > 0  # the version's failed load, remembered


def test_v2_names_only_the_release_s_versions_and_describes_the_stable_one(app: App) -> None:
    app.predict()
    app.release(v2=1)  # every request to v2; v1 stays stable
    status, doc = app.call("v2_model_version_infer", "x", {}, model_name="iris", model_version="v9")
    assert status == 404 and "v9" in doc["error"]
    code_label = app.services.predict.scorer("iris").model_ref.version
    assert code_label is None  # the code's model declares none: its sha-based label is gone too
    meta = app.loop.run_until_complete(asyncio.to_thread(app.services.infer.metadata, "iris"))
    assert meta["versions"] == ["v1", "v2"]
    assert meta["parameters"]["sha256"] == _sha(app.store / "iris.onnx")  # the stable one
    ready = app.loop.run_until_complete(app.services.infer.ready("iris", "v2"))
    assert ready is True
    with pytest.raises(Exception, match="no version 'v9'"):
        app.loop.run_until_complete(app.services.infer.ready("iris", "v9"))


def _sha(path: Path) -> str:
    from runtime.digest import sha256_file

    return sha256_file(path)


def test_a_routed_request_tells_telemetry_its_version(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime import telemetry

    ended: list[str | None] = []

    class Recording(telemetry.Telemetry):
        on = True

        def end(self, invocation: Any, function: Any, status: Any, endpoint: Any = None) -> None:
            ended.append(invocation.version)

    app.predict()
    app.release(v2=1)
    app.predict()  # both versions' scorers made before the recording starts
    monkeypatch.setattr(telemetry, "_current", Recording())
    app.predict()
    assert ended == ["v2"]


DECLARED = """
from pydantic import BaseModel

from runtime import Endpoint, OnnxModel


class Flower(BaseModel):
    customer: str
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class Species(BaseModel):
    label: int


endpoint = Endpoint(
    Flower, Species, model="iris.onnx", route_key="customer",
    release={"versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": "iris-v2.onnx"}},
             "stable": "v1", "weights": {"v1": 50, "v2": 50}},
)


@endpoint.predict
def predict(flowers: list[Flower], model: OnnxModel) -> list[Species]:
    rows = [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width] for f in flowers]
    return [Species(label=k) for k in model.run({"input": rows})["label"].tolist()]
"""


def test_a_release_declared_in_code_serves_until_a_document_wins_and_a_field_keeps_a_customer(
    tmp_path: Path,
) -> None:
    from tests.releases.apps import forget_endpoints, iris_store
    from tests.support import make_app

    forget_endpoints()
    app = IrisApp(make_app(tmp_path / "app", {"iris": DECLARED}), iris_store(tmp_path / "m"),
                  tmp_path / "c")  # fmt: skip
    try:

        def version(customer: str) -> str:
            status, doc = app.call("iris_predict", "iris/predict",
                                   {"instances": [{"customer": customer, **FLOWER}]})  # fmt: skip
            assert status == 200, doc
            return str(doc["model"]["version"])

        by_customer = {c: version(c) for c in (f"c{i}" for i in range(40))}
        assert set(by_customer.values()) == {"v1", "v2"}  # the code's 50/50, no document
        assert all(version(c) == v for c, v in by_customer.items())  # each customer stays
        doc = {"versions": {"v1": {"uri": "iris.onnx"}}, "stable": "v1"}
        (app.store / "iris.release.json").write_text(json.dumps(doc))
        app.scorer().release.follower.refresh()
        assert {version(c) for c in by_customer} == {"v1"}  # the document wins
        (app.store / "iris.release.json").unlink()
        app.scorer().release.follower.refresh()
        assert {version(c) for c in by_customer} == {"v1", "v2"}  # the code's again
    finally:
        app.close()


def test_a_declared_release_is_checked_as_the_endpoint_is_declared() -> None:
    from pydantic import BaseModel

    from runtime import Endpoint
    from runtime.errors import ReleaseInvalid

    class Flower(BaseModel):
        sepal_length: float

    class Out(BaseModel):
        label: int

    with pytest.raises(ReleaseInvalid, match="stable"):
        Endpoint(Flower, Out, model="iris.onnx", release={"versions": {"v1": {"uri": "a"}},
                                                         "stable": "v2"})  # fmt: skip
    with pytest.raises(ValueError, match="route_key 'customer' is not a field"):
        Endpoint(Flower, Out, model="iris.onnx", route_key="customer")
