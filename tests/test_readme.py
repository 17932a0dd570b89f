"""The README's code is code: its endpoint serves, as written."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import azure.functions as func

from runtime import config
from runtime.config import Settings
from runtime.registration import build_app
from tests.support import ROOT, make_app


def _endpoint_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## An endpoint") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'An endpoint' section should hold a python block"
    return match.group(1)


def test_the_readme_endpoint_serves_as_written(
    tmp_path: Path, example_models: dict[str, Path], isolated_imports: None
) -> None:
    app_dir = make_app(tmp_path / "app", {"flowers": _endpoint_snippet()})
    settings = Settings(
        model_store=str(example_models["iris"].parent), cache_dir=tmp_path / "cache"
    )
    functions = {
        f.get_function_name(): f.get_user_function()
        for f in build_app(app_dir / "functions", settings=settings).get_functions()
    }
    body = json.dumps(
        {
            "instances": [
                {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
            ]
        }
    )
    request = func.HttpRequest("POST", "http://localhost/api/flowers/predict", body=body.encode())
    response = asyncio.run(functions["flowers_predict"](req=request))
    assert response.status_code == 200, response.get_body()
    (prediction,) = json.loads(response.get_body())["predictions"]
    assert prediction["label"] == "virginica"
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5


def test_the_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Settings") : readme.index("## Deploy")]
    listed = set(re.findall(r"`([A-Za-z0-9_]+)`", section))
    assert [v for v, _, _ in config.describe() if v not in listed] == []
