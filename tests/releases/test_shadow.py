"""The shadow: it scores requests after they are answered, never changes an answer, and its
predictions are compared with the answer's row by row (labels must agree, floats may differ)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_iris

from runtime.releases.shadow import Compared, compare
from tests.releases.apps import IrisApp, running

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def _j(*docs: Any) -> list[bytes]:
    return [json.dumps(d).encode() for d in docs]


def test_rows_agree_on_labels_and_differ_by_their_floats() -> None:
    live = _j(
        {"label": "setosa", "p": {"a": 0.9, "b": 0.1}},
        {"label": "virginica", "p": {"a": 0.2, "b": 0.8}},
    )
    shadow = _j(
        {"label": "setosa", "p": {"a": 0.7, "b": 0.3}},
        {"label": "versicolor", "p": {"a": 0.25, "b": 0.75}},
    )
    found = compare(live, shadow)
    assert (found.rows, found.agreeing) == (2, 1)
    assert found.max_difference == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"k": 1}, {"k": 2}, False),  # whole numbers are labels: equal or not
        ({"k": True}, {"k": 1}, False),
        ({"k": [1.0, 2.0]}, {"k": [1.0]}, False),
        ({"k": "x"}, {"k": "x", "extra": 1}, False),
        ({"k": None}, {"k": None}, True),
        ({"k": float("nan")}, {"k": float("nan")}, True),
        ({"y": [0.5, 1.5]}, {"y": [0.5, 1.25]}, True),
    ],
)
def test_what_counts_as_agreeing(a: Any, b: Any, same: bool) -> None:
    assert compare(_j(a), _j(b)).agreeing == int(same)


class App(IrisApp):
    def scored(self, instances: list[dict[str, float]]) -> dict[str, Any]:
        status, doc = self.call("iris_predict", "iris/predict", {"instances": instances})
        assert status == 200, doc
        return doc  # type: ignore[no-any-return]

    def release(self, shadow: dict[str, Any] | None) -> None:
        doc: dict[str, Any] = {
            "versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": "iris-v2.onnx"}},
            "stable": "v1",
            "weights": {"v1": 1},
        }
        if shadow is not None:
            doc["shadow"] = shadow
        (self.store / "iris.release.json").write_text(json.dumps(doc))
        self.releasing.follower.refresh()

    @property
    def releasing(self) -> Any:
        return self.services.predict.scorer("iris").release

    def shadows_done(self) -> None:
        assert self.releasing.shadows.idle.wait(10)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running(App, tmp_path) as made:
        yield made


def _labels(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["label"], {"input": x})[0]  # type: ignore[no-any-return]


def test_a_full_shadow_never_changes_an_answer_and_counts_the_rows_it_disagrees_on(
    app: App,
) -> None:
    x = load_iris().data.astype(np.float32)
    flowers = [dict(zip(FIELDS, map(float, row), strict=True)) for row in x]
    app.scored(flowers[:1])
    app.release(None)
    alone = [app.scored(flowers[i : i + 10]) for i in range(0, 150, 10)]
    app.release({"version": "v2", "share": 1.0})
    shadowed = []
    for i in range(0, 150, 10):
        shadowed.append(app.scored(flowers[i : i + 10]))
        app.shadows_done()  # one at a time, so none is skipped as busy
    assert shadowed == alone  # byte for byte the live version's answers
    differing = int(
        (_labels(app.store / "iris.onnx", x) != _labels(app.store / "iris-v2.onnx", x)).sum()
    )
    assert differing > 0  # the two versions do disagree on some flowers
    tally = app.releasing.tally
    assert tally.total.rows == 150 and tally.skipped == 0 and tally.failed == 0
    assert tally.total.agreeing == 150 - differing
    assert tally.total.max_difference > 0.1  # c=0.01 flattens the probabilities


def test_a_shadow_share_scores_about_that_share(app: App) -> None:
    flower = dict(zip(FIELDS, (5.1, 3.5, 1.4, 0.2), strict=True))
    app.scored([flower])
    app.release({"version": "v2", "share": 0.25})
    for _ in range(400):
        app.scored([flower])
        app.shadows_done()
    assert 60 <= app.releasing.tally.total.rows <= 140  # 25 % of 400, +- 10 points
    assert isinstance(app.releasing.tally.total, Compared)


def test_a_busy_shadow_skips_what_would_queue_past_its_bound_and_batches_the_rest() -> None:
    import threading

    from runtime.releases.shadow import Tally
    from runtime.scored import ModelInfo, Scored
    from runtime.services.releasing import MAX_SHADOW_ROWS, Shadows

    gate, calls = threading.Event(), []

    class Version:  # a shadow version's scorer: held at the gate, then answers "same"
        version = "v2"

        def load(self) -> None:
            pass

        def run_sync(self, instances: list[Any]) -> Scored:
            calls.append(len(instances))
            gate.wait(10)
            return Scored([b'{"y":1}'] * len(instances), ModelInfo("iris", "v2", "0" * 64))

    shadows = Shadows(Tally("iris"), batch=64)
    scorer: Any = Version()
    shadows.offer(scorer, "v1", [object()] * 8, [b'{"y":1}'] * 8)  # taken by the thread, held
    while not calls:
        threading.Event().wait(0.001)
    for _ in range(MAX_SHADOW_ROWS // 8 + 5):  # the waiting room fills, then requests are skipped
        shadows.offer(scorer, "v1", [object()] * 8, [b'{"y":1}'] * 8)
    assert shadows.tally.skipped == 5
    gate.set()
    assert shadows.idle.wait(10)
    assert shadows.tally.total.rows == 8 + MAX_SHADOW_ROWS
    assert shadows.tally.total.agreeing == shadows.tally.total.rows
    assert calls[0] == 8 and max(calls[1:]) == 64  # waiting rows scored together


def test_a_shadow_whose_comparison_breaks_starts_again_with_the_next_request() -> None:
    from runtime.releases.shadow import Tally
    from runtime.scored import ModelInfo, Scored
    from runtime.services.releasing import Shadows

    class Short:  # answers one prediction too few: the comparison cannot pair them
        version = "v2"

        def load(self) -> None:
            pass

        def run_sync(self, instances: list[Any]) -> Scored:
            return Scored([b"{}"] * (len(instances) - 1), ModelInfo("iris", "v2", "0" * 64))

    class Fine(Short):
        def run_sync(self, instances: list[Any]) -> Scored:
            return Scored([b"{}"] * len(instances), ModelInfo("iris", "v2", "0" * 64))

    shadows = Shadows(Tally("iris"), batch=4)
    short: Any = Short()
    shadows.offer(short, "v1", [object()] * 2, [b"{}"] * 2)
    assert shadows.idle.wait(10)
    assert shadows.tally.failed == 1 and shadows.tally.total.rows == 0
    fine: Any = Fine()
    shadows.offer(fine, "v1", [object()] * 2, [b"{}"] * 2)
    assert shadows.idle.wait(10)
    assert shadows.tally.total.rows == 2 and shadows.tally.total.agreeing == 2
