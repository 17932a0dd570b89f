"""Fixtures for the worker harness: the repository's app in the Functions worker's own code
(in this process: one app per process), its models in Azurite, a dead model store, the
reporting app in fresh workers.

The worker's code (azure-functions-runtime) exists for Python 3.13 only: each test module
here is marked ``needs_worker_code``, so elsewhere its tests are reported skipped. Nothing
here imports it before a fixture runs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import AzuriteInfo
from tests.support import copy_examples
from tests.worker.apps import reporting_app
from tests.worker.harness import (
    Call,
    HttpCall,
    InvocationResponse,
    QueueCall,
    Worker,
    run_in_fresh_worker,
)

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
PATIENT = {  # in the diabetes endpoint's column order
    "age": 59.0,
    "sex": 2,
    "bmi": 32.1,
    "bp": 101.0,
    "s1": 157.0,
    "s2": 93.2,
    "s3": 38.0,
    "s4": 4.0,
    "s5": 4.8598,
    "s6": 87.0,
}
JSON = (("content-type", "application/json"),)

# Each test module here is marked with it: skipped, never passed, without the worker's code.
needs_worker_code = pytest.mark.skipif(
    importlib.util.find_spec("azure_functions_runtime") is None,
    reason="the Functions worker's code (azure-functions-runtime) is for Python 3.13+",
)


def predict_body(*instances: Mapping[str, object]) -> bytes:
    return json.dumps({"instances": list(instances)}).encode()


def app_settings(**settings: str) -> dict[str, str]:
    """This environment without mlfn's and the storage settings, plus ``settings``: what a
    worker or local host of one app sees (app settings are environment variables on Azure)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFN_", "AzureWebJobs"))}
    return {**env, **settings}


@pytest.fixture(scope="session")
def store(azurite: AzuriteInfo, example_models: dict[str, Path]) -> Iterator[str]:
    """A container holding the example models, for the whole session (the in-process worker
    imports its app, and so reads its settings, once)."""
    from azure.storage.blob import BlobServiceClient

    name = f"w{uuid.uuid4().hex[:20]}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(name)
    for model, path in example_models.items():
        container.upload_blob(f"{model}.onnx", path.read_bytes())
    yield name
    service.delete_container(name)


def example_settings(azurite: AzuriteInfo, store: str, cache: Path) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "MLFN_MODEL_STORE": f"az://{store}",
        "MLFN_CACHE_DIR": str(cache),
    }


def dead_store_settings(azurite: AzuriteInfo, store: str, cache: Path) -> dict[str, str]:
    """Settings whose storage account nothing listens on (port 9): every load is a 503, at
    once (no retries of a refused connection)."""
    settings = example_settings(azurite, store, cache)
    dead = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:9", azurite.connection_string)
    return {**settings, "AzureWebJobsStorage": dead, "MLFN_STORE_RETRIES": "0"}


@pytest.fixture(scope="session")
def example_worker(
    tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteInfo, store: str
) -> Iterator[Worker]:
    """The repository's app (function_app.py, functions/) in the worker's code, in this
    process, with the examples' models in Azurite. App settings are environment variables, as
    on Azure."""
    root = tmp_path_factory.mktemp("worker")
    app = copy_examples(root / "app")
    settings = example_settings(azurite, store, root / "cache")
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        with Worker(app) as worker:
            yield worker
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# The queue first: a message that meets a failure an HTTP request met moments ago would wait
# out its Retry-After (decision 13) before it tried again.
DEAD_STORE_CALLS: dict[str, Call] = {
    "queue": QueueCall("iris_queue", json.dumps({"id": "job-3", "instances": [FLOWER]})),
    "iris": HttpCall("POST", "/api/iris/predict", JSON, predict_body(FLOWER)),
    "diabetes": HttpCall("POST", "/api/diabetes/predict", JSON, predict_body(PATIENT)),
    "ready": HttpCall("GET", "/api/v2/models/iris/ready"),
}


@pytest.fixture(scope="session")
def dead_store_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_examples(tmp_path_factory.mktemp("dead") / "app")


@pytest.fixture(scope="session")
def dead_store(
    dead_store_app: Path, azurite: AzuriteInfo, store: str
) -> dict[str, InvocationResponse]:
    """DEAD_STORE_CALLS through a fresh worker whose model store cannot be reached."""
    settings = dead_store_settings(azurite, store, dead_store_app.parent / "cache")
    responses = run_in_fresh_worker(
        dead_store_app, list(DEAD_STORE_CALLS.values()), app_settings(**settings)
    )
    return dict(zip(DEAD_STORE_CALLS, responses, strict=True))


@pytest.fixture(scope="session")
def reporting(tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteInfo) -> Path:
    """The reporting app (tests/worker/apps.py) on disk."""
    return reporting_app(tmp_path_factory.mktemp("reporting") / "app")


@pytest.fixture(scope="session")
def reporting_settings(azurite: AzuriteInfo) -> dict[str, str]:
    return app_settings(
        AzureWebJobsStorage=azurite.connection_string,
        REPORT_QUEUE=f"reports{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture(scope="session")
def concurrent_reports(
    reporting: Path, reporting_settings: dict[str, str]
) -> list[InvocationResponse]:
    """Two sync and two async invocations at once, each waiting a little."""
    calls: list[Call] = [
        HttpCall("GET", "/api/sync/a?sleep=0.3"),
        HttpCall("GET", "/api/sync/b?sleep=0.3"),
        HttpCall("GET", "/api/async/c?sleep=0.3"),
        HttpCall("GET", "/api/async/d?sleep=0.3"),
    ]
    return run_in_fresh_worker(reporting, calls, reporting_settings, concurrently=True)
