"""The iris example's functions, built as the Functions worker builds them and called in
process, its models in a store folder with a second version beside the first (iris-v2.onnx,
another regularisation): what the release tests serve."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import azure.functions as func

from runtime.config import Settings
from runtime.registration import build_app
from scripts.build_models import build_all, build_iris
from tests.support import copy_examples


def iris_store(store: Path) -> Path:
    """iris.onnx (and the other examples) and iris-v2.onnx in ``store``."""
    build_all(store)
    build_iris(store / "iris-v2.onnx", c=0.01)
    return store


class IrisApp:
    """One instance of the app on ``store``; ``check_s`` its MLFN_RELEASE_CHECK_S (long by
    default: a test says when the document is read again)."""

    def __init__(
        self, app_dir: Path, store: Path, cache: Path, check_s: float = 3600, **more: Any
    ) -> None:
        self.store = store
        settings = Settings(
            model_store=str(store), cache_dir=cache, release_check_s=check_s, **more
        )
        app = build_app(app_dir / "functions", settings=settings)
        self.services: Any = app.services  # type: ignore[attr-defined]
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

    def scorer(self) -> Any:
        return self.services.predict.scorer("iris")

    def close(self) -> None:
        self.loop.close()


def forget_endpoints() -> None:
    """An earlier app's ``functions`` package, so this one's endpoints are imported afresh."""
    for module in list(sys.modules):
        if module == "functions" or module.startswith("functions."):
            del sys.modules[module]


A = TypeVar("A", bound=IrisApp)


@contextlib.contextmanager
def running(kind: type[A], tmp: Path) -> Iterator[A]:
    """An app of ``kind`` with an app folder and a store of its own in ``tmp``, closed after."""
    forget_endpoints()
    made = kind(copy_examples(tmp / "app"), iris_store(tmp / "models"), tmp / "cache")
    try:
        yield made
    finally:
        made.close()
