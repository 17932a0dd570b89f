"""Credentials never reach a log line, an error body or a public document: function keys given
as ?code=, SAS tokens of blob URLs, keys of connection strings (issue 10, class 7)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import redact
from runtime.errors import ConfigError, StoreUnavailable
from tests.support import LocalHost, make_app

KEY = "local-secret-key-123"
SAS = "sv=2024-05-04&se=2030-01-01&sp=r&sig=SECRETSIGNATURE%3D"
ENDPOINT = """
from pydantic import BaseModel
from runtime import Endpoint

class In(BaseModel):
    x: float

class Out(BaseModel):
    y: float

endpoint = Endpoint(In, Out, model="http://127.0.0.1:9/c/model.onnx?{sas}")

@endpoint.predict
def predict(rows, model):
    return [Out(y=r.x) for r in rows]
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    root = tmp_path_factory.mktemp("secrets")
    app = make_app(root / "app", {"leaky": ENDPOINT.format(sas=SAS)})
    env = {
        "MLFN_CACHE_DIR": str(root / "cache"),
        "MLFN_FUNCTION_KEY": KEY,
        "MLFN_STORE_CONNECT_TIMEOUT_S": "0.5",
        "MLFN_STORE_RETRIES": "0",
    }
    server = LocalHost(app, env, ("--no-queues",)).start()
    yield server
    server.stop()


def test_keys_and_signatures_stay_out_of_logs_bodies_and_documents(host: LocalHost) -> None:
    with host.client() as http:
        # The model store is unreachable: a 503 whose message names the model's URL.
        answer = http.post(f"/api/leaky/predict?code={KEY}", json={"instances": [{"x": 1}]})
        documents = [http.get(path).text for path in ("/api/openapi.json", "/api/docs")]
        metadata = http.get("/api/v2/models/leaky", headers={"x-functions-key": KEY})
    assert answer.status_code == 503 and "model.onnx" in answer.text
    assert metadata.status_code == 503
    log = host.output()
    assert f"code={redact.HIDDEN}" in log  # the access log line is there, the key is not
    for text in (answer.text, metadata.text, log, *documents):
        assert KEY not in text
        assert "SECRETSIGNATURE" not in text
    assert "model.onnx" in documents[0]  # the reference is shown, its credentials are not


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("https://a.blob.core.windows.net/c/m.onnx?sv=1&sig=abc", "sig=REDACTED"),
        ("POST /api/x/predict?code=k3y&debug=1 HTTP/1.1", "code=REDACTED&debug=1"),
        ("AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=x", "AccountKey=REDACTED;"),
        ("https://user:pa55@host/c/m.onnx", "https://host/c/m.onnx"),
    ],
)
def test_redaction_keeps_what_helps_and_hides_what_grants(raw: str, clean: str) -> None:
    assert clean in (redact.url(raw) if raw.startswith("https://user") else redact.text(raw))


def test_error_messages_are_redacted_where_they_are_made() -> None:
    err = StoreUnavailable("storage for https://a/c/m.onnx?sig=abc&se=1 cannot be reached")
    assert "abc" not in err.message and "sig=REDACTED" in err.message
    config = ConfigError("model uri", "ftp://a/m.onnx?sig=xyz", "a known scheme")
    assert "xyz" not in config.message
