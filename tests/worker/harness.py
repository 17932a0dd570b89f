"""A worker harness: the Functions Python worker's own code, driven as on Azure.

On Python 3.13 the worker's indexing and invocation code is the PyPI package
``azure-functions-runtime``. On Azure a proxy worker (not on PyPI) receives the host's gRPC
messages and hands each to a ``handle_event`` function, with its protobuf module in
``request.properties["protos"]``. Here:

- the protobuf messages (``protos``) are real ones, their classes made at import from
  ``SCHEMA``: the host's FunctionRpc.proto cut down to what the runtime reads and writes;
- ``Worker`` plays the proxy worker: its event loop runs on a thread of its own for good, the
  runtime's thread pool is started, then init with the app directory, metadata, a load per
  function, and invocations;
- ``http_data`` and ``queue_data`` build the invocation's data as the host builds it
  (azure-functions-host ``GrpcMessageConversionExtensions.ToRpc``/``ToRpcHttp``, with the
  capabilities this worker declares at init; the Storage extension for queue messages).

Tests read the runtime's own ``InvocationResponse`` (``failure``, ``http_answer``, ``output``).

``handle_event`` keeps the indexed app in module globals: one app per process. ``Worker``
runs in the calling process; ``run_in_fresh_worker`` runs calls in a new interpreter, for
another app or other app settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

from google.protobuf import descriptor_pool, duration_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    FieldDescriptorProto,
    FileDescriptorProto,
)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0

# --- the protobuf messages ------------------------------------------------------------------

# FunctionRpc.proto (azure-functions-host, src/WebJobs.Script.Grpc/azure-functions-language-
# worker-protobuf) and its shared/NullableTypes.proto, cut down to the messages and fields the
# runtime reads or writes and the harness sends, with their names and numbers. The runtime
# reading or writing a field left out here is an error (AttributeError, ValueError), as a
# runtime that starts to use something new should be.
SCHEMA = """
message StreamingMessage {
  oneof content {
    InvocationRequest invocation_request = 4;
    FunctionLoadRequest function_load_request = 8;
    WorkerInitRequest worker_init_request = 17;
    FunctionsMetadataRequest functions_metadata_request = 29;
  }
}
message WorkerInitRequest {
  map<string, string> capabilities = 2; string function_app_directory = 5;
}
message WorkerInitResponse {
  map<string, string> capabilities = 2; StatusResult result = 3; WorkerMetadata worker_metadata = 4;
}
message WorkerMetadata {
  string runtime_name = 1; string runtime_version = 2; string worker_version = 3;
  string worker_bitness = 4; map<string, string> custom_properties = 5;
}
message StatusResult {
  enum Status { Failure = 0; Success = 1; Cancelled = 2; }
  RpcException exception = 2; Status status = 4;
}
message RpcException { string stack_trace = 1; string message = 2; }
message FunctionsMetadataRequest { string function_app_directory = 1; }
message FunctionMetadataResponse {
  repeated RpcFunctionMetadata function_metadata_results = 1; StatusResult result = 2;
  bool use_default_metadata_indexing = 3;
}
message FunctionLoadRequest { string function_id = 1; RpcFunctionMetadata metadata = 2; }
message FunctionLoadResponse { string function_id = 1; StatusResult result = 2; }
message RpcFunctionMetadata {
  string directory = 1; string script_file = 2; string entry_point = 3; string name = 4;
  map<string, BindingInfo> bindings = 6; bool is_proxy = 7; string language = 9;
  repeated string raw_bindings = 10; string function_id = 13; bool managed_dependency_enabled = 14;
  RpcRetryOptions retry_options = 15; map<string, string> properties = 16;
}
message BindingInfo {
  enum Direction { in = 0; out = 1; inout = 2; }
  enum DataType { undefined = 0; string = 1; binary = 2; stream = 3; }
  string type = 2; Direction direction = 3; DataType data_type = 4;
}
message RpcRetryOptions {
  enum RetryStrategy { exponential_backoff = 0; fixed_delay = 1; }
  int32 max_retry_count = 2; google.protobuf.Duration delay_interval = 3;
  google.protobuf.Duration minimum_interval = 4; google.protobuf.Duration maximum_interval = 5;
  RetryStrategy retry_strategy = 6;
}
message InvocationRequest {
  string invocation_id = 1; string function_id = 2; repeated ParameterBinding input_data = 3;
  map<string, TypedData> trigger_metadata = 4; RpcTraceContext trace_context = 5;
  RetryContext retry_context = 6;
}
message RpcTraceContext {
  string trace_parent = 1; string trace_state = 2; map<string, string> attributes = 3;
}
message RetryContext {
  int32 retry_count = 1; int32 max_retry_count = 2; RpcException exception = 3;
}
message InvocationResponse {
  string invocation_id = 1; repeated ParameterBinding output_data = 2; StatusResult result = 3;
  TypedData return_value = 4;
}
message TypedData {
  oneof data {
    string string = 1; string json = 2; bytes bytes = 3; RpcHttp http = 5; sint64 int = 6;
    double double = 7; CollectionBytes collection_bytes = 8; CollectionString collection_string = 9;
    CollectionSInt64 collection_sint64 = 11; ModelBindingData model_binding_data = 12;
    CollectionModelBindingData collection_model_binding_data = 13;
  }
}
message CollectionBytes { repeated bytes bytes = 1; }
message CollectionString { repeated string string = 1; }
message CollectionSInt64 { repeated sint64 sint64 = 1; }
message CollectionModelBindingData { repeated ModelBindingData model_binding_data = 1; }
message ModelBindingData {
  string version = 1; string source = 2; string content_type = 3; bytes content = 4;
}
message ParameterBinding {
  // rpc_shared_memory = 3 is the other member: the host uses it only with
  // FUNCTIONS_WORKER_SHARED_MEMORY_DATA_TRANSFER_ENABLED, which is off by default.
  string name = 1; oneof rpc_data { TypedData data = 2; }
}
message RpcHttp {
  string method = 1; string url = 2; map<string, string> headers = 3; TypedData body = 4;
  map<string, string> params = 10; string status_code = 12; map<string, string> query = 15;
  bool enable_content_negotiation = 16; repeated RpcHttpCookie cookies = 19;
}
message RpcHttpCookie {
  enum SameSite { None = 0; Lax = 1; Strict = 2; ExplicitNone = 3; }
  string name = 1; string value = 2; NullableString domain = 3; NullableString path = 4;
  NullableTimestamp expires = 5; NullableBool secure = 6; NullableBool http_only = 7;
  SameSite same_site = 8; NullableDouble max_age = 9;
}
message NullableString { oneof string { string value = 1; } }
message NullableBool { oneof bool { bool value = 1; } }
message NullableDouble { oneof double { double value = 1; } }
message NullableTimestamp { oneof timestamp { google.protobuf.Timestamp value = 1; } }
"""

_OPTIONAL = FieldDescriptorProto.LABEL_OPTIONAL
_SCALARS = {
    name: getattr(FieldDescriptorProto, f"TYPE_{name.upper()}")
    for name in ("string", "bytes", "bool", "int32", "sint64", "double")
}


def _compile(schema: str) -> types.SimpleNamespace:
    """The message classes of ``schema``, a .proto text of messages (fields, repeated fields,
    maps, oneofs, nested enums), by way of a FileDescriptorProto: no protoc. A field's type
    is resolved by name as protoc resolves it: the enclosing message first, then the file."""
    tokens = iter(re.findall(r"[{}]|[\w.]+", re.sub(r"//.*", "", schema)))
    file = FileDescriptorProto(
        name="mlfn_harness_rpc.proto",
        package="mlfn_harness",
        syntax="proto3",
        dependency=["google/protobuf/duration.proto", "google/protobuf/timestamp.proto"],
    )
    for keyword in tokens:
        assert keyword == "message", f"a schema is messages, not {keyword!r}"
        _message(file.message_type.add(), tokens)
    # A pool of our own: the process's default pool (onnx's, OpenTelemetry's messages) is
    # left alone, and a second import of this module (python -m) builds its own.
    pool = descriptor_pool.DescriptorPool()
    for known in (duration_pb2, timestamp_pb2):
        pool.AddSerializedFile(known.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(file.SerializeToString())
    names = [f"mlfn_harness.{m.name}" for m in file.message_type] + ["google.protobuf.Timestamp"]
    classes = (message_factory.GetMessageClass(pool.FindMessageTypeByName(n)) for n in names)
    return types.SimpleNamespace(**{cls.DESCRIPTOR.name: cls for cls in classes})


def _message(message: DescriptorProto, tokens: Iterator[str]) -> None:
    message.name = next(tokens)
    next(tokens)  # {
    oneof: int | None = None
    for word in tokens:
        if word == "}" and oneof is None:
            return
        if word == "}":
            oneof = None
        elif word == "enum":
            enum = message.enum_type.add(name=next(tokens))
            next(tokens)  # {
            for name in iter(tokens.__next__, "}"):
                enum.value.add(name=name, number=int(next(tokens)))
        elif word == "oneof":
            oneof = len(message.oneof_decl)
            message.oneof_decl.add(name=next(tokens))
            next(tokens)  # {
        else:
            _field(message, word, tokens, oneof)


def _field(message: DescriptorProto, word: str, tokens: Iterator[str], oneof: int | None) -> None:
    field = message.field.add(label=_OPTIONAL)
    if word in ("repeated", "map"):
        field.label = FieldDescriptorProto.LABEL_REPEATED
    if word == "map":  # a repeated key/value message nested in this one, as protoc makes it
        key, value, field.name = next(tokens), next(tokens), next(tokens)
        entry = message.nested_type.add(name=field.name.title().replace("_", "") + "Entry")
        entry.options.map_entry = True
        _typed(entry.field.add(name="key", number=1, label=_OPTIONAL), key)
        _typed(entry.field.add(name="value", number=2, label=_OPTIONAL), value)
        _typed(field, entry.name)
    else:
        _typed(field, next(tokens) if word == "repeated" else word)
        field.name = next(tokens)
    field.number = int(next(tokens))
    if oneof is not None:
        field.oneof_index = oneof


def _typed(field: FieldDescriptorProto, kind: str) -> None:
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    else:  # a message or an enum: the pool tells which
        field.type_name = kind


protos = _compile(SCHEMA)  # what the proxy worker passes is its generated module
# Names for the signatures below and the tests; other messages are made as protos.X, as the
# runtime makes them. Made at run time, to a type checker they are Any.
if TYPE_CHECKING:
    TypedData: TypeAlias = Any
    StatusResult: TypeAlias = Any
    StreamingMessage: TypeAlias = Any
    RpcFunctionMetadata: TypeAlias = Any
    InvocationResponse: TypeAlias = Any
else:
    TypedData, StatusResult = protos.TypedData, protos.StatusResult
    StreamingMessage, RpcFunctionMetadata = protos.StreamingMessage, protos.RpcFunctionMetadata
    InvocationResponse = protos.InvocationResponse


@dataclass
class WorkerRequest:
    """What the proxy worker hands to each ``handle_event`` function (its own dataclass)."""

    name: str
    request: StreamingMessage
    properties: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # As the proxy worker has it: parsed from the bytes the host sent.
        self.request = StreamingMessage.FromString(self.request.SerializeToString())


# --- what the host sends --------------------------------------------------------------------


def http_data(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    route_params: Mapping[str, str] | None = None,
) -> TypedData:
    """An HTTP request as the host sends it to a worker that declares ``RawHttpBodyBytes`` and
    ``RpcHttpBodyOnly`` but not ``UseNullableValueDictionaryForHttp``, as this one does:
    header names lower-cased, repeated headers and query keys joined with ",", query values
    that are empty left out, route values as strings, the body as raw bytes and only when
    there is one."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    merged: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    if body and "content-length" not in merged:
        merged["content-length"] = str(len(body))
    return TypedData(
        http=protos.RpcHttp(
            method=method.upper(),
            url=url,
            headers=merged,
            query=_query(urlsplit(url).query),
            params=dict(route_params or {}),
            # ToRpcHttp sets a body only when Content-Length > 0; a bytes TypedData because
            # the worker asked for raw body bytes.
            body=TypedData(bytes=body) if body else None,
        )
    )


def _query(query: str) -> dict[str, str]:
    """ASP.NET's query collection: keys compared without case (the first spelling kept), a
    repeated key's values joined with ","; empty values dropped, as ToRpcHttp does. Written
    from the host's source, not taken from runtime/host: that is what this checks."""
    values: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        name = spelling.setdefault(key.lower(), key)
        values.setdefault(name, []).append(value)
    joined = {name: ",".join(parts) for name, parts in values.items()}
    return {name: value for name, value in joined.items() if value}


def _text_or_none(body: str | bytes) -> str | None:
    """The extension's TryGetAsString: the body as text, or nothing when it is not UTF-8."""
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _json_time(when: datetime) -> TypedData:
    # DateTimeOffset has no case of its own in ToRpc: ToRpcDefault writes it as JSON.
    return TypedData(json=json.dumps(when.isoformat()))


def queue_data(
    body: str | bytes,
    *,
    message_id: str | None = None,
    dequeue_count: int = 1,
    inserted: datetime | None = None,
    pop_receipt: str = "AgAAAAMAAAAAAAAA",
) -> tuple[TypedData, dict[str, TypedData]]:
    """A queue message and its trigger metadata as the host sends them. Without a ``dataType``
    the Storage extension binds the message as a string (strict UTF-8; bytes that are not
    UTF-8 fail the binding before the worker is called), so a str body is that string; a bytes
    body stands for ``dataType: binary``. DequeueCount (a long) and the times
    (DateTimeOffset) go through ToRpcDefault: JSON."""
    message_id = message_id or str(uuid.uuid4())
    inserted = inserted or datetime.now(UTC).replace(microsecond=0)
    data = TypedData(string=body) if isinstance(body, str) else TypedData(bytes=body)
    metadata = {
        "Id": TypedData(string=message_id),
        "DequeueCount": TypedData(json=json.dumps(dequeue_count)),
        "InsertionTime": _json_time(inserted),
        "ExpirationTime": _json_time(inserted + timedelta(days=7)),
        "NextVisibleTime": _json_time(inserted + timedelta(minutes=10)),
        "PopReceipt": TypedData(string=pop_receipt),
        "QueueTrigger": TypedData(string=_text_or_none(body)),
        "sys": TypedData(
            json=json.dumps(
                {"MethodName": "", "UtcNow": inserted.isoformat(), "RandGuid": str(uuid.uuid4())}
            )
        ),
    }
    return data, metadata


def blob_data(
    container: str,
    path: str,
    content: bytes,
    etag: str,
    url: str,
    *,
    by_reference: bool,
    connection: str = "AzureWebJobsStorage",
) -> tuple[TypedData, dict[str, TypedData]]:
    """A blob trigger's data and metadata as the host sends them: the blob's bytes, or for a
    binding the worker marked SupportsDeferredBinding a ModelBindingData naming it; its
    ``container/path`` as BlobTrigger, its URI, and its properties and metadata as JSON (the
    blob extension's BlobProperties, through ToRpcDefault)."""
    properties = {"ETag": etag, "ContentLength": len(content), "Length": len(content)}
    metadata = {
        "BlobTrigger": TypedData(string=f"{container}/{path}"),
        "Uri": TypedData(string=url),
        "Properties": TypedData(json=json.dumps(properties)),
        "Metadata": TypedData(json="{}"),
        "name": TypedData(string=path),
    }
    if not by_reference:
        return TypedData(bytes=content), metadata
    named = {"Connection": connection, "ContainerName": container, "BlobName": path}
    reference = protos.ModelBindingData(
        version="1.0",
        source="AzureStorageBlobs",
        content_type="application/json",
        content=json.dumps(named).encode(),
    )
    return TypedData(model_binding_data=reference), metadata


# --- reading the runtime's answer -------------------------------------------------------------


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP ``$return`` as the worker hands it to the host: status, headers (names as the
    worker wrote them), body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def failure(response: InvocationResponse) -> str | None:
    """The exception of a failed invocation ("Type: message"), None if it succeeded."""
    if response.result.status == StatusResult.Success:
        return None
    return str(response.result.exception.message)


def http_answer(response: InvocationResponse) -> HttpAnswer:
    """The converted HTTP return value of a successful invocation."""
    problem = failure(response)
    if problem is not None:
        raise AssertionError(f"the invocation failed: {problem}")
    returned = response.return_value
    if returned.WhichOneof("data") != "http":
        raise AssertionError(f"the return value is {returned!r}, not an HTTP response")
    http = returned.http
    body = http.body
    kind = body.WhichOneof("data")
    data = body.bytes if kind == "bytes" else body.string.encode() if kind == "string" else b""
    return HttpAnswer(int(http.status_code), dict(http.headers), data)


def output(response: InvocationResponse, name: str) -> TypedData | None:
    """The value the function set on output binding ``name``, as sent to the host."""
    return next((b.data for b in response.output_data if b.name == name), None)


def value_of(data: TypedData) -> Any:
    """A TypedData's one value (its member of the ``data`` oneof)."""
    kind = data.WhichOneof("data")
    return None if kind is None else getattr(data, kind)


# --- the proxy worker -------------------------------------------------------------------------


class WorkerError(Exception):
    """The worker refused the app (init or load failed)."""


@dataclass(frozen=True)
class Route:
    function: str
    methods: tuple[str, ...] | None
    pattern: re.Pattern[str]
    literal: bool


def _route_pattern(template: str) -> re.Pattern[str]:
    """Simple route templates (literals and ``{name}``), which is all mlfn registers; the
    host's full syntax is runtime/host/routing.py's business, not this harness's."""
    if re.search(r"\{[^}]*[?:*=][^}]*\}", template):
        raise ValueError(f"the harness routes only simple templates, not {template!r}")
    parts = re.split(r"\{(\w+)\}", template.strip("/"))
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(f"/?{regex}/?", re.IGNORECASE)


def _forget_earlier_apps() -> None:
    """A worker process starts with nothing of an app loaded. When tests of other apps ran in
    this process first (one pytest run of the whole suite), their endpoint packages and the
    settings read for them must not be what this worker's app finds."""
    from runtime import config

    for name in list(sys.modules):
        if name == "functions" or name.startswith("functions."):
            del sys.modules[name]
    config._current = None
    config._warned = False


@dataclass
class Worker:
    """The proxy worker around ``azure_functions_runtime`` for the app in ``app_dir``, in this
    process: sys.path and working directory as the worker has them, the event loop on a thread
    of its own, the runtime's thread pool for sync functions."""

    app_dir: Path
    host: str = "localhost:7071"
    functions: dict[str, RpcFunctionMetadata] = field(default_factory=dict)
    capabilities: dict[str, str] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _cwd: str | None = None
    _routes: list[Route] = field(default_factory=list)

    def start(self) -> Worker:
        import azure_functions_runtime as runtime

        if "function_app" in sys.modules:
            raise WorkerError("this process has imported an app already: run_in_fresh_worker")
        _forget_earlier_apps()
        app_dir = str(self.app_dir)
        # The proxy worker puts the app root first on sys.path and runs in it.
        sys.path.insert(0, app_dir)
        self._cwd = os.getcwd()
        os.chdir(app_dir)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="worker-loop", daemon=True)
        self._thread.start()
        runtime.start_threadpool_executor()
        init = self._call(
            runtime.worker_init_request(
                WorkerRequest(
                    "WorkerInitRequest",
                    StreamingMessage(
                        worker_init_request=protos.WorkerInitRequest(function_app_directory=app_dir)
                    ),
                    {"protos": protos, "host": "127.0.0.1"},
                )
            )
        )
        if init.result.status != StatusResult.Success:
            raise WorkerError(init.result.exception.message)
        self.capabilities = dict(init.capabilities)
        metadata = self._call(
            runtime.functions_metadata_request(
                WorkerRequest(
                    "WorkerMetadataRequest",
                    StreamingMessage(
                        functions_metadata_request=protos.FunctionsMetadataRequest(
                            function_app_directory=app_dir
                        )
                    ),
                )
            )
        )
        for meta in metadata.function_metadata_results:
            loaded = self._call(
                runtime.function_load_request(
                    WorkerRequest(
                        "FunctionLoadRequest",
                        StreamingMessage(
                            function_load_request=protos.FunctionLoadRequest(
                                function_id=meta.function_id, metadata=meta
                            )
                        ),
                    )
                )
            )
            if loaded.result.status != StatusResult.Success:
                raise WorkerError(loaded.result.exception.message)
            self.functions[meta.name] = meta
        self._routes = self._http_routes()
        return self

    def stop(self) -> None:
        import azure_functions_runtime as runtime

        runtime.stop_threadpool_executor()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            self._loop.close()
            self._loop = None
        if self._cwd is not None:
            os.chdir(self._cwd)
        if str(self.app_dir) in sys.path:
            sys.path.remove(str(self.app_dir))

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self._submit(coro).result(TIMEOUT_S)

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        assert self._loop is not None, "start the worker first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # --- invocations ----------------------------------------------------------------------

    def submit(
        self,
        function: str,
        trigger: TypedData,
        trigger_metadata: dict[str, TypedData] | None = None,
    ) -> concurrent.futures.Future[InvocationResponse]:
        """Send an InvocationRequest for ``function`` with its trigger data; the future is the
        runtime's InvocationResponse."""
        import azure_functions_runtime as runtime

        meta = self.functions[function]
        request = protos.InvocationRequest(
            invocation_id=str(uuid.uuid4()),
            function_id=meta.function_id,
            input_data=[protos.ParameterBinding(name=self.trigger_name(function), data=trigger)],
            trigger_metadata=trigger_metadata or {},
        )
        message = StreamingMessage(invocation_request=request)
        return self._submit(
            runtime.invocation_request(WorkerRequest("FunctionInvocationRequest", message))
        )

    def invoke(
        self,
        function: str,
        trigger: TypedData,
        trigger_metadata: dict[str, TypedData] | None = None,
    ) -> InvocationResponse:
        response: InvocationResponse = self.submit(function, trigger, trigger_metadata).result(
            TIMEOUT_S
        )
        return response

    def trigger_name(self, function: str) -> str:
        return str(self._trigger(function)["name"])

    def blob(
        self, function: str, container: str, path: str, content: bytes, etag: str, url: str
    ) -> InvocationResponse:
        """A new blob for ``function``, sent as the host would: by reference when the worker's
        metadata marked the trigger SupportsDeferredBinding, as bytes otherwise."""
        trigger = self._trigger(function)
        by_reference = bool(trigger.get("properties", {}).get("SupportsDeferredBinding"))
        data = blob_data(
            container, path, content, etag, url,
            by_reference=by_reference, connection=str(trigger["connection"]),
        )  # fmt: skip
        return self.invoke(function, *data)

    def _trigger(self, function: str) -> dict[str, Any]:
        bindings = [json.loads(raw) for raw in self.functions[function].raw_bindings]
        return next(b for b in bindings if str(b["type"]).endswith("Trigger"))

    def http_call(self, call: HttpCall) -> concurrent.futures.Future[InvocationResponse]:
        """Route ``call`` as the host would (route prefix of host.json, methods, literal
        routes first) and invoke the function it reaches."""
        path = urlsplit(call.path).path
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found and (route.methods is None or call.method.upper() in route.methods):
                trigger = http_data(
                    call.method,
                    f"http://{self.host}{call.path}",
                    headers=[("host", self.host), *call.headers],
                    body=call.content,
                    route_params={k: unquote(v) for k, v in found.groupdict().items()},
                )
                return self.submit(route.function, trigger)
        raise LookupError(f"no HTTP function of the app takes {call.method} {path}")

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes = b"",
    ) -> InvocationResponse:
        """``method path`` (with its query string) through the worker."""
        call = HttpCall(method, path, tuple((headers or {}).items()), content)
        response: InvocationResponse = self.http_call(call).result(TIMEOUT_S)
        return response

    def queue(self, function: str, body: str | bytes, **metadata: Any) -> InvocationResponse:
        """A queue message for ``function``; ``metadata`` as ``queue_data`` takes it."""
        return self.invoke(function, *queue_data(body, **metadata))

    def run(self, call: Call) -> concurrent.futures.Future[InvocationResponse]:
        if isinstance(call, HttpCall):
            return self.http_call(call)
        return self.submit(call.function, *queue_data(call.body, **dict(call.metadata)))

    def _http_routes(self) -> list[Route]:
        prefix = _route_prefix(self.app_dir)
        routes = []
        for name in self.functions:
            trigger = self._trigger(name)
            if trigger["type"] != "httpTrigger":
                continue
            template = "/".join(p for p in (prefix, str(trigger.get("route") or name)) if p)
            methods = trigger.get("methods")
            routes.append(
                Route(
                    name,
                    tuple(str(m).upper() for m in methods) if methods else None,
                    _route_pattern(template),
                    "{" not in template,
                )
            )
        return sorted(routes, key=lambda r: not r.literal)


def _route_prefix(app_dir: Path) -> str:
    host_json = json.loads((app_dir / "host.json").read_text())
    prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return str(prefix).strip("/")


# --- calls in a fresh interpreter -------------------------------------------------------------


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str  # with the query string
    headers: tuple[tuple[str, str], ...] = ()
    content: bytes = b""


@dataclass(frozen=True)
class QueueCall:
    function: str
    body: str | bytes
    metadata: tuple[tuple[str, Any], ...] = ()


Call = HttpCall | QueueCall


def run_in_fresh_worker(
    app_dir: Path,
    calls: list[Call],
    env: Mapping[str, str],
    *,
    concurrently: bool = False,
) -> list[InvocationResponse]:
    """Start a worker for ``app_dir`` in a new interpreter (this one's), with ``env`` as its
    whole environment (app settings are environment variables on Azure), run ``calls`` one
    after the other (or all at once) and return the runtime's responses."""
    work = app_dir / f".harness-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        (work / "calls.pickle").write_bytes(pickle.dumps((calls, concurrently)))
        done = subprocess.run(
            [sys.executable, "-m", "tests.worker.harness", str(work)],
            cwd=app_dir,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S * 2,
        )
        if done.returncode != 0:
            raise WorkerError(f"the worker process failed:\n{done.stdout}\n{done.stderr}")
        # Each response as the host would receive it: the message's bytes.
        answers: list[bytes] = pickle.loads((work / "responses.pickle").read_bytes())
        return [InvocationResponse.FromString(answer) for answer in answers]
    finally:
        for path in work.iterdir():
            path.unlink()
        work.rmdir()


def _child_main(work: Path) -> None:
    calls, concurrently = pickle.loads((work / "calls.pickle").read_bytes())
    # With -m, this interpreter's first sys.path entry is its working directory, the app's.
    sys.path.pop(0)
    worker = Worker(Path.cwd()).start()
    try:
        if concurrently:
            futures = [worker.run(call) for call in calls]
            responses = [f.result(TIMEOUT_S) for f in futures]
        else:
            responses = [worker.run(call).result(TIMEOUT_S) for call in calls]
    finally:
        worker.stop()
    answers = [response.SerializeToString() for response in responses]
    (work / "responses.pickle").write_bytes(pickle.dumps(answers))


if __name__ == "__main__":
    # Run as tests.worker.harness, so the unpickled calls are this module's classes (Worker.run
    # tells them apart by class).
    from tests.worker import harness

    harness._child_main(Path(sys.argv[1]))
