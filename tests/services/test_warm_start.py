"""MLFN_WARM_START: what the first request needs, started in the background as the app is
indexed. Indexing never fails or waits for it, its errors are said once and answered by the
request that needs what failed, and nothing it does is done twice."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.decorators.function_app import Function

from runtime.config import Settings
from runtime.registration import build_app
from tests.conftest import AzuriteInfo
from tests.support import copy_examples

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
UNREACHABLE = (
    "DefaultEndpointsProtocol=http;AccountName=x;AccountKey=eA==;"
    "BlobEndpoint=http://127.0.0.1:9/x;QueueEndpoint=http://127.0.0.1:9/x;"
)


def _predict(indexed: list[Function]) -> func.HttpResponse:
    functions = {f.get_function_name(): f.get_user_function() for f in indexed}
    body = json.dumps({"instances": [FLOWER]}).encode()
    request = func.HttpRequest("POST", "http://localhost/api/iris/predict", body=body)
    response: func.HttpResponse = asyncio.run(functions["iris_predict"](req=request))
    return response


def _warm_done() -> None:
    for thread in threading.enumerate():
        if thread.name == "mlfn-warm":
            thread.join(120)
            assert not thread.is_alive()


@pytest.mark.usefixtures("isolated_imports")
def test_an_unreachable_store_never_fails_indexing_and_the_first_request_gets_its_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlfn")
    settings = Settings.from_mapping(
        {
            "AzureWebJobsStorage": UNREACHABLE,
            "MLFN_MODEL_STORE": "az://models",
            "MLFN_CACHE_DIR": str(tmp_path / "cache"),
            "MLFN_WARM_START": "models",
        }
    )
    app = build_app(copy_examples(tmp_path / "app") / "functions", settings=settings)
    indexed = app.get_functions()  # once: the worker's indexing
    assert "iris_predict" in {f.get_function_name() for f in indexed}
    _warm_done()
    response = _predict(indexed)
    assert response.status_code == 503
    assert json.loads(response.get_body())["error"]["type"] == "StoreUnavailable"
    assert response.headers.get("Retry-After")
    said = [r for r in caplog.records if r.getMessage().startswith("preloading iris failed")]
    assert len(said) == 1


@pytest.mark.usefixtures("isolated_imports")
def test_a_first_request_during_the_warm_start_shares_its_one_download(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlfn.models")
    settings = Settings.from_mapping(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "MLFN_MODEL_STORE": f"az://{models_in_blob}",
            "MLFN_CACHE_DIR": str(tmp_path / "cache"),
            "MLFN_WARM_START": "models",
        }
    )
    app = build_app(copy_examples(tmp_path / "app") / "functions", settings=settings)
    response = _predict(app.get_functions())  # at once: during the warm start, or after it
    assert response.status_code == 200, response.get_body()
    _warm_done()
    loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model loaded")]
    assert sorted(line.split()[2] for line in loads) == ["name=diabetes", "name=iris"]
    assert all("cache=miss" in line for line in loads)


@pytest.mark.usefixtures("isolated_imports")
def test_imports_only_loads_no_model(
    tmp_path: Path, example_models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlfn")
    settings = Settings.from_mapping(
        {
            "MLFN_MODEL_STORE": str(example_models["iris"].parent),
            "MLFN_CACHE_DIR": str(tmp_path / "cache"),
            "MLFN_WARM_START": "imports",
        }
    )
    app = build_app(copy_examples(tmp_path / "app") / "functions", settings=settings)
    _warm_done()
    assert app.services.registry.resident() == {}  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unknown_value_is_refused_by_name() -> None:
    from runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="MLFN_WARM_START"):
        Settings.from_mapping({"MLFN_WARM_START": "always"})
