"""Azure Storage clients, built in one place: bounded timeouts and retries, "create if missing",
one mapping of SDK errors, and a connection that is either a connection string or an account
URL (then the identity of the machine, through ``azure-identity``, authorises it).

The SDKs are imported on first use: importing the runtime must stay cheap for cold starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from runtime.config import Settings
from runtime.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient, QueueServiceClient


class NotFound(Exception):
    """The service answered: no such container, blob or queue."""


def connection(setting: str, env: Mapping[str, str]) -> str:
    """The value of app setting ``setting`` (a binding's ``connection``), or an error naming it."""
    value = env.get(setting, "").strip()
    if not value:
        raise ConfigError(setting, "", "a storage connection string or account URL")
    return value


def _options(settings: Settings, retry: type[Any]) -> dict[str, Any]:
    return {
        "connection_timeout": settings.store_connect_timeout_s,
        "read_timeout": settings.store_read_timeout_s,
        # The SDK's default policy backs off 15 s and more per try, so a caller hears nothing
        # for minutes. A short linear back-off says "unavailable" within seconds.
        "retry_policy": retry(backoff=1, random_jitter_range=1, retry_total=settings.store_retries),
    }


def _is_url(conn: str) -> bool:
    return conn.startswith(("https://", "http://"))


def blob_service(conn: str, settings: Settings, setting: str) -> BlobServiceClient:
    """The blob service of an account; ``setting`` names where ``conn`` came from, for errors."""
    from azure.storage.blob import BlobServiceClient, LinearRetry

    options = _options(settings, LinearRetry)
    if _is_url(conn):
        return BlobServiceClient(conn.rstrip("/"), credential=identity(), **options)
    client: BlobServiceClient = _from_connection_string(BlobServiceClient, conn, setting, **options)
    return client


def container(conn: str, name: str, settings: Settings, setting: str) -> ContainerClient:
    return blob_service(conn, settings, setting).get_container_client(name)


def blob(conn: str, container_name: str, path: str, settings: Settings, setting: str) -> BlobClient:
    return blob_service(conn, settings, setting).get_blob_client(container_name, path)


def blob_from_url(url: str, settings: Settings, credential: Any = None) -> BlobClient:
    """A blob by URL: a SAS in its query, ``credential``, or else the machine's identity."""
    from urllib.parse import urlsplit

    from azure.storage.blob import BlobClient, LinearRetry

    if credential is None and not urlsplit(url).query:
        credential = identity()
    return BlobClient.from_blob_url(url, credential=credential, **_options(settings, LinearRetry))


def queue_service(conn: str, settings: Settings, setting: str) -> QueueServiceClient:
    from azure.storage.queue import LinearRetry, QueueServiceClient

    options = _options(settings, LinearRetry)
    if _is_url(conn):
        return QueueServiceClient(conn.rstrip("/"), credential=identity(), **options)
    client: QueueServiceClient = _from_connection_string(
        QueueServiceClient, conn, setting, **options
    )
    return client


def queue(conn: str, name: str, settings: Settings, setting: str) -> QueueClient:
    return queue_service(conn, settings, setting).get_queue_client(name)


def create_if_missing(create: Callable[[], object]) -> None:
    """Run ``create`` (``create_container``, ``create_queue``); one that exists is fine."""
    from azure.core.exceptions import ResourceExistsError

    with suppress(ResourceExistsError):
        create()


def identity() -> Any:
    """``DefaultAzureCredential``: managed identity on Azure, a developer login elsewhere."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ImportError(
            "storage without a key or SAS needs azure-identity: pip install 'mlfn[identity]' "
            "(and add azure-identity to requirements.txt for Azure)"
        ) from None
    return DefaultAzureCredential()


def _from_connection_string(cls: Any, conn: str, setting: str, **options: Any) -> Any:
    try:
        return cls.from_connection_string(conn, **options)
    except ValueError as exc:
        raise ConfigError(setting, "<hidden>", f"a storage connection string ({exc})") from None


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Map SDK exceptions: a missing resource to ``NotFound``, everything the network or the
    service did to ``StoreUnavailable`` (retryable) naming ``what`` was being accessed."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    def unavailable(verb: str, exc: BaseException) -> StoreUnavailable:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        return StoreUnavailable(f"storage for {what} {verb}: {reason}", detail={"uri": what})

    try:
        yield
    except ResourceNotFoundError as exc:
        raise NotFound(what) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise unavailable("cannot be reached", exc) from exc
    except ClientAuthenticationError as exc:
        raise unavailable("refused the credentials", exc) from exc
    except HttpResponseError as exc:
        # No status: the response broke off (e.g. a body cut short), after the SDK's retries.
        verb = f"failed with HTTP {exc.status_code}" if exc.status_code else "broke off"
        raise unavailable(verb, exc) from exc
