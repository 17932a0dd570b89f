"""The services of an app are built once, by the first request; every later request reaches
them without taking a lock (the warm path the Functions worker runs on every invocation)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel

from runtime.config import Settings
from runtime.endpoint import BoundEndpoint, Endpoint
from runtime.services import Services


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
    first = services.predict  # builds them, under the lock
    _ = services.columns
    counted = _Counted()
    services._lock = counted  # type: ignore[assignment]
    for _ in range(10):
        assert services.predict is first
        _ = services.jobs, services.rows, services.batch, services.infer, services.columns
    assert counted.taken == 0
