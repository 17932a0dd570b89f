"""Small documents (a release) read and rewritten with compare-and-swap, the same behaviour from
every store: a local folder, a real Azurite and a moto server (real HTTP, boto3 as the client)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import PIPE

import pytest

from runtime.config import Settings, storage_account
from runtime.errors import ModelNotInStore, StoreConflict
from runtime.model_store import ModelSource, locate
from tests.conftest import AzuriteInfo
from tests.model_store.test_s3 import bucket, moto_endpoint  # noqa: F401 - fixtures
from tests.support import ROOT

Documents = Callable[[str], ModelSource]
"""A document by name, in the store under test."""


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azurite), "s3"])
def documents(request: pytest.FixtureRequest, tmp_path: Path) -> Documents:
    # Each store's fixtures are asked for only by its own runs: the local one needs no
    # emulator, and `make test-quick` deselects the Azurite one by its mark.
    if request.param == "local":
        return lambda name: locate(str(tmp_path / "docs" / name), Settings())
    if request.param == "azure":
        azurite: AzuriteInfo = request.getfixturevalue("azurite")
        container: str = request.getfixturevalue("container")
        conn = storage_account("MLFN_MODEL_STORE_CONNECTION", azurite.connection_string)
        settings = Settings(store_connection=conn, store_retries=0)
        return lambda name: locate(f"az://{container}/{name}", settings)
    endpoint: str = request.getfixturevalue("moto_endpoint")
    name_of_bucket: str = request.getfixturevalue("bucket")
    settings = Settings(s3_endpoint_url=endpoint, store_retries=0)
    return lambda name: locate(f"s3://{name_of_bucket}/{name}", settings)


def _names(doc: ModelSource) -> str:
    return re.escape(doc.uri)


def test_a_create_writes_the_document_once_and_a_second_create_conflicts(
    documents: Documents,
) -> None:
    doc = documents("release.json")
    created = doc.write(b'{"v": 1}', None)
    assert created.etag and created.size == 8 and created.uri == doc.uri
    with pytest.raises(StoreConflict, match=f"{_names(doc)} exists already"):
        doc.write(b'{"v": 2}', None)
    assert doc.read(1024) == (b'{"v": 1}', created)


def test_a_write_with_the_current_etag_replaces_it_and_gives_a_new_etag(
    documents: Documents,
) -> None:
    doc = documents("release.json")
    first = doc.write(b'{"v": 1}', None)
    second = doc.write(b'{"v": 2}', first.etag)
    assert second.etag and second.etag != first.etag
    assert doc.read(1024) == (b'{"v": 2}', second)
    assert doc.stat() == second  # the ETag a write gives is the one the store tells later


def test_a_write_with_a_stale_etag_conflicts_and_leaves_the_document_as_it_is(
    documents: Documents,
) -> None:
    doc = documents("release.json")
    first = doc.write(b'{"v": 1}', None)
    second = doc.write(b'{"v": 2}', first.etag)
    with pytest.raises(StoreConflict, match=f"{_names(doc)} changed since it was read") as err:
        doc.write(b'{"v": 3}', first.etag)
    assert err.value.status == 409 and err.value.detail == {"uri": doc.uri}
    assert doc.read(1024) == (b'{"v": 2}', second)


def test_same_size_writes_in_quick_succession_each_get_a_new_etag(documents: Documents) -> None:
    # Local ETags must not repeat though mtime is only as fine as the filesystem's clock and
    # a freed inode number comes back at once.
    doc = documents("release.json")
    etags = [doc.write(b"00", None).etag]
    for n in range(1, 20):
        etags.append(doc.write(f"{n:02}".encode(), etags[-1]).etag)
    assert len(set(etags)) == len(etags)
    for stale in etags[:-1]:
        with pytest.raises(StoreConflict):
            doc.write(b"xx", stale)
    assert doc.read(16) == (b"19", doc.stat())


def test_read_with_the_current_etag_is_none_and_with_a_stale_one_the_bytes(
    documents: Documents,
) -> None:
    doc = documents("release.json")
    first = doc.write(b'{"v": 1}', None)
    assert doc.read(1024, if_none_match=first.etag) is None
    second = doc.write(b'{"v": 2}', first.etag)
    assert doc.read(1024, if_none_match=first.etag) == (b'{"v": 2}', second)
    assert doc.read(1024, if_none_match=second.etag) is None


def test_an_empty_document_reads_as_no_bytes(documents: Documents) -> None:
    doc = documents("empty.json")
    created = doc.write(b"", None)
    assert doc.read(1024) == (b"", created)
    assert doc.read(1024, if_none_match=created.etag) is None
    assert doc.read(0) == (b"", created)


def test_a_missing_document_is_model_not_in_store_and_a_write_to_it_by_etag_conflicts(
    documents: Documents,
) -> None:
    doc = documents("absent.json")
    with pytest.raises(ModelNotInStore, match=_names(doc)):
        doc.read(1024)
    with pytest.raises(ModelNotInStore):
        doc.read(1024, if_none_match='"0x1"')
    with pytest.raises(StoreConflict, match=_names(doc)):
        doc.write(b"{}", '"0x1"')
    with pytest.raises(ModelNotInStore):
        doc.read(1024)  # the refused write left nothing behind


def test_a_document_over_max_bytes_is_a_value_error(documents: Documents) -> None:
    doc = documents("large.json")
    info = doc.write(b"x" * 100, None)
    with pytest.raises(ValueError, match=rf"{_names(doc)} holds more than 99 bytes"):
        doc.read(99)
    with pytest.raises(ValueError):
        doc.read(99, if_none_match="stale")
    assert doc.read(100) == (b"x" * 100, info)


def test_a_create_makes_the_folders_it_needs(tmp_path: Path) -> None:
    doc = locate(str(tmp_path / "a" / "b" / "release.json"), Settings())
    info = doc.write(b"{}", None)
    assert doc.read(16) == (b"{}", info)


@pytest.fixture
def fresh_container(azurite: AzuriteInfo) -> Iterator[str]:
    """A container name that does not exist yet; deleted after the test if it came to."""
    from azure.storage.blob import BlobServiceClient

    name = f"t{uuid.uuid4().hex[:20]}"
    yield name
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    if service.get_container_client(name).exists():
        service.delete_container(name)


def test_a_create_makes_the_container_it_needs(azurite: AzuriteInfo, fresh_container: str) -> None:
    conn = storage_account("MLFN_MODEL_STORE_CONNECTION", azurite.connection_string)
    doc = locate(f"az://{fresh_container}/releases/iris.json", Settings(store_connection=conn))
    with pytest.raises(StoreConflict):
        doc.write(b"{}", '"0x1"')  # by ETag: nothing there to replace, so nothing is created
    info = doc.write(b"{}", None)
    assert doc.read(16) == (b"{}", info)


WORKER = """
import sys
import time
from pathlib import Path
from runtime.errors import StoreConflict
from runtime.model_store.local import LocalFile

doc, ready, rounds = LocalFile(Path(sys.argv[1])), Path(sys.argv[2]), int(sys.argv[3])
ready.touch()
deadline = time.monotonic() + 30
while len(list(ready.parent.glob("ready-*"))) < 2:  # start together, to race
    assert time.monotonic() < deadline, "the other worker never started"
conflicts = 0
for _ in range(rounds):
    while True:
        got = doc.read(64)
        assert got is not None
        try:
            doc.write(str(int(got[0]) + 1).encode(), got[1].etag)
            break
        except StoreConflict:
            conflicts += 1
print(conflicts)
"""


def _counting(counter: Path, ready: Path, rounds: int) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", WORKER, str(counter), str(ready), str(rounds)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=PIPE, stderr=PIPE, text=True)


def test_two_processes_counting_by_compare_and_swap_lose_no_increment(tmp_path: Path) -> None:
    counter = tmp_path / "docs" / "counter"
    locate(str(counter), Settings()).write(b"0", None)
    rounds = 200
    workers = [_counting(counter, tmp_path / f"ready-{i}", rounds) for i in range(2)]
    try:
        outcomes = [w.communicate(timeout=120) for w in workers]
    finally:
        for w in workers:
            w.kill()  # a no-op for one that ended
            w.wait()
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outcomes]
    got = locate(str(counter), Settings()).read(64)
    assert got is not None and got[0] == str(2 * rounds).encode()
    # They lost races to each other (a hundred or more in 200 rounds, typically): they overlapped.
    assert sum(int(out) for out, _ in outcomes) > 0
