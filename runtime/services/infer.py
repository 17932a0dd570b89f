"""The Open Inference Protocol service: model-level inference, tensors in, tensors out, run on
the endpoint's ONNX model itself (the same loaded model the predict routes use), metadata and
readiness."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

from runtime import telemetry
from runtime.element_types import BY_ONNX
from runtime.endpoint import BoundEndpoint, Limits, Model
from runtime.errors import (
    BadRequest,
    DeadlineExceeded,
    EndpointNotFound,
    ModelVersionNotFound,
    PayloadTooLarge,
)
from runtime.models.onnx_model import OnnxModel, TensorSpec
from runtime.models.readiness import Readiness
from runtime.models.registry import ModelRegistry, version_key
from runtime.payload_log.records import V2, EndpointLog
from runtime.protocol import json_input, v1, v2
from runtime.protocol.v2 import InferRequest, Tensor
from runtime.releases.follow import Follower, Routes
from runtime.scheduling import MAX_BUDGET_MS, Busy, Deadline, Holder, Placement, Turns, within
from runtime.scored import ModelInfo
from runtime.services.releasing import first_read

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class InferResult:
    model: OnnxModel
    outputs: list[Tensor]
    binary: dict[str, bool]


def v2_datatype(spec: TensorSpec) -> str:
    known = BY_ONNX.get(spec.element_type or "")
    return known.v2 if known else "BYTES"


def v2_shape(spec: TensorSpec) -> list[int]:
    return [-1 if d is None else d for d in (spec.shape or ())]


class InferService:
    def __init__(
        self,
        endpoints: Mapping[str, BoundEndpoint],
        registry: ModelRegistry,
        followers: Mapping[str, Follower] | None = None,
        logs: Mapping[str, EndpointLog] | None = None,
        request_runs: Callable[[str], tuple[Holder[OnnxModel], Busy] | None] | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._registry = registry
        self._followers = followers or {}
        self._logs = logs or {}
        # An endpoint's run slots, shared with its predict route's requests (ahead of bulk
        # work); without them (a service of its own, in tests), the model alone.
        self._request_runs = request_runs
        # Per model: decode, run and encode on the loop once loaded and proved fast.
        self._placements = {
            name: (Placement(), _Model(registry, name, bound.endpoint.model, bound.endpoint.limits))
            for name, bound in endpoints.items()
        }
        self._versions: dict[tuple[str, str], tuple[Placement, _Model]] = {}
        self._readiness = Readiness(registry)

    def _routes(self, name: str, wait: bool = True) -> Routes | None:
        """The endpoint's followed release, read first if this is its first request (on a
        thread that may block; ``wait`` False: as read so far, for a probe)."""
        follower = self._followers.get(name)
        if follower is None:
            return None
        if wait:
            follower.wait_first_read()
        return follower.current()

    def _target(
        self, name: str, version: str | None, wait: bool = True, by_weight: bool = True
    ) -> tuple[Placement, _Model, str | None]:
        """Where a request for ``name`` (and ``version``, if it names one) runs, and the
        version its model must have (checked once loaded); may block on the release's first
        read unless ``wait`` is False; ``by_weight`` False: the stable version, for a request
        that names none and scores nothing (metadata, readiness)."""
        self._bound(name)
        routes = self._routes(name, wait)
        if routes is None:
            return (*self._placements[name], version)
        if version is not None and version not in routes.versions:
            raise ModelVersionNotFound(name, version, sorted(routes.versions))
        if version is not None:
            chosen = routes.versions[version]
        else:  # a request by weight; a description (metadata, readiness) of the stable one
            chosen = routes.pick(None) if by_weight else routes.stable
        key = (name, chosen.label)
        found = self._versions.get(key)
        ref = chosen.model(self._endpoints[name].endpoint.model.providers)
        if found is None or found[1].ref != ref:
            limits = self._endpoints[name].endpoint.limits
            model = _Model(self._registry, version_key(name, chosen.label, ref), ref, limits)
            found = self._versions[key] = (Placement(), model)
        return (*found, None)

    def _bound(self, name: str) -> BoundEndpoint:
        bound = self._endpoints.get(name)
        if bound is None:
            raise EndpointNotFound(name)
        return bound

    def _model(self, name: str, version: str | None) -> OnnxModel:
        _, target, must_be = self._target(name, version, by_weight=False)
        model = target.get()
        if must_be is not None and must_be != model.version:
            raise ModelVersionNotFound(name, must_be, model.version)
        return model

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self._model(name, version)

        def describe(specs: list[TensorSpec]) -> list[dict[str, Any]]:
            return [
                {"name": s.name, "datatype": v2_datatype(s), "shape": v2_shape(s)} for s in specs
            ]

        doc: dict[str, Any] = {
            "name": name,
            "versions": self._labels(name) or [model.version],
            "platform": PLATFORM,
            "inputs": describe(model.inputs),
            "outputs": describe(model.outputs),
        }
        if model.report is not None:
            doc["parameters"] = {"sha256": model.sha256, "load": model.report.as_dict()}
        return doc

    def _labels(self, name: str) -> list[str]:
        follower = self._followers.get(name)
        routes = follower.routes if follower is not None else None
        return sorted(routes.versions) if routes is not None else []

    async def ready(self, name: str, version: str | None = None) -> bool:
        """True when the model is in memory, or its file exists in the store; never loads it,
        and never asks the store more than once at a time (``Readiness``)."""
        bound = self._bound(name)
        # A probe never waits for the document's first read.
        _, target, must_be = self._target(name, version, wait=False, by_weight=False)
        declared = bound.endpoint.model.version
        if must_be is not None and declared is not None and must_be != declared:
            raise ModelVersionNotFound(name, must_be, declared)
        source = self._registry.source  # resolved on the check's thread: it may read settings
        return await self._readiness.ready(target.name, lambda: source(target.ref).stat())

    async def infer_body(
        self,
        name: str,
        body: bytes,
        header_length: str | None,
        version: str | None = None,
        timeout_ms: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """An inference request's body in, the response body and headers out (JSON or binary
        tensors): decoding, the run and encoding take one hop off the event loop, or none for
        a loaded model whose requests of this size have proved faster than a hop. A deadline
        (``timeout_ms``, the ``x-mlfn-timeout-ms`` header, else the endpoint's default) is
        answered with 504 at the deadline, and so is the body's ``parameters.timeout``
        (microseconds, as Triton's; the earlier of the two holds): read before the request's
        wait for its turn, which it cuts, and checked again before the run and after it: work
        past it is not started, and an answer past it is not sent."""
        bound = self._bound(name)
        limits = bound.endpoint.limits
        if len(body) > limits.max_request_bytes:  # the endpoint's limit holds for tensors too
            raise PayloadTooLarge(len(body), limits.max_request_bytes)
        started = time.perf_counter()
        deadline = Deadline.asked(timeout_ms, limits.default_timeout_ms, v1.TIMEOUT_HEADER)
        call = _Call(body, header_length, version, deadline, self._logs.get(name), started)
        lines: list[Turns] = []  # the line it took its turn in: its model's, or a version's
        try:
            answer = self._by_own_deadline(name, call, lines)
            return await (answer if deadline is None else within(deadline, answer))
        except Exception as exc:
            told = exc
            if isinstance(exc, DeadlineExceeded):  # the model's runs may be what it misses
                line = lines[-1] if lines else self._placements[name][1].turns  # before a turn
                told = exc.given_runs_of(line.last_run_s)
            if call.log is not None and call.log.sampled():  # its id is in the body: at random
                call.log.failed(V2, started, told)
            if told is exc:
                raise
            raise told from None

    async def _by_own_deadline(
        self, name: str, call: _Call, lines: list[Turns]
    ) -> tuple[bytes, dict[str, str]]:
        """``_answer``, by the body's own ``parameters.timeout`` too where it sets one: read
        first (its JSON, not its tensors), so that the wait for a turn ends at it."""
        own, parsed = await _own_deadline(call.body, call.header_length, call.started)
        if parsed is not None:  # the decoder reads it as it is: the JSON is parsed once
            call = call._replace(parsed=parsed)
        if own is None or (call.deadline is not None and call.deadline.at <= own.at):
            return await self._answer(name, call, lines)
        return await within(own, self._answer(name, call._replace(deadline=own), lines))

    async def _answer(
        self, name: str, call: _Call, lines: list[Turns]
    ) -> tuple[bytes, dict[str, str]]:
        follower = self._followers.get(name)
        if follower is None or (follower.routes is None and not follower.due()):
            placement, model = self._placements[name]
        else:  # a release to follow, read first (one read, shared, bounded in time)
            await first_read(follower)
            placement, model, version = self._target(name, call.version)
            call = call._replace(version=version)
        holder: Holder[OnnxModel] = model
        busy = None
        if self._request_runs is not None and model is self._placements[name][1]:
            runs = self._request_runs(name)  # its own model: the endpoint's run slots, and
            if runs is not None:  # bulk work rests while requests come, the longer the busier
                holder, busy = runs
        # The wait for a turn is on the loop, where the deadline's cutoff ends it.
        turns = model.turns
        lines.append(turns)
        began = time.monotonic()
        try:
            return await turns.take(
                lambda: placement.run(len(call.body), holder, self._infer_body, call, turns),
                call.deadline,
            )
        finally:
            if busy is not None:
                elapsed = time.monotonic() - began
                busy.seconds += elapsed

    async def _infer_body(
        self, model: OnnxModel, call: _Call, turns: Turns
    ) -> tuple[bytes, dict[str, str]]:
        """Decode, run, encode (and hand the tensors to the payload log, when it samples the
        request), ``turns`` told how long that took. Never waits: async only as ``Placement``
        takes work."""
        body, header_length, version, deadline, log, started, parsed = call
        began = time.perf_counter()
        tel = telemetry.current()
        if tel.on:  # a span costs even when off: the hot path only checks
            with tel.span("mlfn.validate"):
                request = v2.decode_request(body, header_length, parsed)
            deadline = _earliest(deadline, request, started)
            with tel.span("mlfn.run"):
                result = self._run(model, request, version)
            with tel.span("mlfn.encode"):
                answer = _encode(request, result)
        else:
            request = v2.decode_request(body, header_length, parsed)
            deadline = _earliest(deadline, request, started)
            result = self._run(model, request, version)
            answer = _encode(request, result)
        turns.ran(time.perf_counter() - began)  # how long its turn's work took, where it ran
        if deadline is not None and time.monotonic() >= deadline.at:
            raise DeadlineExceeded(deadline.budget_ms)  # late: the answer is not sent
        if log is not None and log.sampled(request.id):
            inputs = {t.name: t.data for t in request.inputs}
            outputs = {t.name: t.data for t in result.outputs}
            first = request.inputs[0].shape if request.inputs else ()
            rows = first[0] if first else 1
            size = len(body) + sum(getattr(t.data, "nbytes", 0) for t in result.outputs)
            info = ModelInfo(model.name, model.version, model.sha256)
            log.scored(V2, started, inputs, outputs, info, rows, size, request.id)
        return answer

    def _run(self, model: OnnxModel, request: InferRequest, version: str | None) -> InferResult:
        name = model.name
        if version is not None and version != model.version:
            raise ModelVersionNotFound(name, version, model.version)
        feeds = self._feeds(model, request)
        names = self._output_names(model, request)
        results = model.run(feeds, names)
        specs = {s.name: s for s in model.outputs}
        outputs = []
        for out_name in names:
            value = results[out_name]
            if specs[out_name].element_type is None:
                raise BadRequest(
                    f"output '{out_name}' is {specs[out_name].onnx_type}, not a tensor"
                )
            outputs.append(
                Tensor(out_name, v2_datatype(specs[out_name]), tuple(value.shape), value)
            )
        binary = {n: request.binary_output for n in names}
        for requested in request.outputs or []:
            if requested.binary is not None:
                binary[requested.name] = requested.binary
        return InferResult(model, outputs, binary)

    def _feeds(self, model: OnnxModel, request: InferRequest) -> dict[str, Any]:
        specs = {s.name: s for s in model.inputs}
        given = {t.name: t for t in request.inputs}
        unknown = sorted(set(given) - set(specs))
        if unknown:
            raise BadRequest(
                f"model '{model.name}' has no input named {', '.join(map(repr, unknown))}; "
                f"its inputs are {sorted(specs)}"
            )
        missing = sorted(set(specs) - set(given))
        if missing:
            raise BadRequest(f"model '{model.name}' needs input {', '.join(map(repr, missing))}")
        feeds = {}
        for name, tensor in given.items():
            spec = specs[name]
            expected = v2_datatype(spec)
            if tensor.datatype != expected:
                raise BadRequest(
                    f"input '{name}' has datatype {tensor.datatype}, "
                    f"but model '{model.name}' expects {expected}"
                )
            if spec.shape is not None and (
                len(spec.shape) != len(tensor.shape)
                or any(
                    d is not None and d != g for d, g in zip(spec.shape, tensor.shape, strict=True)
                )
            ):
                raise BadRequest(
                    f"input '{name}' has shape {list(tensor.shape)}, "
                    f"but model '{model.name}' expects {v2_shape(spec)}"
                )
            feeds[name] = tensor.data
        return feeds

    def _output_names(self, model: OnnxModel, request: InferRequest) -> list[str]:
        known = [s.name for s in model.outputs]
        if not request.outputs:
            return known
        unknown = [o.name for o in request.outputs if o.name not in known]
        if unknown:
            raise BadRequest(
                f"model '{model.name}' has no output named {', '.join(map(repr, unknown))}; "
                f"its outputs are {known}"
            )
        return [o.name for o in request.outputs]


class _Model:
    """An endpoint's model (or one version of it) as ``Placement`` holds it for a request,
    and its requests' line (``turns``)."""

    __slots__ = ("_registry", "name", "ref", "turns")

    def __init__(self, registry: ModelRegistry, name: str, ref: Model, limits: Limits) -> None:
        self._registry, self.name, self.ref = registry, name, ref
        target = limits.latency_target_ms
        self.turns = Turns(
            limits.max_concurrent_batches,
            limits.max_pending_requests,
            None if target is None else target / 1000,
        )

    def held_now(self) -> AbstractContextManager[OnnxModel] | None:
        return self._registry.use_loaded(self.name, self.ref)  # never a load on the loop

    def held(self) -> AbstractContextManager[OnnxModel]:
        return self._registry.use(self.name, self.ref)

    def get(self) -> OnnxModel:
        return self._registry.get(self.name, self.ref)


class _Call(NamedTuple):
    """One inference request on its way to its run (a tuple: made on every request)."""

    body: bytes
    header_length: str | None
    version: str | None
    deadline: Deadline | None
    log: EndpointLog | None
    started: float  # time.perf_counter() when it came
    parsed: Any = None  # its JSON, when read already for its own timeout


# The JSON of a request that sets a timeout, read on the loop up to this size (JSON is read at
# about 20 MB/s: ~0.2 ms), in a thread past it (a JSON body's tensors). Binary tensors are
# never read for it: only the JSON header before them.
_READ_ON_LOOP_BYTES = 4 * 1024


async def _own_deadline(
    body: bytes, header_length: str | None, started: float
) -> tuple[Deadline | None, Any]:
    """The deadline the request's JSON sets (``parameters.timeout``, read as ``_earliest``
    reads it), when the bytes ``"timeout"`` are in that JSON; else None, as for a JSON part
    the decoder will refuse (it says why, in the request's turn). With it, the JSON read for
    it (None when it was not read), which the decoder takes instead of reading it again."""
    size = len(body)
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            return None, None
        if not 0 <= size <= len(body):
            return None, None
    if body.find(b'"timeout"', 0, size) < 0:
        return None, None
    json_part = body[:size] if size < len(body) else body
    what = "the inference request"
    if size <= _READ_ON_LOOP_BYTES:
        doc = json_input.loads(json_part, what)
    else:
        doc = await asyncio.to_thread(json_input.loads, json_part, what)
    parameters = doc.get("parameters") if isinstance(doc, dict) else None
    own = parameters.get("timeout") if isinstance(parameters, dict) else None
    return (None if own is None else _timeout(own, started)), doc  # a null sets none


def _earliest(deadline: Deadline | None, request: InferRequest, started: float) -> Deadline | None:
    """The request's deadline: the earlier of ``deadline`` and its own ``parameters.timeout``
    (microseconds from its arrival where the host said when that was, else from ``started``,
    a ``perf_counter``), which must not have passed before its run starts."""
    own = request.parameters.get("timeout")
    if own is not None:
        mine = _timeout(own, started)
        if deadline is None or mine.at < deadline.at:
            deadline = mine
    if deadline is not None and time.monotonic() >= deadline.at:
        raise DeadlineExceeded(deadline.budget_ms)  # its run never starts
    return deadline


def _timeout(own: Any, started: float) -> Deadline:
    """The deadline of a ``parameters.timeout`` (microseconds from the request's arrival
    where the host said when that was, else from ``started``, a ``perf_counter``)."""
    try:
        budget_ms = float(own) / 1000 if isinstance(own, int | float) else math.nan
    except OverflowError:  # an int with hundreds of digits: no float holds it
        budget_ms = math.inf
    if isinstance(own, bool) or not 0 < budget_ms <= MAX_BUDGET_MS:
        raise BadRequest(
            "parameters.timeout must be a positive number of microseconds, at most a "
            f"day ({MAX_BUDGET_MS * 1000:.0f}), not {str(own)[:40]!r}"
        )
    began = time.monotonic() - (time.perf_counter() - started)  # the function's start
    return Deadline.after(budget_ms, otherwise=began)


def _encode(request: InferRequest, result: InferResult) -> tuple[bytes, dict[str, str]]:
    return v2.encode_response(
        result.model.name,
        result.model.version,
        result.outputs,
        result.binary,
        request.id,
        request.parameters or None,
    )
