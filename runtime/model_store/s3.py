"""Models in S3 or an S3-compatible store (``s3://BUCKET/KEY``), through boto3.

boto3 is optional (``pip install 'mlfn[s3]'``) and imported on first use. Credentials come from
boto3's usual chain; ``MLFN_S3_ENDPOINT_URL`` points at an S3-compatible service.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from runtime.config import Settings
from runtime.errors import ExtraMissing, ModelNotInStore, StoreConflict, StoreUnavailable
from runtime.model_store.base import Progress, StoredObject

MISSING = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
# A conditional write that lost: If-Match or If-None-Match failed (412), or another
# conditional write to the key was in flight (409).
CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}


class S3Object:
    def __init__(self, bucket: str, key: str, settings: Settings) -> None:
        if not bucket or not key:
            raise ValueError(f"s3:// URIs need a bucket and a key: s3://{bucket}/{key}")
        self.bucket = bucket
        self.key = key
        self.uri = f"s3://{bucket}/{key}"
        self._settings = settings

    def local_path(self) -> Path | None:
        return None

    def stat(self) -> StoredObject:
        with self._errors():
            head = self._client().head_object(Bucket=self.bucket, Key=self.key)
        return StoredObject(self.uri, int(head["ContentLength"]), str(head["ETag"]))

    def download(
        self, into: BinaryIO, if_none_match: str | None = None, progress: Progress | None = None
    ) -> StoredObject | None:
        info = self.stat()
        if if_none_match is not None and info.etag == if_none_match:
            return None
        from boto3.s3.transfer import TransferConfig

        with self._errors():
            done = [0]

            def callback(chunk: int) -> None:
                done[0] += chunk
                if progress:
                    progress(done[0], info.size)

            self._client().download_fileobj(
                self.bucket,
                self.key,
                into,
                Config=TransferConfig(max_concurrency=4),
                Callback=callback,
            )
        # A ranged, parallel download must not mix two versions of the object, and the
        # transfer manager takes no IfMatch: check that the object did not change meanwhile.
        if self.stat().etag != info.etag:
            raise StoreUnavailable(
                f"{self.uri} changed while it was downloaded; try again", detail={"uri": self.uri}
            )
        return info

    def upload(
        self, path: Path, on_progress: Progress | None = None, sha256: str | None = None
    ) -> None:
        total = path.stat().st_size
        done = [0]

        def callback(chunk: int) -> None:
            done[0] += chunk
            if on_progress:
                on_progress(done[0], total)

        with self._errors():
            self._client().upload_file(
                str(path), self.bucket, self.key,
                ExtraArgs={"Metadata": {"sha256": sha256}} if sha256 else None,
                Callback=callback,
            )  # fmt: skip

    def read(
        self, max_bytes: int, if_none_match: str | None = None
    ) -> tuple[bytes, StoredObject] | None:
        ClientError = _botocore().ClientError

        condition = {"IfNoneMatch": if_none_match} if if_none_match is not None else {}
        with self._errors():
            try:
                got = self._client().get_object(Bucket=self.bucket, Key=self.key, **condition)
            except ClientError as exc:
                if _status(exc) == 304:
                    return None
                raise
            body = got["Body"]
            try:
                # The headers are in, the body is not: refuse before reading any of it.
                if int(got["ContentLength"]) > max_bytes:
                    raise ValueError(f"{self.uri} holds more than {max_bytes} bytes")
                data: bytes = body.read(max_bytes + 1)
            finally:
                body.close()
        if len(data) > max_bytes:
            raise ValueError(f"{self.uri} holds more than {max_bytes} bytes")
        return data, StoredObject(self.uri, len(data), str(got["ETag"]))

    def write(self, data: bytes, if_match: str | None) -> StoredObject:
        ClientError = _botocore().ClientError

        condition = {"IfMatch": if_match} if if_match is not None else {"IfNoneMatch": "*"}
        with self._errors():
            try:
                put = self._client().put_object(
                    Bucket=self.bucket, Key=self.key, Body=data, **condition
                )
            except ClientError as exc:
                code = _code(exc)
                # S3 answers If-Match on a key that is gone with NoSuchKey: a lost race too.
                if code in CONFLICT or (if_match is not None and code == "NoSuchKey"):
                    raise StoreConflict(self.uri, if_match) from None
                raise
        return StoredObject(self.uri, len(data), str(put["ETag"]))

    def _client(self) -> Any:
        _botocore()
        import boto3
        from botocore.config import Config

        s = self._settings
        config = Config(
            connect_timeout=s.store_connect_timeout_s,
            read_timeout=s.store_read_timeout_s,
            retries={"max_attempts": s.store_retries + 1, "mode": "standard"},
        )
        return boto3.client("s3", endpoint_url=s.s3_endpoint_url, config=config)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        errors = _botocore()
        BotoCoreError, ClientError = errors.BotoCoreError, errors.ClientError

        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code in MISSING:
                raise ModelNotInStore(self.uri) from None
            raise StoreUnavailable(
                f"s3 store for {self.uri} failed ({code}): {exc}", detail={"uri": self.uri}
            ) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(
                f"s3 store for {self.uri} cannot be reached: {exc}", detail={"uri": self.uri}
            ) from exc


def _code(exc: Any) -> str:
    """The error code of a botocore ``ClientError``."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int:
    """The HTTP status of a botocore ``ClientError``."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _botocore() -> Any:
    """botocore's exceptions, or ExtraMissing (one line at the prompt, an error a request can
    carry) where the s3 extra is not installed."""
    try:
        import boto3  # noqa: F401 - the client comes from it
        import botocore.exceptions
    except ImportError:
        raise ExtraMissing("s3:// models", "boto3", "s3") from None
    return botocore.exceptions
