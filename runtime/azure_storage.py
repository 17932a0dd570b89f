"""Azure Storage clients with bounded timeouts and retries, and one mapping of SDK errors.

The SDKs are imported on first use: importing the runtime must stay cheap for cold starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from runtime.config import Settings
from runtime.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient


class NotFound(Exception):
    """The service answered: no such container, blob or queue."""


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any Storage client built from a connection string."""
    from azure.storage.blob import LinearRetry

    return {
        "connection_timeout": settings.store_connect_timeout_s,
        "read_timeout": settings.store_read_timeout_s,
        # The SDK's default policy backs off 15 s and more per try, so a caller hears nothing
        # for minutes. A short linear back-off says "unavailable" within seconds.
        "retry_policy": LinearRetry(
            backoff=1, random_jitter_range=1, retry_total=settings.store_retries
        ),
    }


def container_client(
    connection: str | None, container: str, settings: Settings, setting: str
) -> ContainerClient:
    """A container client; ``setting`` names where the connection string came from, for errors."""
    from azure.storage.blob import ContainerClient

    if not connection:
        raise ConfigError(setting, "", "a storage connection string")
    try:
        return ContainerClient.from_connection_string(
            connection, container, **client_options(settings)
        )
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
