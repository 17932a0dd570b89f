"""Anonymous readiness probes cost the store at most one check a model at a time, remembered
briefly, and never take the threads keyed requests load their models on (issue 22, item 7)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from runtime.config import Settings
from runtime.errors import ModelNotInStore
from runtime.models.readiness import Readiness
from runtime.models.registry import ModelRegistry
from tests.support import LocalHost, make_app, wait_for

KEY = "ready-test-key"
ENDPOINT = """
from pydantic import BaseModel
from runtime import Endpoint

class In(BaseModel):
    x: float

class Out(BaseModel):
    y: float

endpoint = Endpoint(In, Out, model=MODEL)

@endpoint.predict
def predict(rows, model):
    return [Out(y=r.x) for r in rows]
"""
PROBES = 40  # more than the 32 threads a default executor ever has


class SilentStore:
    """A store that takes connections and never answers (a hung account or proxy)."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.port = self._server.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            self.held.append(conn)

    def all_open(self) -> bool:
        """Whether every connection is still open at the caller's end: still waiting."""
        for conn in self.held:
            conn.setblocking(False)
            try:
                while conn.recv(65536):
                    pass  # the request it sent
                return False  # end of stream: the caller gave up
            except BlockingIOError:
                continue
        return True

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        self._server.close()
        self._thread.join()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_store() -> Iterator[SilentStore]:
    store = SilentStore()
    yield store
    store.close()


def test_a_keyed_predict_is_served_while_probes_wait_on_a_store_that_never_answers(
    tmp_path: Path, silent_store: SilentStore, example_models: dict[str, Path]
) -> None:
    # A SAS, as a URL without one asks for an identity, which plain HTTP cannot carry.
    stuck = repr(f"http://127.0.0.1:{silent_store.port}/c/model.onnx?sv=2024-05-04&sig=x")
    app = make_app(
        tmp_path / "app",
        {
            "stuck": ENDPOINT.replace("MODEL", stuck),
            "iris": ENDPOINT.replace("MODEL", repr(str(example_models["iris"]))),
        },
    )
    env = {
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
        "MLFN_FUNCTION_KEY": KEY,
        "MLFN_STORE_READ_TIMEOUT_S": "300",  # the store's check outlasts the test
        "MLFN_STORE_RETRIES": "0",
    }
    host = LocalHost(app, env, ("--no-queues",)).start()
    try:

        def probe(_: int) -> int:
            with httpx.Client(base_url=host.url, timeout=120) as http:
                return http.get("/api/v2/models/stuck/ready").status_code

        with ThreadPoolExecutor(PROBES) as pool:
            probes = pool.map(probe, range(PROBES))
            wait_for(lambda: bool(silent_store.held), 30, "the store check")
            with httpx.Client(base_url=host.url, timeout=30) as http:
                answer = http.post(
                    "/api/iris/predict",
                    json={"instances": [{"x": 1}]},
                    headers={"x-functions-key": KEY},
                )
            # Served while the store check still hangs: the model's load did not queue
            # behind the probes' store calls.
            assert answer.status_code == 200, answer.text
            assert silent_store.all_open()
            # Forty probes, one store check; each probe said "not ready" rather than hang.
            assert list(probes) == [503] * PROBES
        assert len(silent_store.held) == 1
    finally:
        host.stop()


def test_a_healthy_store_is_asked_once_for_many_probes(tmp_path: Path) -> None:
    registry = ModelRegistry(Settings.from_mapping({"MLFN_CACHE_DIR": str(tmp_path)}), tmp_path)
    readiness = Readiness(registry, memory_s=60)
    asked: list[str] = []

    def exists() -> None:
        asked.append("stat")

    def missing() -> None:
        asked.append("missing")
        raise ModelNotInStore("no model.onnx in the store")

    async def probes() -> tuple[list[bool], list[bool]]:
        found = await asyncio.gather(*(readiness.ready("a", exists) for _ in range(50)))
        absent = await asyncio.gather(*(readiness.ready("b", missing) for _ in range(50)))
        return list(found), list(absent)

    found, absent = asyncio.run(probes())
    assert found == [True] * 50 and absent == [False] * 50
    assert asked == ["stat", "missing"]  # the answers, good and bad, were remembered
