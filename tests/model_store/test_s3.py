"""s3:// models against a moto server on loopback (real HTTP, boto3 as the client)."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.digest import sha256_file
from runtime.endpoint import Model
from runtime.errors import ModelNotInStore, StoreUnavailable
from runtime.model_store import locate
from runtime.models.registry import ModelRegistry
from tests.support import MLFN, free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import uuid

    import boto3

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)  # boto3 reads credentials from the environment only
    name = f"models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


def _settings(endpoint: str, tmp_path: Path) -> Settings:
    return Settings(s3_endpoint_url=endpoint, cache_dir=tmp_path / "cache", store_retries=0)


def test_mlfn_upload_to_s3_then_the_model_loads_and_revalidates(
    moto_endpoint: str, bucket: str, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    env = {**os.environ, **CREDENTIALS, "MLFN_S3_ENDPOINT_URL": moto_endpoint}
    done = subprocess.run(
        [str(MLFN), "upload", str(example_models["iris"]), f"s3://{bucket}/iris/v1.onnx"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    digest = sha256_file(example_models["iris"])
    assert done.returncode == 0, done.stderr
    assert f"sha256 {digest}" in done.stdout

    import boto3

    head = boto3.client("s3", endpoint_url=moto_endpoint).head_object(
        Bucket=bucket, Key="iris/v1.onnx"
    )
    assert head["Metadata"]["sha256"] == digest

    ref = Model(f"s3://{bucket}/iris/v1.onnx", sha256=digest)
    first = ModelRegistry(_settings(moto_endpoint, tmp_path), tmp_path).get("iris", ref)
    again = ModelRegistry(_settings(moto_endpoint, tmp_path), tmp_path).get("iris", ref)
    assert first.report is not None and first.report.cache == "miss"
    assert again.report is not None and again.report.cache == "revalidated"
    assert [o.name for o in again.outputs] == ["label", "probabilities"]


def test_a_missing_key_or_bucket_is_model_not_in_store(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    for uri in (f"s3://{bucket}/absent.onnx", "s3://no-such-bucket/x.onnx"):
        with pytest.raises(ModelNotInStore):
            locate(uri, _settings(moto_endpoint, tmp_path)).download(io.BytesIO())


def test_an_unreachable_s3_endpoint_is_store_unavailable(bucket: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        locate(f"s3://{bucket}/x.onnx", _settings(dead, tmp_path)).download(io.BytesIO())


def test_mlfn_upload_without_the_s3_extra_says_what_to_install(
    tmp_path: Path, example_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from click.testing import CliRunner

    from runtime.cli import main

    monkeypatch.setitem(sys.modules, "boto3", None)  # as if not installed: import fails
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["upload", str(example_models["iris"]), "s3://b/iris.onnx"])
    assert done.exit_code == 1 and done.exc_info is not None
    assert isinstance(done.exc_info[1], SystemExit)  # a one-line error, not a traceback
    assert "s3:// models needs boto3" in done.output and "pip install 'mlfn[s3]'" in done.output
