"""Identity-based storage connections for real: Azurite over HTTPS taking bearer tokens
(``--oauth basic``), and a managed identity endpoint of our own that speaks the App Service
protocol Azure Functions gives an app (``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``), so the
tokens come through ``ManagedIdentityCredential`` exactly as on Azure."""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest

from runtime.config import Settings
from runtime.errors import ListenerError, PackageMissing, StoreUnavailable
from runtime.host.storage_accounts import StorageAccounts
from runtime.model_store import locate
from runtime.storage import clients
from runtime.storage.queues import EndpointQueues
from scripts import azurite as azurite_script
from tests.support import LocalHost, copy_examples, wait_for

HEADER = "the-identity-header"  # what the platform puts in IDENTITY_HEADER
FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, its own issuer, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlfn test storage")])
    now = datetime.now(UTC)
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "crl_sign", "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, **usage), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _token(audience: str, lifetime_s: int = 3600) -> str:
    """A JWT with the claims Azurite's basic OAuth checks (audience, an Entra issuer, times);
    it does not check the signature, so this one has none worth the name."""

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime_s,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.unsigned"


@dataclass
class IdentityEndpoint:
    """The App Service managed identity endpoint: ``GET ?api-version=2019-08-01&resource=R``
    (``&client_id=C`` for a user-assigned identity) with the ``X-IDENTITY-HEADER`` secret.
    Path ``/wrong-audience`` hands out tokens for another service, which storage refuses."""

    server: ThreadingHTTPServer
    requests: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str = "/msi/token") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture(scope="module")
def identity_endpoint() -> Iterator[IdentityEndpoint]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            seen.append({**query, "path": parts.path})
            if self.headers.get("X-IDENTITY-HEADER") != HEADER:
                self._answer(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is wrong"})
                return
            resource = query.get("resource", "")
            audience = "https://vault.azure.net" if parts.path == "/wrong-audience" else resource
            expires = int(time.time()) + 3600
            self._answer(
                200,
                {
                    "access_token": _token(audience),
                    "expires_on": str(expires),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": query.get("client_id", "system-assigned"),
                },
            )

        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield IdentityEndpoint(server, seen)
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class OAuthAzurite:
    blob_url: str
    queue_url: str
    connection_string: str  # the account key, for the test's own setup only
    cert: Path


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthAzurite]:
    tmp = tmp_path_factory.mktemp("oauth-azurite")
    cert, key = _self_signed(tmp)
    server = azurite_script.start(
        tmp / "data", tmp / "azurite.log", cert=cert, key=key, oauth="basic"
    )
    account = azurite_script.ACCOUNT
    try:
        yield OAuthAzurite(
            f"https://127.0.0.1:{server.blob_port}/{account}",
            f"https://127.0.0.1:{server.queue_port}/{account}",
            server.connection_string,
            cert,
        )
    finally:
        server.stop()


@pytest.fixture
def models(oauth_azurite: OAuthAzurite, example_models: dict[str, Path]) -> str:
    """The example models in a new container of the HTTPS Azurite; returns the container."""
    from azure.storage.blob import ContainerClient

    name = f"m{uuid.uuid4().hex[:20]}"
    with ContainerClient.from_connection_string(
        oauth_azurite.connection_string, name, connection_verify=str(oauth_azurite.cert)
    ) as client:
        client.create_container()
        for model, path in example_models.items():
            client.upload_blob(f"{model}.onnx", path.read_bytes())
    return name


@pytest.fixture
def platform(
    monkeypatch: pytest.MonkeyPatch,
    identity_endpoint: IdentityEndpoint,
    oauth_azurite: OAuthAzurite,
) -> Iterator[dict[str, str]]:
    """What Azure Functions sets for an app with a managed identity, and trust in the test
    certificate, in this process's environment (azure-identity and requests read it there);
    each test starts with no credential cached."""
    values = {
        "IDENTITY_ENDPOINT": identity_endpoint.url(),
        "IDENTITY_HEADER": HEADER,
        "REQUESTS_CA_BUNDLE": str(oauth_azurite.cert),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    others = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
              "MSI_ENDPOINT", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT")  # fmt: skip
    for name in others:  # other credentials the SDK would try first or instead
        monkeypatch.delenv(name, raising=False)
    clients._credential.cache_clear()
    identity_endpoint.requests.clear()
    yield values
    clients._credential.cache_clear()


def _identity_settings(prefix: str, azurite: OAuthAzurite, **props: str) -> dict[str, str]:
    return {
        f"{prefix}__blobServiceUri": azurite.blob_url,
        f"{prefix}__queueServiceUri": azurite.queue_url,
        **{f"{prefix}__{name}": value for name, value in props.items()},
    }


def _model_settings(container: str, env: dict[str, str], tmp_path: Path) -> Settings:
    return Settings.from_mapping(
        {
            "MLFN_MODEL_STORE": f"az://{container}",
            "MLFN_CACHE_DIR": str(tmp_path / "cache"),
            "MLFN_STORE_RETRIES": "1",
            **env,
        }
    )


@pytest.mark.parametrize(
    ("props", "client_id"),
    [
        ({"credential": "managedidentity"}, None),  # the system-assigned identity
        ({"credential": "managedidentity", "clientId": "user-assigned-id"}, "user-assigned-id"),
        ({"clientId": "user-assigned-id"}, "user-assigned-id"),  # via DefaultAzureCredential
    ],
)
def test_a_model_loads_from_blob_with_a_token_from_the_managed_identity(
    platform: dict[str, str],
    identity_endpoint: IdentityEndpoint,
    oauth_azurite: OAuthAzurite,
    models: str,
    example_models: dict[str, Path],
    tmp_path: Path,
    props: dict[str, str],
    client_id: str | None,
) -> None:
    from runtime.endpoint import Model
    from runtime.models.registry import ModelRegistry

    store = Settings.variable("store_connection")
    settings = _model_settings(models, _identity_settings(store, oauth_azurite, **props), tmp_path)
    assert settings.store_connection is not None
    assert settings.store_connection.connection_string is None

    loaded = ModelRegistry(settings, tmp_path).get("iris", Model("iris.onnx"))
    out = loaded.run({"input": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)})
    assert out["label"].tolist() == [0]  # setosa
    asked = [r for r in identity_endpoint.requests if r["path"] == "/msi/token"]
    assert asked and {r["resource"] for r in asked} == {"https://storage.azure.com"}
    assert {r.get("client_id") for r in asked} == {client_id}


def test_without_a_token_the_account_refuses_the_same_request(
    oauth_azurite: OAuthAzurite, models: str, tmp_path: Path, platform: dict[str, str]
) -> None:
    # What the test above proves is the token: the container is private.
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobClient

    url = f"{oauth_azurite.blob_url}/{models}/iris.onnx"
    with (
        pytest.raises(HttpResponseError) as caught,
        BlobClient.from_blob_url(url, connection_verify=str(oauth_azurite.cert)) as anonymous,
    ):
        anonymous.get_blob_properties()
    assert caught.value.status_code == 403


@pytest.mark.parametrize(
    ("endpoint", "header", "said"),
    [
        ("/msi/token", "not-the-header", "got no token"),
        ("/wrong-audience", HEADER, "refused the credentials"),
    ],
)
def test_an_identity_that_fails_is_a_prompt_error_saying_which(
    monkeypatch: pytest.MonkeyPatch,
    platform: dict[str, str],
    identity_endpoint: IdentityEndpoint,
    oauth_azurite: OAuthAzurite,
    models: str,
    tmp_path: Path,
    endpoint: str,
    header: str,
    said: str,
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity_endpoint.url(endpoint))
    monkeypatch.setenv("IDENTITY_HEADER", header)
    store = Settings.variable("store_connection")
    env = _identity_settings(store, oauth_azurite, credential="managedidentity")
    settings = _model_settings(models, env, tmp_path)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=said) as caught:
        locate(f"az://{models}/iris.onnx", settings).download(io.BytesIO())
    assert time.monotonic() - started < 15  # one retry, short back-off: never a hang
    assert caught.value.status == 503 and HEADER not in caught.value.message


def test_a_blob_only_connection_for_a_queue_trigger_names_the_missing_queue_uri() -> None:
    env = {"JobsAccount__blobServiceUri": "https://acct.blob.core.windows.net"}
    accounts = StorageAccounts(env, Settings())
    try:
        with pytest.raises(ListenerError, match="JobsAccount__queueServiceUri"):
            accounts.queue("JobsAccount", "jobs")
    finally:
        accounts.close()


def test_without_azure_identity_an_identity_connection_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clients._credential.cache_clear()
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # import fails as if not installed
    conn = clients.connection("AzureWebJobsStorage", {"AzureWebJobsStorage__accountName": "acct"})
    try:
        with pytest.raises(PackageMissing, match=r"pip install 'mlfn\[identity\]'") as caught:
            clients.container(conn, "models", Settings())
    finally:
        clients._credential.cache_clear()
    assert caught.value.key == "AzureWebJobsStorage"


def test_the_local_host_serves_http_and_queues_with_only_an_identity_based_account(
    platform: dict[str, str],
    identity_endpoint: IdentityEndpoint,
    oauth_azurite: OAuthAzurite,
    models: str,
    tmp_path: Path,
) -> None:
    storage = _identity_settings("AzureWebJobsStorage", oauth_azurite, credential="managedidentity")
    env = {
        **platform,
        **storage,
        "MLFN_MODEL_STORE": f"az://{models}",
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
    }
    host = LocalHost(copy_examples(tmp_path / "app"), env).start()
    try:
        flower = dict(zip(FIELDS, (5.1, 3.5, 1.4, 0.2), strict=True))
        with host.client() as http:
            r = http.post("/api/iris/predict", json={"instances": [flower]})
        assert r.status_code == 200, r.text + host.output()
        assert r.json()["predictions"][0]["label"] == "setosa"
        assert identity_endpoint.requests, "the host got its token from the identity endpoint"

        # The producer's side reads the same settings, as `mlfn enqueue` does.
        account = clients.connection("AzureWebJobsStorage", storage)
        queues = EndpointQueues(account, "iris-requests", "iris-results")
        small = queues.send("iris", [flower], "small")
        big = queues.send("iris", [flower] * 800, "big")  # over 64 KB: a claim check in blob
        assert small.instances_blob is None and big.instances_blob is not None
        results: dict[str, dict[str, Any]] = {}

        def answered() -> bool:
            results.update((doc["id"], doc) for doc in queues.receive(wait_s=0.5))
            return {"small", "big"} <= results.keys()

        wait_for(answered, 30, "both queued jobs' results")
    finally:
        host.stop()
    assert results["small"]["predictions"][0]["label"] == "setosa", results["small"]
    big_result = results["big"]
    if "predictions_blob" in big_result:  # too large for a message: written through identity
        big_result = queues.read_blob(big_result["predictions_blob"])
    assert [p["label"] for p in big_result["predictions"]] == ["setosa"] * 800
