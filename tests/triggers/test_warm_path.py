"""The warm HTTP predict, as the Functions worker runs it in process on Azure: the modules of
mlfn it goes through, traced, are the ones docs/architecture.md lists, and few (at most 9)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import azure.functions as func
import pytest

from runtime.config import Settings
from runtime.registration import build_app
from runtime.scheduling import placement
from tests.support import FLOWER_MODELS, ROOT, make_app

MODELS = (
    FLOWER_MODELS
    + """
from runtime import Columns, Endpoint, OnnxModel

endpoint = Endpoint(Flower, Out, model=MODEL)
"""
)

ROWS = (
    MODELS
    + """
@endpoint.predict
def predict(flowers, model: OnnxModel):
    x = [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width] for f in flowers]
    out = model.run({"input": x})
    return [Out(label=l, probabilities=p)
            for l, p in zip(out["label"].tolist(), out["probabilities"].tolist())]
"""
)

COLUMNS = (
    MODELS
    + """
import numpy as np

@endpoint.predict_columns
def predict(columns: Columns, model: OnnxModel) -> Columns:
    x = np.stack([columns[name] for name in Flower.model_fields], axis=1)
    out = model.run({"input": x})
    return {"label": out["label"], "probabilities": out["probabilities"]}
"""
)

BODY = b'{"instances": [{"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, ' + (
    b'"petal_width": 1.8}]}'
)


def _documented(form: str) -> list[str]:
    """The modules docs/architecture.md lists for the warm HTTP predict of ``form``."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    found = re.search(rf"<!-- warm path, {form}: (.*?) -->", text)
    assert found, f"docs/architecture.md lists no warm path for a {form} predict"
    return found.group(1).split()


def _traced(fn: Any) -> list[str]:
    """The modules of mlfn (not telemetry's flag, not the user's endpoint) whose code runs
    during one warm call, in the order first entered."""
    seen: dict[str, None] = {}

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module.startswith("runtime.") and not module.startswith("runtime.telemetry"):
                seen.setdefault(module.removeprefix("runtime."))

    loop = asyncio.new_event_loop()
    try:
        request = func.HttpRequest("POST", "http://localhost/api/iris/predict", body=BODY)
        for _ in range(50):  # loaded, and its runs measured: on the loop, as when warm
            assert loop.run_until_complete(fn(req=request)).status_code == 200
        sys.setprofile(profile)
        try:
            response = loop.run_until_complete(fn(req=request))
        finally:
            sys.setprofile(None)
        assert response.status_code == 200
    finally:
        loop.close()
    return list(seen)


# A columnar predict's instances are gathered into columns and its columns made into outputs:
# the columnar room is its one more.
@pytest.mark.parametrize(("form", "source", "most"), [("rows", ROWS, 8), ("columns", COLUMNS, 9)])
def test_a_warm_http_predict_crosses_the_documented_modules_and_few(
    tmp_path: Path,
    example_models: dict[str, Path],
    isolated_imports: None,
    form: str,
    source: str,
    most: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Runs on the loop, as a warm model's are, however busy the machine: a run in a worker
    # thread would hide from the trace (sys.setprofile is this thread's).
    monkeypatch.setattr(placement, "INLINE_BELOW_S", 60.0)
    app_dir = make_app(
        tmp_path / "app", {"iris": source.replace("MODEL", repr(str(example_models["iris"])))}
    )
    app = build_app(app_dir / "functions", settings=Settings(cache_dir=tmp_path / "cache"))
    functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}
    crossed = _traced(functions["iris_predict"])
    assert crossed == _documented(form)
    assert len(crossed) <= most, crossed
