"""Reading a storage connection setting the way the Functions host does: its own value (a
connection string) first, else the identity-based ``SETTING__property`` settings."""

from __future__ import annotations

import pytest

from runtime import config
from runtime.config import Connection, Identity, connection
from runtime.errors import ConfigError

S = "AzureWebJobsStorage"
KEYED = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0;"


def test_nothing_set_is_no_connection() -> None:
    assert connection(S, {"Other": "x", f"{S}__": ""}) is None


def test_the_connection_string_wins_over_identity_properties() -> None:
    env = {S: f" {KEYED} ", f"{S}__accountName": "other"}
    assert connection(S, env) == Connection(S, connection_string=KEYED)


def test_an_account_name_gives_the_blob_and_queue_endpoints_of_global_azure() -> None:
    assert connection(S, {f"{S}__accountName": "acct"}) == Connection(
        S,
        blob_url="https://acct.blob.core.windows.net",
        queue_url="https://acct.queue.core.windows.net",
        identity=Identity(),
    )


def test_explicit_service_uris_win_over_the_account_name() -> None:
    env = {
        f"{S}__accountName": "acct",
        f"{S}__blobServiceUri": "https://blob.example/acct/",
        f"{S}__queueServiceUri": "https://queue.example/acct",
    }
    found = connection(S, env)
    assert found is not None
    assert (found.blob_url, found.queue_url) == (
        "https://blob.example/acct",
        "https://queue.example/acct",
    )


def test_service_uri_is_the_older_blob_only_name_below_the_others() -> None:
    alone = connection(S, {f"{S}__serviceUri": "https://old.example/acct"})
    assert alone is not None
    assert (alone.blob_url, alone.queue_url) == ("https://old.example/acct", None)
    both = {
        f"{S}__serviceUri": "https://old.example",
        f"{S}__blobServiceUri": "https://new.example",
    }
    assert getattr(connection(S, both), "blob_url", None) == "https://new.example"
    # The host's own order: blobServiceUri, then accountName, then serviceUri.
    named = {f"{S}__serviceUri": "https://old.example", f"{S}__accountName": "acct"}
    assert getattr(connection(S, named), "blob_url", None) == "https://acct.blob.core.windows.net"


def test_property_names_are_case_insensitive_as_in_the_hosts_configuration() -> None:
    found = connection(S, {"azurewebjobsstorage__BLOBSERVICEURI": "https://b.example"})
    assert found is not None and found.blob_url == "https://b.example"


def test_a_blob_only_connection_used_for_queues_names_the_missing_queue_uri() -> None:
    found = connection(S, {f"{S}__blobServiceUri": "https://b.example"})
    assert found is not None and found.url("blob") == "https://b.example"
    with pytest.raises(ConfigError) as caught:
        found.url("queue")
    assert caught.value.key == f"{S}__queueServiceUri"
    assert f"{S}__accountName" in caught.value.message


@pytest.mark.parametrize(
    ("props", "identity"),
    [
        ({}, Identity()),
        ({"credential": "managedidentity"}, Identity(managed=True)),
        ({"credential": "ManagedIdentity", "clientId": "cid"}, Identity(True, "cid")),
        ({"clientId": "cid"}, Identity(False, "cid")),  # DefaultAzureCredential, that identity
    ],
)
def test_credential_and_client_id_choose_the_identity(
    props: dict[str, str], identity: Identity
) -> None:
    env = {f"{S}__accountName": "acct", **{f"{S}__{k}": v for k, v in props.items()}}
    assert getattr(connection(S, env), "identity", None) == identity


@pytest.mark.parametrize(
    ("env", "key", "shown"),
    [
        ({f"{S}__accountName": "acct", f"{S}__credential": "token"}, f"{S}__credential", True),
        ({f"{S}__accountName": "Not_An_Account"}, f"{S}__accountName", True),
        ({f"{S}__blobServiceUri": "http://b.example"}, f"{S}__blobServiceUri", True),
        ({f"{S}__queueServiceUri": "q.example"}, f"{S}__queueServiceUri", True),
        (
            {f"{S}__blobServiceUri": "https://b.example/?sv=1&sig=c2VjcmV0"},
            f"{S}__blobServiceUri",
            False,
        ),
        ({f"{S}__credential": "managedidentity"}, S, False),  # an identity, but no account
        ({S: "http://acct.blob.core.windows.net"}, S, True),
    ],
)
def test_an_unusable_property_is_an_error_naming_it(
    env: dict[str, str], key: str, shown: bool
) -> None:
    with pytest.raises(ConfigError) as caught:
        connection(S, env)
    assert caught.value.key == key
    assert "c2VjcmV0" not in caught.value.message  # a SAS signature never shows
    if shown:
        assert repr(env[key]) in caught.value.message


def test_the_older_account_url_value_is_a_blob_endpoint_for_default_azure_credential() -> None:
    found = connection(S, {S: "https://acct.blob.core.windows.net/"})
    assert found == Connection(
        S, blob_url="https://acct.blob.core.windows.net", identity=Identity()
    )


def test_a_connection_string_stays_out_of_the_connections_repr() -> None:
    assert "c2VjcmV0" not in repr(connection(S, {S: KEYED}))


def test_the_model_stores_identity_properties_are_known_settings_and_typos_are_named() -> None:
    store = config.Settings.variable("store_connection")
    env = {f"{store}__blobServiceUri": "https://b.example", f"{store}__credentail": "x"}
    assert config.unknown_settings(env) == [
        f"{store}__credentail is not a property of a storage connection and is ignored; "
        "known: accountName, blobServiceUri, serviceUri, queueServiceUri, tableServiceUri, "
        "credential, clientId"
    ]
