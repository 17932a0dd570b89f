"""The local host knows nothing of mlfn: a hand-written Python v2 app runs under it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LocalHost

PLAIN_APP = """
import json
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
bp = func.Blueprint()


@app.route(route="items/{id:int}", methods=["GET", "PUT"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "id": int(req.route_params["id"]),
        "method": req.method,
        "q": req.params.get("q"),
        "header": req.headers.get("x-custom"),
        "url": req.url,
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json", headers={"X-Reply": "yes"})


@app.route(route="items/special")
def special(req: func.HttpRequest) -> str:
    return "literal route wins"


@app.function_name("teapot")
@app.route(route="brew/{kind?}", methods=["POST"])
async def brew(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    kind = req.route_params.get("kind", "tea")
    return func.HttpResponse(f"{context.function_name} brews {kind}", status_code=418)


@bp.route(route="files/{*path}")
def files(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params.get("path", ""), status_code=200)


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("a bug in the user's function")


app.register_functions(bp)
"""


@pytest.fixture
def plain_host(tmp_path: Path) -> Iterator[LocalHost]:
    (tmp_path / "function_app.py").write_text(PLAIN_APP)
    (tmp_path / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}})
    )
    host = LocalHost(tmp_path, env={}).start()
    yield host
    host.stop()


def test_route_params_query_headers_and_body_reach_the_function(plain_host: LocalHost) -> None:
    with plain_host.client() as http:
        r = http.put("/v1/items/42?q=hello", headers={"X-Custom": "abc"}, content=b"payload")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-reply"] == "yes"
    assert r.json() == {
        "id": 42,
        "method": "PUT",
        "q": "hello",
        "header": "abc",
        "url": f"{plain_host.url}/v1/items/42?q=hello",
        "body": "payload",
    }


def test_literal_route_beats_parameter_and_str_return_is_text(plain_host: LocalHost) -> None:
    with plain_host.client() as http:
        r = http.get("/v1/items/special")
    assert (r.status_code, r.text) == (200, "literal route wins")
    assert r.headers["content-type"].startswith("text/plain")


def test_async_function_gets_context_status_and_optional_param(plain_host: LocalHost) -> None:
    with plain_host.client() as http:
        default = http.post("/v1/brew")
        coffee = http.post("/v1/brew/coffee")
    assert (default.status_code, default.text) == (418, "teapot brews tea")
    assert coffee.text == "teapot brews coffee"


def test_blueprint_catch_all_route(plain_host: LocalHost) -> None:
    with plain_host.client() as http:
        assert http.get("/v1/files/a/b/c.txt").text == "a/b/c.txt"


def test_constraint_method_and_unknown_route_give_404(plain_host: LocalHost) -> None:
    with plain_host.client() as http:
        assert http.get("/v1/items/notanint").status_code == 404
        wrong_method = http.delete("/v1/items/1")
        unknown = http.get("/api/items/1")  # routePrefix is v1 in this app's host.json
    assert wrong_method.status_code == 404
    assert "GET, PUT" in wrong_method.json()["error"]["message"]
    assert unknown.status_code == 404


def test_unhandled_exception_is_a_500_without_traceback(plain_host: LocalHost) -> None:
    with plain_host.client() as http:
        r = http.get("/v1/boom")
    assert r.status_code == 500
    assert b"Traceback" not in r.content and b"RuntimeError" not in r.content
    assert "a bug in the user's function" in plain_host.output()  # logged, not returned


def test_a_body_over_azures_100_mb_limit_is_refused_before_it_is_read(
    plain_host: LocalHost,
) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", plain_host.port), timeout=10) as conn:
        conn.sendall(
            b"PUT /v1/items/1 HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Length: 104857601\r\nConnection: close\r\n\r\n"
        )  # and no body at all: the host must answer from the header alone
        reply = conn.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


def test_invocations_are_logged_as_func_start_logs_them_in_text_or_json(tmp_path: Path) -> None:
    (tmp_path / "function_app.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp()\n"
        '@app.route(route="hi", auth_level=func.AuthLevel.ANONYMOUS)\n'
        "def hi(req: func.HttpRequest) -> func.HttpResponse:\n"
        '    if req.params.get("fail"):\n'
        '        raise ValueError("asked to fail")\n'
        '    return func.HttpResponse("hi")\n'
    )
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    for log_format in ("text", "json"):
        host = LocalHost(tmp_path, {"MLFN_LOG_FORMAT": log_format}).start()
        try:
            with host.client() as http:
                assert http.get("/api/hi").status_code == 200
                assert http.get("/api/hi?fail=1").status_code == 500
        finally:
            host.stop()
        output = host.output()
        if log_format == "text":
            ok = re.findall(
                r"Executed 'Functions.hi' \(Succeeded, Id=([0-9a-f-]{36}), Duration=\d+ms\)", output
            )
            failed = re.findall(
                r"Executed 'Functions.hi' \(Failed, Id=([0-9a-f-]{36}), Duration=\d+ms\): \"GET /api/hi\?fail=1\" 500: asked to fail",
                output,
            )
            assert len(ok) == len(failed) == 1 and ok != failed
        else:
            docs = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
            executed = [d for d in docs if d["message"].startswith("Executed 'Functions.hi'")]
            assert [d["outcome"] for d in executed] == ["Succeeded", "Failed"]
            assert all(d["function"] == "hi" and len(d["invocation_id"]) == 36 for d in executed)
            assert "asked to fail" in executed[1]["exception"]
