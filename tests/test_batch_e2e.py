"""Batch files end to end: `mlfn serve` runs each endpoint's blob trigger against Azurite; a file
dropped into the batch container comes back scored, row by row, in order, whatever its rows,
and once per blob version, whatever happens to the host."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from runtime.protocol import batch
from tests.bombs import MiB, gzip_bomb, peak_rss, reset_peak_rss
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, app_env, make_app, wait_for

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")
IRIS = (Path(__file__).resolve().parents[1] / "functions" / "iris" / "endpoint.py").read_text()


# Set in a host's environment, the seconds its predict sleeps instead of the app's own.
SLOW = "TEST_PREDICT_SLEEP_S"


def _endpoint(prefix: str, max_batch: int = 256, sleep_s: float = 0.0) -> str:
    declared = (
        'endpoint = Endpoint(Flower, Species, model="iris.onnx", limits=Limits(max_batch_size=256))'
    )
    rows = "    rows = [[f.sepal_length"
    assert declared in IRIS and rows in IRIS, "the iris example changed; update this test"
    files = f'Batch(files="{prefix}-in", results="{prefix}-out")'
    source = IRIS.replace(
        declared,
        f'endpoint = Endpoint(Flower, Species, model="iris.onnx", limits=Limits(max_batch_size={max_batch}), batch={files})',
    ).replace(rows, f"    time.sleep(float(os.environ.get(SLOW, {sleep_s!r})))\n{rows}")
    return f"import os, time\nfrom runtime import Batch\nSLOW = {SLOW!r}\n" + source


@pytest.fixture
def prefix() -> str:
    return f"b{uuid.uuid4().hex[:12]}"


def _host(tmp_path: Path, azurite: AzuriteInfo, models: str, prefix: str, **kw: Any) -> LocalHost:
    extra = kw.pop("env", {})
    app = make_app(tmp_path / "app", {"flowers": _endpoint(prefix, **kw)})
    env = app_env(azurite.connection_string, models, tmp_path, MLFN_HOST_BLOB_SCAN_S="0.2", **extra)
    return LocalHost(app, env)


def _flowers(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    rows = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4)).round(2)
    return [dict(zip(FIELDS, map(float, row), strict=True)) for row in rows]


def _expected(model: Path, rows: list[dict[str, float]]) -> tuple[list[str], np.ndarray]:
    x = np.array([[r[f] for f in FIELDS] for r in rows], dtype=np.float32)
    labels, probs = ort.InferenceSession(str(model)).run(None, {"input": x})
    return [SPECIES[i] for i in labels], probs


def _upload(azurite: AzuriteInfo, container: str, path: str, data: bytes) -> str:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    return str(client.get_blob_client(path).upload_blob(data, overwrite=True)["etag"])


def _wait_summary(
    azurite: AzuriteInfo, prefix: str, path: str, etag: str, host: LocalHost, timeout: float
) -> dict[str, Any]:
    client = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-out")
    blob = client.get_blob_client(batch.summary_path(path, etag))
    found: dict[str, Any] = {}

    def ready() -> bool:
        if client.exists() and blob.exists():
            found.update(json.loads(blob.download_blob().readall()))
            return True
        assert host.process is not None and host.process.poll() is None, host.output()
        return False

    wait_for(ready, timeout, f"the summary of {path}")
    return found


def _download(azurite: AzuriteInfo, prefix: str, path: str) -> bytes:
    client = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-out")
    return client.download_blob(path).readall()


# Rows that cannot score, one of each kind, and where they go in the file.
BAD = [
    "{not json",
    json.dumps({"sepal_length": 5.0}),  # fields missing
    json.dumps({f: -1.0 for f in FIELDS}),  # out of range
    json.dumps({f: "wide" for f in FIELDS}),  # wrong type
    json.dumps([1, 2, 3, 4]),  # not an object
]


def _file_rows(rng: np.random.Generator, n: int) -> tuple[list[str | dict[str, float]], set[int]]:
    rows: list[str | dict[str, float]] = list(_flowers(rng, n))
    bad_at = set(rng.choice(n, size=n // 100, replace=False).tolist())  # 1 %
    for k, i in enumerate(sorted(bad_at)):
        rows[i] = BAD[k % len(BAD)]
    return rows, bad_at


def _check_predictions(
    got: list[dict[str, Any]], rows: list[Any], bad_at: set[int], model: Path
) -> None:
    good = [i for i in range(len(rows)) if i not in bad_at]
    labels, probs = _expected(model, [rows[i] for i in good])
    assert [g["row"] for g in got] == list(range(len(rows)))  # every row once, in order
    for k, i in enumerate(good):
        prediction = got[i]["prediction"]
        assert prediction["label"] == labels[k], i
        assert np.allclose([prediction["probabilities"][s] for s in SPECIES], probs[k], atol=1e-6)
    for i in bad_at:
        assert "prediction" not in got[i] and got[i]["error"]["type"], got[i]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_10000_row_file_comes_back_scored_row_by_row_in_order(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    example_models: dict[str, Path],
    prefix: str,
    fmt: str,
) -> None:
    rng = np.random.default_rng(14)
    rows, bad_at = _file_rows(rng, 10_000)
    if fmt == "jsonl":
        data = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        for r in rows:
            if isinstance(r, dict):
                writer.writerow([r[f] for f in FIELDS])
            else:  # CSV's own ways to be wrong: a short record, a non-number, an empty cell
                writer.writerow(
                    [["5.0", "3.1"], ["x", "1", "1", "1"], ["5", "", "1", "1"]][len(r) % 3]
                )
        data = out.getvalue().encode()
    path = f"nightly/2026-11-26/export.{fmt}"
    host = _host(tmp_path, azurite, models_in_blob, prefix).start()
    try:
        etag = _upload(azurite, f"{prefix}-in", path, data)
        summary = _wait_summary(azurite, prefix, path, etag, host, timeout=120)
        peak_kb = _peak_rss_kb(host)
    finally:
        host.stop()
    assert summary["rows"] == 10_000 and summary["errors"] == 100, summary
    assert summary["error"] is None and summary["model"]["name"] == "flowers"
    assert summary["output"] == batch.result_path(path, etag)
    output = _download(azurite, prefix, summary["output"])
    if fmt == "jsonl":
        got = [json.loads(line) for line in output.decode().splitlines()]
    else:
        got = [_csv_row(r) for r in csv.DictReader(io.StringIO(output.decode()))]
    _check_predictions(got, rows, bad_at, example_models["iris"])
    print(f"{fmt}: host peak RSS {peak_kb / 1024:.0f} MiB for a {len(data) / 1e6:.1f} MB file")


def _csv_row(record: dict[str, str]) -> dict[str, Any]:
    if record["error"]:
        return {"row": int(record["row"]), "error": json.loads(record["error"])}
    prediction = {"label": record["label"], "probabilities": json.loads(record["probabilities"])}
    return {"row": int(record["row"]), "prediction": prediction}


def _peak_rss_kb(host: LocalHost) -> int:
    assert host.process is not None
    status = Path(f"/proc/{host.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def test_memory_does_not_grow_with_the_file(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, prefix: str
) -> None:
    """A file four times larger than the first raises the host's peak RSS by far less than its
    own size: rows are streamed, not held. The first is already larger than every buffer (a
    4 MiB block staged, a 4 MiB range read), so what grows after it grows with the file.
    bench/ scores a 1,000,000-row file the same way and reports its peak.

    MALLOC_ARENA_MAX=2: without it glibc gives each new thread that allocates an arena of its
    own (up to 8 a core), and the host's peak grows by tens of MiB as more pool threads take
    part, whatever the file's size (measured: +30 MiB after this same pair of files). That is
    the allocator's doing, not the rows'; docs/batch.md says how to cap it on Azure."""
    rng = np.random.default_rng(3)
    small = "\n".join(json.dumps(r) for r in _flowers(rng, 100_000)).encode()
    large = "\n".join(json.dumps(r) for r in _flowers(rng, 400_000)).encode()
    host = _host(tmp_path, azurite, models_in_blob, prefix, env={"MALLOC_ARENA_MAX": "2"}).start()
    try:
        etag = _upload(azurite, f"{prefix}-in", "small.jsonl", small)
        _wait_summary(azurite, prefix, "small.jsonl", etag, host, timeout=120)
        after_small = _peak_rss_kb(host)
        etag = _upload(azurite, f"{prefix}-in", "large.jsonl", large)
        summary = _wait_summary(azurite, prefix, "large.jsonl", etag, host, timeout=300)
        after_large = _peak_rss_kb(host)
    finally:
        host.stop()
    assert summary["rows"] == 400_000 and summary["errors"] == 0
    grew_kb = after_large - after_small
    print(f"peak RSS {after_small / 1024:.0f} -> {after_large / 1024:.0f} MiB; "
          f"the large file is {len(large) / 2**20:.0f} MiB")  # fmt: skip
    assert grew_kb * 1024 < len(large) / 2, (grew_kb, len(large))


def _padded_rows(rows: list[dict[str, float]], row_bytes: int) -> Iterator[bytes]:
    """JSON Lines whose objects are padded with JSON's own insignificant whitespace to
    ``row_bytes`` a line: a gigabyte of input that costs a few thousand model rows."""
    for row in rows:
        text = json.dumps(row).encode()
        yield text[:-1] + b" " * (row_bytes - len(text) - 1) + b"}\n"


# 1 GiB, not less: the host's growth (25 MiB measured) is its fixed buffers (a 4 MiB range, a
# 4 MiB staged block, four slabs in flight), so only a file this size shows it is 1/16 of it.
@pytest.mark.slow
@pytest.mark.timeout(900)  # 1 GiB up and through the host: ~30 s here, more on a busy machine
def test_a_gigabyte_file_is_scored_without_the_host_holding_it(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    example_models: dict[str, Path],
    prefix: str,
) -> None:
    """1 GiB of JSON Lines, made on the fly (never held by the test either), streams through
    the host's range reads, slabs and staged blocks: its peak RSS grows by a small fraction of
    the file. The file is wide rows rather than millions of them, so the model's time stays
    small; test_memory_does_not_grow_with_the_file grows the row count instead."""
    rng = np.random.default_rng(1)
    row_bytes, n = 256 * 1024, 4096
    rows = _flowers(rng, n)
    host = _host(tmp_path, azurite, models_in_blob, prefix, env={"MALLOC_ARENA_MAX": "2"}).start()
    try:
        warm = "\n".join(json.dumps(r) for r in rows[:1000]).encode()
        etag = _upload(azurite, f"{prefix}-in", "warm.jsonl", warm)
        _wait_summary(azurite, prefix, "warm.jsonl", etag, host, timeout=120)
        warmed = _peak_rss_kb(host)
        client = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-in")
        blob = client.get_blob_client("huge.jsonl")
        made = blob.upload_blob(_padded_rows(rows, row_bytes), max_concurrency=2)
        summary = _wait_summary(azurite, prefix, "huge.jsonl", str(made["etag"]), host, 600)
        peak = _peak_rss_kb(host)
    finally:
        host.stop()
    size = blob.get_blob_properties().size
    assert size == row_bytes * n == 2**30
    assert summary["rows"] == n and summary["errors"] == 0, summary
    got = [json.loads(line) for line in _download(azurite, prefix, summary["output"]).splitlines()]
    _check_predictions(got, list(rows), set(), example_models["iris"])
    grew_kb = peak - warmed
    print(f"1 GiB file: host peak RSS {warmed / 1024:.0f} -> {peak / 1024:.0f} MiB")
    assert grew_kb * 1024 < size / 16, (warmed, peak)


def test_a_gzip_bomb_is_inflated_a_piece_at_a_time_by_the_host(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, prefix: str
) -> None:
    """A file stored with Content-Encoding gzip, 1 MB stored and 1 GiB inflated (one line of
    zeros between two rows): the host inflates it as it reads, the long line is its row's
    error, and the host's peak RSS grows by less than 64 MiB (the SDK inflated it whole:
    125 MB -> 2.95 GB, then InternalError). A gzip Parquet file, which must be read by
    seeking, is refused naming the encoding, once."""
    row = json.dumps(_flowers(np.random.default_rng(4), 1)[0]).encode()
    bomb = gzip_bomb(row + b"\n", 1024 * MiB, b"\n" + row + b"\n")
    host = _host(tmp_path, azurite, models_in_blob, prefix, env={"MALLOC_ARENA_MAX": "2"}).start()
    try:
        etag = _upload(azurite, f"{prefix}-in", "warm.jsonl", row)
        _wait_summary(azurite, prefix, "warm.jsonl", etag, host, timeout=120)
        assert host.process is not None
        before = reset_peak_rss(host.process.pid)
        client = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-in")
        gzipped = ContentSettings(content_encoding="gzip")
        made = client.upload_blob("bomb.jsonl", bomb, content_settings=gzipped)
        summary = _wait_summary(
            azurite, prefix, "bomb.jsonl", str(made.get_blob_properties().etag), host, 300
        )
        grew = peak_rss(host.process.pid) - before
        made = client.upload_blob("rows.parquet", bomb, content_settings=gzipped)
        refused = _wait_summary(
            azurite, prefix, "rows.parquet", str(made.get_blob_properties().etag), host, 60
        )
    finally:
        host.stop()
    assert (summary["rows"], summary["errors"], summary["error"]) == (3, 1, None), summary
    lines = [json.loads(x) for x in _download(azurite, prefix, summary["output"]).splitlines()]
    assert "longer than the limit" in lines[1]["error"]["message"]
    assert "prediction" in lines[0] and "prediction" in lines[2]
    print(f"gzip bomb: host peak RSS grew by {grew / MiB:.0f} MiB")
    assert grew < 64 * MiB, f"{grew / MiB:.0f} MiB"
    assert refused["error"]["type"] == "UnsupportedEncoding" and refused["output"] is None
    assert "Content-Encoding 'gzip'" in refused["error"]["message"]
    assert host.output().count("Executed 'Functions.flowers_batch' (Failed") == 0


def test_a_host_killed_mid_file_leaves_one_complete_output(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    example_models: dict[str, Path],
    prefix: str,
) -> None:
    rng = np.random.default_rng(5)
    rows = _flowers(rng, 60_000)
    data = "\n".join(json.dumps(r) for r in rows).encode()
    # Slow enough to be killed mid-file (50 ms a batch of 256: about 12 s for the file), after
    # the first 4 MiB block of its output was staged.
    host = _host(
        tmp_path, azurite, models_in_blob, prefix, sleep_s=0.05,
        env={"MLFN_HOST_BLOB_LEASE_S": "3"},
    ).start()  # fmt: skip
    etag = _upload(azurite, f"{prefix}-in", "kill.jsonl", data)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    out = service.get_container_client(f"{prefix}-out")
    output = out.get_blob_client(batch.result_path("kill.jsonl", etag))

    def staged() -> bool:
        assert host.process is not None and host.process.poll() is None, host.output()
        try:
            return bool(output.get_block_list("uncommitted")[1])
        except ResourceNotFoundError:
            return False

    wait_for(staged, 60, "a staged block of the output")
    assert host.process is not None
    host.process.send_signal(signal.SIGKILL)
    host.process.wait()
    assert not any(b.name == output.blob_name for b in out.list_blobs())  # nothing committed

    # The restarted host scores at full speed: what it proves is the one output, not a pace.
    again = LocalHost(host.app_dir, {**host.env, SLOW: "0"}).start()
    try:
        summary = _wait_summary(azurite, prefix, "kill.jsonl", etag, again, timeout=120)
    finally:
        again.stop()
    assert summary["rows"] == 60_000 and summary["errors"] == 0
    names = sorted(b.name for b in out.list_blobs())
    assert names == sorted([output.blob_name, batch.summary_path("kill.jsonl", etag)])
    got = [json.loads(line) for line in output.download_blob().readall().splitlines()]
    _check_predictions(got, list(rows), set(), example_models["iris"])


def test_an_overwritten_file_is_scored_again_and_a_redelivery_rewrites_the_same_output(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, prefix: str
) -> None:
    rng = np.random.default_rng(9)
    host = _host(tmp_path, azurite, models_in_blob, prefix).start()
    try:
        first = _upload(
            azurite, f"{prefix}-in", "a.jsonl", json.dumps(_flowers(rng, 1)[0]).encode()
        )
        _wait_summary(azurite, prefix, "a.jsonl", first, host, timeout=60)
        two = "\n".join(json.dumps(r) for r in _flowers(rng, 2)).encode()
        second = _upload(azurite, f"{prefix}-in", "a.jsonl", two)
        summary = _wait_summary(azurite, prefix, "a.jsonl", second, host, timeout=60)
    finally:
        host.stop()
    assert first != second and summary["rows"] == 2
    assert host.output().count("Executed 'Functions.flowers_batch' (Succeeded") == 2
    out = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-out")
    assert len(list(out.list_blobs())) == 4  # one output and one summary per version

    # A restarted host finds the receipts and runs nothing again: a file uploaded now is
    # scored by a scan whose listing has a.jsonl too, so once its summary is there, a.jsonl's
    # receipt was read (no sleep that a slow machine could outlast without scanning).
    again = LocalHost(host.app_dir, host.env).start()
    try:
        later = _upload(
            azurite, f"{prefix}-in", "b.jsonl", json.dumps(_flowers(rng, 1)[0]).encode()
        )
        _wait_summary(azurite, prefix, "b.jsonl", later, again, timeout=60)
    finally:
        again.stop()
    assert again.output().count("Executed 'Functions.flowers_batch'") == 1  # b.jsonl alone

    # An event delivered twice (as Event Grid may, at least once): with the receipt gone the
    # version runs again and rewrites the same two blobs, nothing beside them.
    hosts = ContainerClient.from_connection_string(azurite.connection_string, "azure-webjobs-hosts")
    for receipt in hosts.list_blobs(name_starts_with="blobreceipts/"):
        if receipt.name.endswith(f"/{prefix}-in/a.jsonl"):
            hosts.delete_blob(receipt.name)
    before = {b.name: b.etag for b in out.list_blobs()}
    third = LocalHost(host.app_dir, host.env).start()
    try:
        wait_for(lambda: {b.name: b.etag for b in out.list_blobs()} != before, 60, "a rewrite")
    finally:
        third.stop()
    after = {b.name: b.etag for b in out.list_blobs()}
    assert sorted(after) == sorted(before)
    assert (
        after[batch.result_path("a.jsonl", second)] != before[batch.result_path("a.jsonl", second)]
    )


def test_a_file_that_cannot_be_read_gets_an_error_summary(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, prefix: str
) -> None:
    host = _host(tmp_path, azurite, models_in_blob, prefix).start()
    try:
        unknown = _upload(azurite, f"{prefix}-in", "notes.txt", b"hello")
        empty_csv = _upload(azurite, f"{prefix}-in", "empty.csv", b"")
        array = _upload(azurite, f"{prefix}-in", "rows.json", b'[\n{"a": 1}\n]')
        broken = _upload(azurite, f"{prefix}-in", "cut.parquet", _cut_parquet())
        first = _wait_summary(azurite, prefix, "notes.txt", unknown, host, timeout=60)
        second = _wait_summary(azurite, prefix, "empty.csv", empty_csv, host, timeout=60)
        third = _wait_summary(azurite, prefix, "rows.json", array, host, timeout=60)
        fourth = _wait_summary(azurite, prefix, "cut.parquet", broken, host, timeout=60)
    finally:
        host.stop()
    assert first["error"]["type"] == "UnknownFormat" and first["output"] is None
    assert "extension" in first["error"]["message"]
    assert second["error"]["type"] == "FileUnreadable" and "header" in second["error"]["message"]
    assert third["error"]["type"] == "FileUnreadable" and "JSON array" in third["error"]["message"]
    assert fourth["error"]["type"] == "FileUnreadable" and fourth["output"] is None
    # Each was tried once: a file that cannot be read is not retried, nor poisoned.
    assert host.output().count("Executed 'Functions.flowers_batch' (Succeeded") == 4
    assert "Failed" not in host.output()


def _cut_parquet() -> bytes:
    """A Parquet file whose second row group is cut short: readable until it is not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _flowers(np.random.default_rng(2), 4000)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=1000)
    data = sink.getvalue()
    middle = len(data) // 2
    return data[:middle] + bytes(64) + data[middle + 64 :]


def test_mlfn_batch_scores_a_parquet_file_and_downloads_its_results(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    example_models: dict[str, Path],
    prefix: str,
) -> None:
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.support import MLFN

    rng = np.random.default_rng(11)
    rows: list[dict[str, Any]] = list(_flowers(rng, 2000))
    for i in (3, 500, 1999):
        rows[i] = {**rows[i], "petal_width": None}  # a null: the field is missing
    table = pa.Table.from_pylist(rows)
    source = tmp_path / "flowers.parquet"
    pq.write_table(table, source, row_group_size=300)
    host = _host(tmp_path, azurite, models_in_blob, prefix).start()
    try:
        done = subprocess.run(
            [str(MLFN), "batch", "flowers", str(source), "--wait", "120"],
            cwd=host.app_dir,
            env={**host.env, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        host.stop()
    assert done.returncode == 0, done.stderr + done.stdout
    assert "2000 rows, 3 errors" in done.stdout
    got = pq.read_table(tmp_path / "flowers.flowers.results.parquet")
    assert got.column_names == ["row", "label", "probabilities", "error"]
    records = got.to_pylist()
    assert [r["row"] for r in records] == list(range(2000))
    good = [i for i in range(2000) if i not in (3, 500, 1999)]
    labels, probs = _expected(example_models["iris"], [rows[i] for i in good])
    for k, i in enumerate(good):
        assert records[i]["label"] == labels[k] and records[i]["error"] is None
        assert np.allclose([dict(records[i]["probabilities"])[s] for s in SPECIES], probs[k])
    for i in (3, 500, 1999):
        assert records[i]["label"] is None
        assert json.loads(records[i]["error"])["detail"][0]["field"] == "petal_width"


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [("flowers", "cannot tell the file's format"), ("nobody", "no endpoint 'nobody'")],
)
def test_mlfn_batch_refuses_what_it_cannot_score_before_uploading(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_imports: None,
    endpoint: str,
    says: str,
) -> None:
    from click.testing import CliRunner

    from runtime.cli import main

    app = make_app(tmp_path / "app", {"flowers": _endpoint("refuse")})
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    monkeypatch.chdir(app)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    # `--wait` alone is the spelling: it parses (the default wait) and changes nothing.
    result = CliRunner().invoke(main, ["batch", endpoint, str(notes), "--wait"])
    assert result.exit_code == 1 and says in result.output
