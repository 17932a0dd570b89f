"""Azure Storage clients, built in one place: bounded timeouts and retries, "create if missing",
one mapping of SDK errors, and one reading of a connection setting (``runtime.config``'s
``Connection``: a connection string, or service URLs that an identity authorises through
``azure-identity``).

The SDKs are imported on first use: importing the runtime must stay cheap for cold starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from runtime.config import Connection, Identity, Settings
from runtime.config import connection as read_connection
from runtime.errors import BadRequest, ConfigError, NotFound, PackageMissing, StoreUnavailable

if TYPE_CHECKING:
    # Callers hold the clients built here; they name the type from here.
    from azure.storage.blob import BlobClient as BlobClient
    from azure.storage.blob import BlobServiceClient
    from azure.storage.blob import ContainerClient as ContainerClient
    from azure.storage.queue import QueueClient, QueueServiceClient


def connection(setting: str, env: Mapping[str, str]) -> Connection:
    """App setting ``setting`` (a binding's ``connection``) in either form, or an error naming
    it."""
    return require(read_connection(setting, env), setting)


def require(conn: Connection | None, setting: str) -> Connection:
    """``conn``, read from ``setting``; a missing one is an error that names the setting."""
    if conn is None:
        raise ConfigError(
            setting, "", f"a storage connection string, or {setting}__accountName (or "
            f"__blobServiceUri, __queueServiceUri) for an identity-based connection",
        )  # fmt: skip
    return conn


def _options(settings: Settings, retry: type[Any]) -> dict[str, Any]:
    return {
        "connection_timeout": settings.store_connect_timeout_s,
        "read_timeout": settings.store_read_timeout_s,
        # The SDK's default policy backs off 15 s and more per try, so a caller hears nothing
        # for minutes. A short linear back-off says "unavailable" within seconds.
        "retry_policy": retry(backoff=1, random_jitter_range=1, retry_total=settings.store_retries),
    }


def _build(cls: Any, conn: Connection, service: str, *names: str, options: dict[str, Any]) -> Any:
    """A client of ``cls`` (of the ``blob`` or ``queue`` service) for the account of ``conn``,
    addressing ``names`` (container, blob or queue). Each client owns its transport, so
    ``with client:`` closes its connections."""
    if conn.connection_string is None:
        url = conn.url(service)
        return cls(url, *names, credential=credential(conn.identity, conn.setting), **options)
    try:
        return cls.from_connection_string(conn.connection_string, *names, **options)
    except ValueError as exc:
        raise ConfigError(
            conn.setting, "<hidden>", f"a storage connection string ({exc})"
        ) from None


def container(conn: Connection, name: str, settings: Settings) -> ContainerClient:
    from azure.storage.blob import ContainerClient, LinearRetry

    client: ContainerClient = _build(
        ContainerClient, conn, "blob", name, options=_options(settings, LinearRetry)
    )
    return client


def blob(conn: Connection, container_name: str, path: str, settings: Settings) -> BlobClient:
    from azure.storage.blob import BlobClient, LinearRetry

    client: BlobClient = _build(
        BlobClient, conn, "blob", container_name, path, options=_options(settings, LinearRetry)
    )
    return client


def blob_service(conn: Connection, settings: Settings) -> BlobServiceClient:
    """The blob service of an account: for a long-lived holder of many containers."""
    from azure.storage.blob import BlobServiceClient, LinearRetry

    client: BlobServiceClient = _build(
        BlobServiceClient, conn, "blob", options=_options(settings, LinearRetry)
    )
    return client


def blob_from_url(url: str, settings: Settings) -> BlobClient:
    """A blob by URL: a SAS in its query authorises it, or else ``DefaultAzureCredential``."""
    from urllib.parse import urlsplit

    from azure.storage.blob import BlobClient, LinearRetry

    auth = None if urlsplit(url).query else credential(Identity(), "a blob URL without a SAS")
    return BlobClient.from_blob_url(url, credential=auth, **_options(settings, LinearRetry))


def queue(conn: Connection, name: str, settings: Settings) -> QueueClient:
    from azure.storage.queue import LinearRetry, QueueClient

    client: QueueClient = _build(
        QueueClient, conn, "queue", name, options=_options(settings, LinearRetry)
    )
    return client


def queue_service(conn: Connection, settings: Settings) -> QueueServiceClient:
    """The queue service of an account: for a long-lived holder of many queues (a listener)."""
    from azure.storage.queue import LinearRetry, QueueServiceClient

    client: QueueServiceClient = _build(
        QueueServiceClient, conn, "queue", options=_options(settings, LinearRetry)
    )
    return client


def upload_once(client: ContainerClient, name: str, data: bytes) -> None:
    """Write blob ``name`` once: one that exists already is this upload's own, committed by
    an earlier try whose answer was lost (the caller's names are never reused)."""
    create_if_missing(lambda: client.upload_blob(name, data, overwrite=False))


def create_if_missing(create: Callable[[], object]) -> None:
    """Run ``create`` (``create_container``, ``create_queue``); one that exists is fine."""
    from azure.core.exceptions import ResourceExistsError

    with suppress(ResourceExistsError):
        create()


def credential(identity: Identity | None, setting: str) -> Any:
    """The ``azure-identity`` credential of ``identity`` (``setting`` asked for it): the managed
    identity when ``__credential`` says so, the way Azure Functions authenticates, else
    ``DefaultAzureCredential`` (managed identity on Azure, a developer login elsewhere)."""
    try:
        return _credential(identity or Identity())
    except ImportError:
        raise PackageMissing(setting, "azure-identity", "identity") from None


@functools.cache
def _credential(identity: Identity) -> Any:
    # One per identity and process, so its tokens are fetched once and refreshed, not per client.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if identity.managed:
        return ManagedIdentityCredential(client_id=identity.client_id)
    return DefaultAzureCredential(managed_identity_client_id=identity.client_id)


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
        # With a response the service refused the key or token; without one, azure-identity
        # could not get a token (no identity, or its endpoint refused).
        verb = "refused the credentials" if exc.response is not None else "got no token"
        raise unavailable(verb, exc) from exc
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


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the storage SDK's (the network, the service, a body cut short): what
    a retry may cure, where any other exception is a bug."""
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError)


def unreachable(exc: BaseException) -> bool:
    """The service did not answer (no connection, or no whole response)."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    return isinstance(exc, ServiceRequestError | ServiceResponseError)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status the service answered with, 0 when the response broke off; None when
    ``exc`` is not the service's answer."""
    from azure.core.exceptions import HttpResponseError

    if not isinstance(exc, HttpResponseError):
        return None
    return exc.status_code or 0
