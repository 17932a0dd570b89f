"""Azure Storage clients, built in one place: bounded timeouts and retries, "create if missing",
one mapping of SDK errors, and a connection that is either a connection string or an account
URL (then the identity of the machine, through ``azure-identity``, authorises it).

The SDKs are imported on first use: importing the runtime must stay cheap for cold starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from runtime.config import Settings
from runtime.errors import BadRequest, ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient
    from azure.storage.queue import QueueClient, QueueServiceClient


class NotFound(Exception):
    """The service answered: no such container, blob or queue."""


def connection(setting: str, env: Mapping[str, str]) -> str:
    """The value of app setting ``setting`` (a binding's ``connection``), or an error naming it."""
    return require(env.get(setting, "").strip() or None, setting)


def require(conn: str | None, setting: str) -> str:
    """``conn``, read from ``setting``; a missing one is an error that names the setting."""
    if not conn:
        raise ConfigError(setting, "", "a storage connection string or account URL")
    return conn


def _options(settings: Settings, retry: type[Any]) -> dict[str, Any]:
    return {
        "connection_timeout": settings.store_connect_timeout_s,
        "read_timeout": settings.store_read_timeout_s,
        # The SDK's default policy backs off 15 s and more per try, so a caller hears nothing
        # for minutes. A short linear back-off says "unavailable" within seconds.
        "retry_policy": retry(backoff=1, random_jitter_range=1, retry_total=settings.store_retries),
    }


def _build(cls: Any, conn: str, setting: str, *names: str, options: dict[str, Any]) -> Any:
    """A client of ``cls`` for the account ``conn`` (a connection string, or an account URL
    that the machine's identity authorises), addressing ``names`` (container, blob or queue).
    Each client owns its transport, so ``with client:`` closes its connections."""
    if conn.startswith(("https://", "http://")):
        return cls(conn.rstrip("/"), *names, credential=identity(), **options)
    try:
        return cls.from_connection_string(conn, *names, **options)
    except ValueError as exc:
        raise ConfigError(setting, "<hidden>", f"a storage connection string ({exc})") from None


def container(conn: str, name: str, settings: Settings, setting: str) -> ContainerClient:
    """A container of the account ``conn``; ``setting`` names where ``conn`` came from."""
    from azure.storage.blob import ContainerClient, LinearRetry

    client: ContainerClient = _build(
        ContainerClient, conn, setting, name, options=_options(settings, LinearRetry)
    )
    return client


def blob(conn: str, container_name: str, path: str, settings: Settings, setting: str) -> BlobClient:
    from azure.storage.blob import BlobClient, LinearRetry

    client: BlobClient = _build(
        BlobClient, conn, setting, container_name, path, options=_options(settings, LinearRetry)
    )
    return client


def blob_from_url(url: str, settings: Settings) -> BlobClient:
    """A blob by URL: a SAS in its query authorises it, or else the machine's identity."""
    from urllib.parse import urlsplit

    from azure.storage.blob import BlobClient, LinearRetry

    credential = None if urlsplit(url).query else identity()
    return BlobClient.from_blob_url(url, credential=credential, **_options(settings, LinearRetry))


def queue(conn: str, name: str, settings: Settings, setting: str) -> QueueClient:
    from azure.storage.queue import LinearRetry, QueueClient

    client: QueueClient = _build(
        QueueClient, conn, setting, name, options=_options(settings, LinearRetry)
    )
    return client


def queue_service(conn: str, settings: Settings, setting: str) -> QueueServiceClient:
    """The queue service of an account: for a long-lived holder of many queues (a listener)."""
    from azure.storage.queue import LinearRetry, QueueServiceClient

    client: QueueServiceClient = _build(
        QueueServiceClient, conn, setting, options=_options(settings, LinearRetry)
    )
    return client


def create_if_missing(create: Callable[[], object]) -> None:
    """Run ``create`` (``create_container``, ``create_queue``); one that exists is fine."""
    from azure.core.exceptions import ResourceExistsError

    with suppress(ResourceExistsError):
        create()


@functools.cache
def identity() -> Any:
    """``DefaultAzureCredential``: managed identity on Azure, a developer login elsewhere.
    One per process, so its tokens are fetched once and refreshed, not per client."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ImportError(
            "storage without a key or SAS needs azure-identity: pip install 'mlfn[identity]' "
            "(and add azure-identity to requirements.txt for Azure)"
        ) from None
    return DefaultAzureCredential()


@contextmanager
def storage_errors(what: str, caller_errors: bool = False) -> Iterator[None]:
    """Map SDK exceptions: a missing resource to ``NotFound``, everything the network or the
    service did to ``StoreUnavailable`` (retryable) naming ``what`` was being accessed.
    ``caller_errors``: ``what`` came from a client, so the service refusing it (a 4xx other
    than a throttling 429) is the client's mistake, a ``BadRequest``, not an outage."""
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
        status = exc.status_code or 0
        if caller_errors and 400 <= status < 500 and status != 429:
            lines = str(exc).strip().splitlines()
            raise BadRequest(
                f"storage refused {what} (HTTP {status}): {lines[0] if lines else ''}",
                detail={"uri": what, "status": status},
            ) from exc
        # No status: the response broke off (e.g. a body cut short), after the SDK's retries.
        verb = f"failed with HTTP {status}" if status else "broke off"
        raise unavailable(verb, exc) from exc
