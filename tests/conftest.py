"""Fixtures: Azurite (the one `make test` started, else our own), models, blob containers."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import runtime  # noqa: F401 - before any test loads onnxruntime: its telemetry off (runtime/__init__)
from scripts import azurite as azurite_script
from scripts.build_models import build_all

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

# Every JVM writes /tmp/hsperfdata_USER for Java's monitoring tools and leaves that folder
# behind; Spark's scratch goes to java.io.tmpdir, /tmp unless told. pyspark's launcher and
# driver (the Spark tests, mlfn convert's Spark ML ones) read these: no trace in /tmp.
for _variable in ("SPARK_LAUNCHER_OPTS", "SPARK_SUBMIT_OPTS"):
    _options = f"-XX:-UsePerfData -Djava.io.tmpdir={tempfile.gettempdir()}"
    os.environ[_variable] = f"{os.environ.get(_variable, '')} {_options}".strip()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks for the quick part (``make test-quick``: ``-m "not e2e and not azurite"``), given
    from what a test uses, so no module has to remember them: ``azurite`` for a test that
    takes the emulator (the fixture), ``e2e`` for every test of a module that drives a local
    host (``mlfn serve`` in a subprocess, ``tests.support.LocalHost``).

    Under ``make test`` (pytest-xdist, ``--dist loadgroup``) an e2e module's tests stay in one
    worker, in order, so a host or a built wheel its fixtures share is made once."""
    from tests.support import LocalHost

    grouped = config.pluginmanager.hasplugin("xdist") and config.getoption("dist") == "loadgroup"
    for item in items:
        if "azurite" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.azurite)
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "LocalHost", None) is LocalHost:
            item.add_marker(pytest.mark.e2e)
            if grouped:
                item.add_marker(pytest.mark.xdist_group(module.__name__))


@dataclass(frozen=True)
class AzuriteInfo:
    connection_string: str
    blob_port: int
    queue_port: int
    log_path: Path


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteInfo]:
    if os.environ.get("AZURITE_LOG"):
        yield AzuriteInfo(
            os.environ["AzureWebJobsStorage"],  # noqa: SIM112 - Azure's own name
            int(os.environ["AZURITE_BLOB_PORT"]),
            int(os.environ["AZURITE_QUEUE_PORT"]),
            Path(os.environ["AZURITE_LOG"]),
        )
        return
    tmp = tmp_path_factory.mktemp("azurite")
    server = azurite_script.start(tmp / "data", tmp / "azurite.log")
    try:
        yield AzuriteInfo(
            server.connection_string, server.blob_port, server.queue_port, server.log_path
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture
def containers(azurite: AzuriteInfo) -> Iterator[tuple[ContainerClient, ContainerClient]]:
    """An endpoint's batch-files container (made) and its results container (made by the
    service that writes there), both removed after."""
    from azure.storage.blob import ContainerClient

    prefix = f"s{uuid.uuid4().hex[:12]}"
    files, results = (
        ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-{role}")
        for role in ("in", "out")
    )
    files.create_container()
    yield files, results
    for client in (files, results):
        if client.exists():
            client.delete_container()


@pytest.fixture
def container(azurite: AzuriteInfo) -> Iterator[str]:
    """A fresh, empty blob container for one test."""
    from azure.storage.blob import BlobServiceClient

    name = f"t{uuid.uuid4().hex[:20]}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    service.create_container(name)
    yield name
    service.delete_container(name)


@pytest.fixture
def models_in_blob(azurite: AzuriteInfo, container: str, example_models: dict[str, Path]) -> str:
    """The example models uploaded as ``az://CONTAINER/NAME.onnx``; returns the container."""
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    for name, path in example_models.items():
        client.upload_blob(f"{name}.onnx", path.read_bytes(), overwrite=True)
    return container


@pytest.fixture
def without_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow as if not installed (an optional extra): ``importlib.util.find_spec`` finds none,
    which is how mlfn asks before importing it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )


@pytest.fixture
def isolated_imports() -> Iterator[None]:
    """Each in-process test app imports its own ``function_app`` and ``functions`` package."""
    saved_path = list(sys.path)

    def purge() -> None:
        for name in list(sys.modules):
            if name in ("function_app", "functions") or name.startswith("functions."):
                del sys.modules[name]

    purge()
    yield
    purge()
    sys.path[:] = saved_path


@pytest.fixture
def logging_without_redaction() -> Iterator[None]:
    """Logging as a fresh process has it, with no redaction installed: installing replaces the
    process's record factory for good, and earlier tests (every ``build_app``, every ``mlfn``
    command run in-process) install it, so a test of who installs it could not fail. Both are
    put back after."""
    import logging

    from runtime import redact

    factory, installed = logging.getLogRecordFactory(), redact._installed
    logging.setLogRecordFactory(logging.LogRecord)
    redact._installed = False
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)
        redact._installed = installed
