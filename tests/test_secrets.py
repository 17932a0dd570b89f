"""Credentials never reach a log line, an error body or a public document: function keys given
as ?code=, SAS tokens of blob URLs, keys of connection strings (issue 10, class 7)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from runtime import redact
from runtime.errors import ConfigError, StoreUnavailable
from runtime.host.invocation_log import JsonFormatter
from tests.conftest import AzuriteInfo
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


# A key the host reads from each of these queries (parse_qsl: pairs split at "&", the name up
# to the first "="), so each must be redacted however the rest of the query is written.
KEYED_QUERIES = [
    f"note='hi'&code={KEY}",
    f'note="hi"&code={KEY}',
    f"note=<b>&code={KEY}",
    f"%63ode={KEY}",
    f"CoDe={KEY}&x=1",
    f"note=a%20b&co%64e={KEY}",
]


@pytest.mark.parametrize("query", KEYED_QUERIES)
def test_a_key_the_host_reads_from_a_query_is_redacted_however_the_query_is_written(
    query: str,
) -> None:
    line = f"POST /api/x/predict?{query} 503"
    cleaned = redact.text(line)
    assert KEY not in cleaned and redact.HIDDEN in cleaned
    assert cleaned.startswith("POST /api/x/predict?") and cleaned.endswith(" 503")
    assert KEY not in redact.url(f"https://h/api/x/predict?{query}")


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ("GET https://h/p?token=TOPSECRET&a=1", "TOPSECRET"),
        ("login with password=TOPSECRET", "TOPSECRET"),
        ("https://b/c/d.onnx?sv=1&x-amz-signature=TOPSECRET", "TOPSECRET"),
        ("AccountName=a;AccountKey='TOPSECRET';", "TOPSECRET"),
        ("model uri 'ftp://a/m.onnx?sig=TOPSECRET' is not supported", "TOPSECRET"),
    ],
)
def test_credential_parameters_of_any_name_are_redacted(raw: str, secret: str) -> None:
    assert secret not in redact.text(raw)


# What docs/security.md promises to hide: SAS tokens and shared keys as connection strings
# write them (the whole token after SharedAccessSignature=, its sig= alone in a URL).
CONNECTION_SECRETS = [
    (
        "BlobEndpoint=https://a.blob.core.windows.net/;"
        "SharedAccessSignature=sv=2024-05-04&ss=b&sp=rl&se=2030-01-01&sig=TOPSECRET%3D",
        "SharedAccessSignature=REDACTED",
    ),
    (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;"
        "SharedAccessKey=TOPSECRET+k/ey=;EntityPath=q",
        "SharedAccessKey=REDACTED;EntityPath=q",
    ),
    (
        "DefaultEndpointsProtocol=https;AccountName=a;SharedAccessKey='TOPSECRET';Endpoint=x",
        "SharedAccessKey=REDACTED",
    ),
    ("GET https://a.blob.core.windows.net/c/m.onnx?sv=1&sig=TOPSECRET failed", "sig=REDACTED"),
    ("https://a.blob.core.windows.net/c/m.onnx?sp=r&SIG=TOPSECRET&se=1", "SIG=REDACTED"),
    # A name a query parser decodes: %41 is "A".
    ("https://h/p?a=1&Shared%41ccessSignature=TOPSECRET", "Shared%41ccessSignature=REDACTED"),
    ("https://h/p?Shared%41ccessKey=TOPSECRET&a=1", "Shared%41ccessKey=REDACTED&a=1"),
]


@pytest.mark.parametrize(("raw", "clean"), CONNECTION_SECRETS)
def test_sas_tokens_and_shared_keys_are_hidden_in_text_and_error_messages(
    raw: str, clean: str
) -> None:
    assert "TOPSECRET" not in redact.text(raw) and clean in redact.text(raw)
    said = StoreUnavailable(f"storage {raw} cannot be reached").message
    assert "TOPSECRET" not in said and clean in said


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        # A value with "=" in it (base64 padding): the name is what comes before the first.
        ("GET https://h/p?code=c2VjcmV0==&a=1 503", "GET https://h/p?code=REDACTED&a=1 503"),
        ("POST /api/x/predict?code+=TOPSECRET 503", "POST /api/x/predict?code+=REDACTED 503"),
        ("the key in a message (code=TOPSECRET)", "the key in a message (code=REDACTED)"),
        ("https://h/p?sig=x&flag&code=TOPSECRET", "https://h/p?sig=REDACTED&flag&code=REDACTED"),
    ],
)
def test_names_are_read_as_a_query_parser_reads_them(raw: str, clean: str) -> None:
    """Found by mutation testing (docs/mutation.md): each case fails a mutant of _pair or
    _secret_name that the tests above let survive."""
    assert redact.text(raw) == clean


def test_a_password_holding_an_at_sign_is_dropped_whole() -> None:
    assert redact.url("https://user:p@ss@host/c/m.onnx") == "https://host/c/m.onnx"


def test_a_quoted_url_keeps_its_closing_quote() -> None:
    assert (
        redact.text("uri 'https://a/m?sig=x' bad") == f"uri 'https://a/m?sig={redact.HIDDEN}' bad"
    )


def _raw_post(port: int, target: str) -> int:
    """Send a request target exactly as written (an HTTP client would percent-encode quotes
    and angle brackets) and return the answer's status."""
    body = b'{"instances": [{"x": 1}]}'
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head.encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_the_host_never_logs_a_key_it_accepted_from_the_query(host: LocalHost) -> None:
    for query in KEYED_QUERIES:
        # 503 (the store is unreachable), not 401: the host read the key from this query.
        assert _raw_post(host.port, f"/api/leaky/predict?{query}") == 503, query
    log = host.output()
    assert "note=" in log  # the request lines were written
    assert KEY not in log


def test_tracebacks_are_redacted_for_any_handler_once_redaction_is_installed(
    logging_without_redaction: None, caplog: pytest.LogCaptureFixture
) -> None:
    redact.install_in_logging()
    log = logging.getLogger("mlfn.test.secrets")
    try:
        raise OSError("GET https://a.blob.core.windows.net/c/m.onnx?sv=1&sig=SECRETSIG failed")
    except OSError:
        log.exception("reading %s failed", "https://a/c/m.onnx?sig=SECRETARG")
    [record] = [r for r in caplog.records if r.name == log.name]
    for formatter in (logging.Formatter(), JsonFormatter()):
        written = formatter.format(record)
        assert "SECRETSIG" not in written and "SECRETARG" not in written
        assert "OSError" in written and "sig=REDACTED" in written  # the traceback is kept
    assert "SECRETSIG" not in caplog.text


SIGNED = "https://a.blob.core.windows.net/c/m.onnx?sv=1&sig=SECRETSIG"


def _fetch(url: str) -> None:
    try:
        raise TimeoutError(f"no answer from {url}")
    except TimeoutError as exc:
        raise OSError(f"GET {url} failed") from exc


def test_an_exporter_gets_the_exception_s_type_and_stack_without_its_secret(
    logging_without_redaction: None,
) -> None:
    # Application Insights (azure-monitor-opentelemetry) logs through OpenTelemetry's handler,
    # which builds exception telemetry from the record's exc_info, not from its text.
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    redact.install_in_logging()
    exported = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exported))
    handler = LoggingHandler(logger_provider=provider)
    log = logging.getLogger("mlfn.test.secrets.otel")
    log.addHandler(handler)
    try:
        try:
            _fetch(SIGNED)
        except OSError:
            log.exception("reading the model failed")
    finally:
        log.removeHandler(handler)
        provider.shutdown()
    [record] = [r.log_record for r in exported.get_finished_logs()]
    attributes = dict(record.attributes or {})
    assert "SECRETSIG" not in repr(attributes) + str(record.body)
    assert attributes["exception.type"] == "OSError"
    assert attributes["exception.message"] == f"GET {redact.text(SIGNED)} failed"
    stack = str(attributes["exception.stacktrace"])
    assert "in _fetch" in stack and "sig=REDACTED" in stack  # where it was raised, and why
    assert "TimeoutError: no answer from" in stack  # its cause too


def test_a_secret_in_the_code_of_a_frame_leaves_only_the_redacted_text(
    logging_without_redaction: None, caplog: pytest.LogCaptureFixture
) -> None:
    # A frame's source line is read from the file by whoever formats the stack: it cannot be
    # redacted in the record, so a handler formatting the exception itself gets none.
    redact.install_in_logging()
    log = logging.getLogger("mlfn.test.secrets.source")
    try:
        raise OSError("GET https://a/c/m.onnx?sv=1&sig=SECRETSIG failed")
    except OSError:
        log.exception("reading failed")
    [record] = [r for r in caplog.records if r.name == log.name]
    assert record.exc_info is None
    assert record.exc_text and "OSError" in record.exc_text
    assert "SECRETSIG" not in record.exc_text


BATCH_ENDPOINT = """
from pydantic import BaseModel
from runtime import Batch, Endpoint

class In(BaseModel):
    x: float

class Out(BaseModel):
    y: float

endpoint = Endpoint(In, Out, model="m.onnx", batch=Batch(files="PREFIX-in", results="PREFIX-out"))

@endpoint.predict
def predict(rows, model):
    return [Out(y=r.x) for r in rows]
"""


def test_a_batch_event_for_a_deleted_blob_logs_its_url_without_the_sas_in_the_app_itself(
    tmp_path: Path,
    azurite: AzuriteInfo,
    isolated_imports: None,
    logging_without_redaction: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # On Azure nothing of mlfn serve runs: the app's own registration must redact its logs.
    from azure.storage.blob import (
        AccountSasPermissions,
        ContainerClient,
        ResourceTypes,
        generate_account_sas,
    )

    from runtime.config import Settings
    from runtime.registration import build_app
    from tests.triggers.test_batch import _decoded

    fields = dict(p.split("=", 1) for p in azurite.connection_string.split(";") if p)
    sas = generate_account_sas(
        fields["AccountName"],
        fields["AccountKey"],
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, list=True, create=True, delete=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    # Its runs of letters and digits, which a URL writes as they are (unlike "+/=").
    signature = re.findall(r"[A-Za-z0-9]{6,}", dict(parse_qsl(sas))["sig"])
    connection = (
        f"BlobEndpoint={fields['BlobEndpoint']};QueueEndpoint={fields['QueueEndpoint']};"
        f"SharedAccessSignature={sas}"
    )
    prefix = f"t{uuid.uuid4().hex[:10]}"
    app_dir = make_app(tmp_path / "app", {"files": BATCH_ENDPOINT.replace("PREFIX", prefix)})
    settings = Settings.from_mapping(
        {"AzureWebJobsStorage": connection, "MLFN_CACHE_DIR": str(tmp_path / "c")}
    )
    inbox = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-in")
    inbox.create_container()
    try:
        app = build_app(app_dir / "functions", settings=settings)
        score_file = {f.get_function_name(): f for f in app.get_functions()}["files_batch"]
        caplog.set_level(logging.INFO, logger="mlfn.batch")
        reference = _decoded(f"{prefix}-in", "deleted.csv", '"0x1"')
        asyncio.run(score_file.get_user_function()(reference))
    finally:
        inbox.delete_container()
    assert "deleted.csv" in caplog.text and "is gone" in caplog.text
    assert signature and not any(part in caplog.text for part in signature)


# Processes that never run the app's registration: the mlfn command and a Spark executor.
# Each runs in its own interpreter, where nothing installed redaction before.
LOG_A_SAS_AFTER = """
import logging, sys
logging.basicConfig(stream=sys.stdout, format="%(message)s")
{setup}
logging.getLogger("mlfn.test").warning("GET https://a/c/m.onnx?sv=1&sig=SECRETSIG failed")
"""


@pytest.mark.parametrize(
    "setup",
    [
        "from runtime.cli import main\ntry: main(['check'], standalone_mode=False)\n"
        "except BaseException: pass",  # it exits: no requirements.txt
        "from runtime.spark.worker import services_for\ntry: services_for(sys.argv[1])\n"
        "except BaseException: pass",  # an app with no endpoint: refused after the install
    ],
    ids=["mlfn command", "spark executor"],
)
def test_processes_that_never_register_the_app_redact_their_logs_too(
    setup: str, tmp_path: Path
) -> None:
    app = make_app(tmp_path / "app", {})
    code = LOG_A_SAS_AFTER.format(setup=setup)
    done = subprocess.run(
        [sys.executable, "-c", code, str(app)],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "sig=REDACTED failed" in done.stdout, done.stdout + done.stderr
    assert "SECRETSIG" not in done.stdout + done.stderr


class _BadNote:
    def __str__(self) -> str:
        raise RuntimeError("no words")


def test_logging_an_exception_whose_stand_in_cannot_be_made_never_raises(
    caplog: pytest.LogCaptureFixture, logging_without_redaction: None
) -> None:
    redact.install_in_logging()
    log = logging.getLogger("mlfn.test.secrets")
    err = OSError("GET https://a/c/m.onnx?sig=SECRETSIG failed")
    err.__notes__ = [_BadNote()]  # add_note takes str only; the attribute takes anything
    try:
        raise err
    except OSError:
        log.exception("reading failed")
    [record] = [r for r in caplog.records if r.name == log.name]
    assert record.exc_info is None  # no stand-in: only the redacted text is kept
    assert record.exc_text is not None and "sig=REDACTED" in record.exc_text
    assert "SECRETSIG" not in caplog.text
