"""The services of an app are built once, each by the first request that needs it; every later
request reaches them without taking a lock (the warm path the Functions worker runs on every
invocation)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel

from runtime.config import Settings
from runtime.endpoint import BoundEndpoint, Endpoint
from runtime.services import Services
from tests.support import ROOT


class _In(BaseModel):
    x: float


class _Counted:
    """A lock that counts how often it is taken."""

    def __init__(self) -> None:
        self.taken = 0
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        self.taken += 1
        return self._lock.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.__exit__(kind, exc, tb)


def test_services_built_once_are_reached_without_a_lock(tmp_path: Path) -> None:
    endpoint = Endpoint(_In, _In, model="models/none.onnx")
    services = Services(
        [BoundEndpoint("echo", endpoint)], tmp_path, Settings(cache_dir=tmp_path / "cache")
    )
    first = services.predict  # builds it, under the lock
    _ = services.jobs, services.rows, services.batch, services.infer, services.columns
    counted = _Counted()
    services._lock = counted  # type: ignore[assignment]
    for _ in range(10):
        assert services.predict is first
        _ = services.jobs, services.rows, services.batch, services.infer, services.columns
    assert counted.taken == 0


def test_a_first_predict_builds_none_of_the_other_services(tmp_path: Path) -> None:
    endpoint = Endpoint(_In, _In, model="models/none.onnx")
    services = Services(
        [BoundEndpoint("echo", endpoint)], tmp_path, Settings(cache_dir=tmp_path / "cache")
    )
    _ = services.predict
    built = [services._infer, services._jobs, services._rows, services._batch, services._columns]
    assert built == [None] * 5
    assert services.batch._rows is services.rows  # built on their own first use, once
    assert services.jobs is services.jobs and services.infer is services.infer


def test_a_first_predict_imports_none_of_the_other_services() -> None:
    # A fresh interpreter: what this one has imported for other tests says nothing.
    code = (
        "import sys, function_app; function_app.app.services.predict; "
        "print(sorted(m for m in sys.modules if m.startswith('runtime.services.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    others = ("batch", "columns", "infer", "jobs", "rows", "slabs", "halving")
    assert [m for m in others if f"'runtime.services.{m}'" in out] == []
