"""Helpers shared by the tests: test apps on disk, a local host in a subprocess, Azurite logs."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient
    from click.testing import Result

    from tests.conftest import AzuriteInfo

Mlfn = Callable[..., "Result"]

ROOT = Path(__file__).resolve().parents[1]
MLFN = Path(sys.executable).parent / "mlfn"
# The Functions worker's own indexing code (azure-functions-runtime) runs on Python 3.13 only;
# `make setup` builds this venv where a python3.13 exists.
WORKER_PYTHON = ROOT / ".venv-3.13" / "bin" / "python"
WORKER_PROBE = ROOT / "tests" / "worker_index_probe.py"
needs_worker = pytest.mark.skipif(
    not WORKER_PYTHON.exists(),
    reason="no Python 3.13 venv with azure-functions-runtime (.venv-3.13): python3.13 "
    "was not found by make setup",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_app(app_dir: Path, endpoints: dict[str, str]) -> Path:
    """An mlfn app like the repository's, with the given ``functions/NAME/endpoint.py`` texts."""
    app_dir.mkdir(parents=True, exist_ok=True)
    for name in ("function_app.py", "host.json"):
        shutil.copy(ROOT / name, app_dir / name)
    functions = app_dir / "functions"
    functions.mkdir(exist_ok=True)
    (functions / "__init__.py").write_text("")
    for name, text in endpoints.items():
        (functions / name).mkdir()
        (functions / name / "__init__.py").write_text("")
        (functions / name / "endpoint.py").write_text(text)
    return app_dir


# The iris example's input and output models, for test apps that write their own endpoint.
FLOWER_MODELS = """
from pydantic import BaseModel, Field

class Flower(BaseModel):
    sepal_length: float = Field(gt=0)
    sepal_width: float = Field(gt=0)
    petal_length: float = Field(gt=0)
    petal_width: float = Field(gt=0)

class Out(BaseModel):
    label: int
    probabilities: list[float]
"""


def copy_examples(app_dir: Path) -> Path:
    """The repository's own app (function_app.py, host.json, functions/) in ``app_dir``."""
    make_app(app_dir, {})
    shutil.rmtree(app_dir / "functions")
    shutil.copytree(
        ROOT / "functions", app_dir / "functions", ignore=shutil.ignore_patterns("__pycache__")
    )
    return app_dir


def declared_functions(app_dir: Path = ROOT) -> set[str]:
    """The names of the functions the app in ``app_dir`` declares: those on the FunctionApp
    its endpoints build, in this process (use the ``isolated_imports`` fixture)."""
    from runtime.config import Settings
    from runtime.registration import build_app

    app = build_app(app_dir / "functions", settings=Settings())
    return {f.get_function_name() for f in app.get_functions()}


@dataclass
class LocalHost:
    """``mlfn serve`` running in a subprocess, reached over real HTTP."""

    app_dir: Path
    env: dict[str, str]
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    mlfn: Path = MLFN  # another install's command (tests of the wheel)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> LocalHost:
        self.log_path = self.app_dir / f"host-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFN_", "AzureWebJobs"))}
        env.update(self.env)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.mlfn), "serve", "--port", str(self.port), *self.args],
                cwd=self.app_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlfn serve exited {self.process.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.01)  # fine-grained: benchmarks time this
        self.stop()
        raise RuntimeError(f"mlfn serve did not listen within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


def count_blob_gets(azurite: AzuriteInfo, container: str, blob: str) -> int:
    """GET requests for one blob that reached Azurite, from its access log once every
    request made before this call is in it (``settled_log``)."""
    pattern = re.compile(
        rf'"GET /devstoreaccount1/{re.escape(container)}/{re.escape(blob)}(\?[^ ]*)? HTTP'
    )
    return sum(1 for line in settled_log(azurite).splitlines() if pattern.search(line))


def settled_log(azurite: AzuriteInfo, timeout: float = 10) -> str:
    """Azurite's access log with every request answered before this call in it. Azurite writes
    a request's line a moment after it answers, in the order it answers: a marker request is
    sent and its line awaited, so a count read now misses none (too many as well as too few)."""
    from azure.storage.blob import ContainerClient

    marker = f"log-settled-{uuid.uuid4().hex}"
    ContainerClient.from_connection_string(azurite.connection_string, marker).exists()
    wait_for(
        lambda: marker in azurite.log_path.read_text(errors="replace"),
        timeout,
        "Azurite's access log to catch up",
        every=0.02,
    )
    return azurite.log_path.read_text(errors="replace")


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    every: float = 0.2,
    log: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds, with the
    end of ``log`` (a host's output, say) so a failure in CI says what the host was doing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    tail = f"\n--- the log's end ---\n{log()[-6000:]}" if log is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")


def queue_client(connection: str, name: str) -> QueueClient:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(connection, name)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def app_env(connection: str, container: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings for a host serving models from ``az://CONTAINER`` on the storage account
    ``connection``, with its own cache folder."""
    return {
        "AzureWebJobsStorage": connection,
        "MLFN_MODEL_STORE": f"az://{container}",
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
        **extra,
    }


def mlfn_in(app_dir: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Mlfn:
    """``mlfn ARGS`` typed in ``app_dir`` with ``env`` set, run in this process (a host stays a
    subprocess: the command reaches it over real HTTP and real queues)."""
    from click.testing import CliRunner

    from runtime import config
    from runtime.cli import main

    monkeypatch.chdir(app_dir)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Process-wide state the app's import sets, which a subprocess would start without.
    monkeypatch.setattr(config, "_current", None)
    monkeypatch.setattr(config, "_warned", False)

    def run(*args: str) -> Result:
        # Each command imports the app afresh, as its own process would: the app's
        # FunctionApp lists its functions only once (get_functions() is not idempotent).
        for name in list(sys.modules):
            if name in ("function_app", "functions") or name.startswith("functions."):
                del sys.modules[name]
        return CliRunner().invoke(main, list(args))

    return run
