"""Every invocation's scope, whatever the trigger and whether its handler is sync or async: its
invocation current while the handler runs and gone after, its id on an HTTP response, and with
telemetry on one span begun and ended with the answer's status."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from runtime import telemetry
from runtime.telemetry import Function, Invocation, Telemetry
from runtime.telemetry.trace_context import Carrier
from runtime.triggers.invocation import INVOCATION_ID_HEADER, Scope, http_function


class _Context(func.Context):
    invocation_id = "inv-1"
    function_name = "f"
    function_directory = ""
    thread_local_storage = threading.local()  # type: ignore[assignment]
    trace_context = None  # type: ignore[assignment]
    retry_context = None  # type: ignore[assignment]


class _Recording(Telemetry):
    """Telemetry that is on and writes down what the triggers ask of it."""

    on = True

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def begin(
        self, invocation: Invocation, function: Function, caller: Carrier, host: Carrier
    ) -> None:
        self.calls.append(("begin", invocation.id, function.name, caller))

    def end(
        self,
        invocation: Invocation,
        function: Function,
        status: int | str,
        endpoint: str | None = None,
    ) -> None:
        self.calls.append(("end", invocation.id, status, endpoint))


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Recording]:
    found = _Recording()
    monkeypatch.setattr(telemetry, "_current", found)
    yield found


def _handlers(seen: list[str | None]) -> dict[str, Any]:
    def answer(req: func.HttpRequest) -> func.HttpResponse:
        current = telemetry.current_invocation()
        seen.append(current.id if current else None)
        if req.params.get("fail"):
            raise RuntimeError("a bug past the handler's own error answers")
        return func.HttpResponse("ok", status_code=404)

    async def answer_async(req: func.HttpRequest) -> func.HttpResponse:
        return answer(req)

    return {"sync": answer, "async": answer_async}


def _call(kind: str, fail: bool, seen: list[str | None], root: Path) -> func.HttpResponse:
    handler = _handlers(seen)[kind]
    invoked: Any = http_function("iris_predict", "POST", "iris/predict", handler, root, {"iris"})
    req = func.HttpRequest(
        "POST",
        "http://localhost/api/iris/predict",
        headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        params={"fail": "1"} if fail else {},
        route_params={"model_name": "iris"},
        body=b"",
    )
    answered = invoked(req, _Context())
    return asyncio.run(answered) if kind == "async" else answered  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_http_invocation_is_current_while_its_handler_runs_and_names_the_response(
    kind: str, recording: _Recording, tmp_path: Path
) -> None:
    seen: list[str | None] = []
    response = _call(kind, False, seen, tmp_path)
    assert seen == ["inv-1"] and telemetry.current_invocation() is None
    assert response.headers[INVOCATION_ID_HEADER] == "inv-1"
    caller = ("00-" + "1" * 32 + "-" + "2" * 16 + "-01", None)
    assert recording.calls == [
        ("begin", "inv-1", "iris_predict", caller),
        ("end", "inv-1", 404, "iris"),
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_http_handler_that_raises_ends_its_invocation_as_a_500(
    kind: str, recording: _Recording, tmp_path: Path
) -> None:
    seen: list[str | None] = []
    with pytest.raises(RuntimeError, match="a bug"):
        _call(kind, True, seen, tmp_path)
    assert seen == ["inv-1"] and telemetry.current_invocation() is None
    assert recording.calls[-1] == ("end", "inv-1", 500, "iris")


def test_a_scope_without_a_span_only_makes_its_invocation_current() -> None:
    scope = Scope(_Context())
    assert telemetry.current_invocation() is scope and scope.id == "inv-1"
    scope.close()
    assert telemetry.current_invocation() is None
