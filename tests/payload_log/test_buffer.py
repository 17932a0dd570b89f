"""The payload log's buffer: bounded, never a wait for a request, nothing lost that it did not
count, what waits written at the end."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from runtime.config import Settings
from runtime.payload_log.buffer import PayloadLog
from runtime.payload_log.columns import Layout
from runtime.payload_log.destinations import Folder, destination
from runtime.payload_log.records import EndpointLog
from runtime.scored import ModelInfo
from tests.support import free_port


class In(BaseModel):
    x: float


class Out(BaseModel):
    y: float


MODEL = ModelInfo("e", "v1", "ab" * 32)


class Stuck:
    """A destination whose writes wait until ``release`` (a store that hangs)."""

    def __init__(self, inner: Folder) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, path: str, data: bytes) -> None:
        self.entered.set()
        assert self.release.wait(30)
        self.inner.write(path, data)

    def __str__(self) -> str:
        return "stuck"


def buffer(where: object, **bounds: int) -> PayloadLog:
    return PayloadLog(
        where,  # type: ignore[arg-type]
        {"e": Layout("e", In, Out)},
        flush_s=3600,
        flush_rows=bounds.get("flush_rows", 10_000),
        max_rows=bounds.get("max_rows", 1000),
        max_bytes=bounds.get("max_bytes", 1 << 30),
        on_exit=False,
    )


def offer(log: EndpointLog, i: int) -> None:
    log.scored("http", 0.0, [In(x=i)], [b'{"y":%d}' % i], MODEL, 1, 100, f"r{i}")


def written(root: Path) -> list[str]:
    return [
        rid for f in root.rglob("*.parquet") for rid in pq.read_table(f)["request_id"].to_pylist()
    ]


def test_a_hung_destination_never_holds_a_request_and_what_overflows_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = Stuck(Folder(tmp_path))
    payloads = buffer(stuck, flush_rows=10, max_rows=50)
    log = EndpointLog("e", 1.0, 0.0, payloads)
    for i in range(10):
        offer(log, i)  # a flush by size starts, and hangs in the destination
    assert stuck.entered.wait(10)

    with caplog.at_level(logging.WARNING, "mlfn.payload_log"):
        for i in range(10, 200):
            offer(log, i)  # returns at once though the flush hangs: else this test would hang

    assert payloads.dropped == 150  # 50 held (10 being written, 40 waiting), the rest dropped
    assert "records dropped" in caplog.text
    stuck.release.set()
    payloads.close()
    assert sorted(written(tmp_path), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(50)]
    assert payloads.written == 50 and payloads.offered == 200


def test_an_unreachable_account_keeps_the_records_and_writes_them_once_it_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    from runtime.config import connection as read_connection

    settings = Settings(storage_connection=read_connection("AzureWebJobsStorage", {
        "AzureWebJobsStorage": connection}), store_retries=0)  # fmt: skip
    payloads = buffer(destination("az://payload-log/x", settings))
    log = EndpointLog("e", 1.0, 0.0, payloads)
    offer(log, 1)

    with caplog.at_level(logging.WARNING, "mlfn.payload_log"):
        assert payloads.flush() is False

    assert "cannot be written" in caplog.text and "1 rows kept" in caplog.text
    payloads.destination = Folder(tmp_path)  # the account answers again
    assert payloads.flush() is True
    assert written(tmp_path) == ["r1"]


def test_closing_writes_what_waits_and_later_records_are_dropped(tmp_path: Path) -> None:
    payloads = buffer(Folder(tmp_path))
    log = EndpointLog("e", 1.0, 0.0, payloads)
    for i in range(5):
        offer(log, i)

    payloads.close()
    offer(log, 99)

    assert sorted(written(tmp_path)) == [f"r{i}" for i in range(5)]
    assert payloads.dropped == 1


def test_the_byte_bound_holds_as_the_row_bound_does(tmp_path: Path) -> None:
    payloads = buffer(Folder(tmp_path), max_bytes=1000)
    log = EndpointLog("e", 1.0, 0.0, payloads)
    for i in range(20):
        offer(log, i)  # 100 bytes each
    assert payloads.dropped == 10
    payloads.close()


class Refusing:
    """A destination that refuses every write (a 403 that never ends, say)."""

    def __init__(self) -> None:
        self.tries = 0

    def write(self, path: str, data: bytes) -> None:
        self.tries += 1
        raise OSError("refused")

    def __str__(self) -> str:
        return "refusing"


def test_a_file_refused_again_and_again_is_dropped_and_counted_not_kept_forever(
    tmp_path: Path,
) -> None:
    from runtime.payload_log.buffer import MAX_TRIES

    refusing = Refusing()
    payloads = buffer(refusing)
    log = EndpointLog("e", 1.0, 0.0, payloads)
    offer(log, 1)
    for _ in range(MAX_TRIES - 1):
        assert payloads.flush() is False
    assert payloads.flush() is True  # given up: nothing is held any more
    assert refusing.tries == MAX_TRIES and payloads.dropped == 1
    offer(log, 2)  # the buffer takes records again
    payloads.destination = Folder(tmp_path)
    assert payloads.flush() is True and written(tmp_path) == ["r2"]


def test_a_request_id_is_kept_to_its_first_128_characters(tmp_path: Path) -> None:
    payloads = buffer(Folder(tmp_path))
    log = EndpointLog("e", 1.0, 0.0, payloads)
    log.scored("http", 0.0, [In(x=1)], [b'{"y":1}'], MODEL, 1, 100, "x" * 100_000)
    payloads.close()
    assert written(tmp_path) == ["x" * 128]


SIGTERM_SCRIPT = """
import sys, threading
from pathlib import Path
from pydantic import BaseModel
from runtime.payload_log.buffer import PayloadLog
from runtime.payload_log.columns import Layout
from runtime.payload_log.destinations import Folder
from runtime.payload_log.records import EndpointLog
from runtime.scored import ModelInfo

class In(BaseModel):
    x: float

class Out(BaseModel):
    y: float

payloads = PayloadLog(Folder(Path(sys.argv[1])), {"e": Layout("e", In, Out)}, flush_s=3600,
                      flush_rows=10_000, max_rows=50, max_bytes=1 << 30)
log = EndpointLog("e", 1.0, 0.0, payloads)
model = ModelInfo("e", "v1", "ab" * 32)
print("offering", flush=True)
while True:  # the buffer full: every offer drops under the lock, SIGTERM lands in one
    log.scored("http", 0.0, [In(x=1)], [b'{"y":1}'], model, 1, 100, "r")
"""


def test_a_sigterm_while_requests_are_offered_ends_the_process_with_the_records_written(
    tmp_path: Path,
) -> None:
    import signal
    import subprocess
    import sys

    from tests.support import ROOT

    with subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path / "logs")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    ) as child:  # fmt: skip
        try:
            assert child.stdout is not None and child.stdout.readline() == b"offering\n"
            threading.Event().wait(0.3)  # the buffer fills, then every offer is a drop
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=30)  # ended, not hung on the lock the handler interrupted
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == -signal.SIGTERM
    assert len(written(tmp_path / "logs")) == 50
