"""Storage connections as Azure Functions reads them from app settings: a connection string
in the setting itself, or the identity-based form, ``SETTING__blobServiceUri`` and the like.
Only settings are read here; ``runtime.storage.clients`` turns a connection into clients."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from runtime.errors import ConfigError


@dataclass(frozen=True)
class Identity:
    """Who an identity-based connection authenticates as: the managed identity (``managed``,
    from ``__credential=managedidentity``) or ``DefaultAzureCredential``; ``client_id`` names a
    user-assigned identity."""

    managed: bool = False
    client_id: str | None = None


@dataclass(frozen=True)
class Connection:
    """A storage account as app setting ``setting`` gives it: a connection string, or service
    URLs that ``identity`` authorises (Azure Functions' identity-based form, ``SETTING__...``)."""

    setting: str
    connection_string: str | None = field(default=None, repr=False)  # keys stay out of logs
    blob_url: str | None = None
    queue_url: str | None = None
    identity: Identity | None = None

    def url(self, service: str) -> str:
        """The ``blob`` or ``queue`` endpoint; one the setting does not give is an error naming
        the property that would."""
        found = self.blob_url if service == "blob" else self.queue_url
        if found is None:
            raise ConfigError(
                f"{self.setting}__{service}ServiceUri", "",
                f"the account's {service} endpoint (https://ACCOUNT.{service}.core.windows.net),"
                f" or {self.setting}__accountName, or a connection string in {self.setting}",
            )  # fmt: skip
        return found


CONNECTION_PROPERTIES = (
    "accountName", "blobServiceUri", "serviceUri", "queueServiceUri", "tableServiceUri",
    "credential", "clientId",
)  # fmt: skip
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")


def storage_account(name: str, raw: str) -> Connection:
    """The plain value of a connection setting: a connection string, or (mlfn's older form) the
    account's blob URL for ``DefaultAzureCredential``."""
    if raw.startswith(("https://", "http://")):
        return Connection(name, blob_url=_service_url(name, raw), identity=Identity())
    return Connection(name, connection_string=raw)


def connection(name: str, env: Mapping[str, str]) -> Connection | None:
    """Connection setting ``name``, read as the Functions host reads it: its own value (a
    connection string) when set, else its ``name__property`` settings (case-insensitive):
    ``blobServiceUri``, then ``accountName``, then the older blob-only ``serviceUri`` for blob;
    ``queueServiceUri``, then ``accountName`` for queues; ``credential=managedidentity`` and
    ``clientId`` for the identity. None when neither form is set."""
    raw = env.get(name, "").strip()
    if raw:
        return storage_account(name, raw)
    prefix = f"{name.lower()}__"
    props = {  # property -> (the variable as written, its value)
        key[len(prefix) :].lower(): (key, value.strip())
        for key, value in env.items()
        if key.lower().startswith(prefix) and value.strip()
    }
    if not props:
        return None

    def given(prop: str) -> str | None:
        return _service_url(*props[prop]) if prop in props else None

    account = props.get("accountname")
    if account and not _ACCOUNT_NAME.fullmatch(account[1]):
        raise ConfigError(*account, "a storage account name: 3 to 24 lowercase letters, digits")

    def of_account(service: str) -> str | None:
        return f"https://{account[1]}.{service}.core.windows.net" if account else None

    blob = given("blobserviceuri") or of_account("blob") or given("serviceuri")
    queue = given("queueserviceuri") or of_account("queue")
    if not (blob or queue):
        raise ConfigError(
            name, "", f"a connection string, or {name}__accountName, {name}__blobServiceUri "
            f"or {name}__queueServiceUri for an identity-based connection",
        )  # fmt: skip
    credential = props.get("credential")
    if credential and credential[1].lower() != "managedidentity":
        raise ConfigError(*credential, "managedidentity, or unset for DefaultAzureCredential")
    client_id = props["clientid"][1] if "clientid" in props else None
    return Connection(name, None, blob, queue, Identity(credential is not None, client_id))


def _service_url(key: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme != "https" or not parts.netloc or parts.query:
        # The SDKs send tokens only over TLS; a SAS belongs in a connection string instead.
        raise ConfigError(key, raw, "an https:// service URL, without a query")
    return raw.rstrip("/")
