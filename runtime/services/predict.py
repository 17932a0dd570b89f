"""The predict service: raw instances in, validated, micro-batched, scored by the endpoint's
predict function, checked against its contract, predictions out. Every trigger calls this."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, ParamSpec, Protocol, TypeAlias, TypeVar

from pydantic import BaseModel, FailFast, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticSerializationError

from runtime import telemetry
from runtime.endpoint import BoundEndpoint, ColumnarPredict, is_coroutine_function
from runtime.errors import (
    ConfigError,
    DeadlineExceeded,
    EndpointNotFound,
    IntegrityError,
    MlfnError,
    ModelLoadFailed,
    PayloadTooLarge,
    PredictContractError,
    PredictFailed,
    ValidationFailed,
)
from runtime.models.onnx_model import OnnxModel
from runtime.models.reference import Model
from runtime.models.registry import ModelRegistry
from runtime.payload_log.records import HTTP, ROW_BYTES, EndpointLog
from runtime.protocol import v1
from runtime.releases.follow import Follower
from runtime.scheduling import (
    Batcher,
    Busy,
    Deadline,
    NotNow,
    Placement,
    bulk_rest,
    current_deadline,
    end_if_unanswered,
    within,
)
from runtime.scored import ModelInfo, Scored
from runtime.services.releasing import Releasing, first_read

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("mlfn.predict")

# A columnar predict's call on ``n`` rows' columns, and the model it runs.
ColumnsCall: TypeAlias = tuple[Callable[[dict[str, Any], int], dict[str, Any]], ModelInfo]

# Bodies up to this size are parsed and validated on the event loop: that takes less than a
# trip to a worker thread and back would (pydantic parses JSON natively and holds the GIL in a
# thread too). Larger ones go to a thread, so one huge body cannot stall every other request.
INLINE_BODY_BYTES = 256 * 1024
# A 422 lists at most this many failing fields (and counts them all); instances are checked
# in slices of this many, so the errors held at once stay few whatever the body holds.
MAX_REPORTED = 100
VALIDATION_SLICE = 256


class PredictService:
    """Scores instances for the app's endpoints that have a predict function.

    Concurrent requests to one endpoint share model calls (micro-batching, up to the endpoint's
    ``max_batch_size``); a request larger than that is scored in chunks of that size. A sync
    predict function runs in a worker thread (on the event loop when the model is loaded and
    its runs are shorter than a thread hop), an ``async def`` one on the event loop.
    """

    def __init__(
        self,
        endpoints: Mapping[str, BoundEndpoint],
        registry: ModelRegistry,
        followers: Mapping[str, Follower] | None = None,
        logs: Mapping[str, EndpointLog] | None = None,
    ) -> None:
        self._endpoints = {n: b for n, b in endpoints.items() if b.endpoint.predict_fn is not None}
        self._registry = registry
        self._followers = followers or {}
        self._logs = logs or {}
        # Each endpoint's scorer is made on its first request (its validators take a few ms
        # each: a cold start pays for the endpoint it serves, not for all of them).
        self._scorers: dict[str, Scorer] = {}
        self._making = threading.Lock()

    def endpoint(self, name: str) -> BoundEndpoint:
        return self._scorer(name).bound

    def retry_in(self, name: str) -> float:
        """Seconds until a failed load of the endpoint's model is tried again; until then
        requests get that failure again at once (503 with Retry-After)."""
        return self._scorer(name).retry_in()

    async def predict(self, name: str, raw_instances: Sequence[Any]) -> Scored:
        """Validate and score instances as decoded from JSON (a queue message, a file)."""
        scorer = self._scorer(name)
        with telemetry.current().span("mlfn.validate"):
            # Validating hundreds of instances is CPU work: keep it off the event loop.
            instances = await asyncio.to_thread(scorer.validate, raw_instances)
        # A queue listener bounds its own concurrency; its messages wait rather than fail,
        # behind the endpoint's HTTP requests.
        if scorer.release is not None:
            return await scorer.release.predict(instances, None, bounded=False, bulk=True)
        return await scorer.batcher.submit(instances, bounded=False, bulk=True)

    async def predict_body(self, name: str, body: bytes) -> Scored:
        """Score a V1 predict body ``{"instances": [...]}`` within the endpoint's byte limit."""
        return await self._scorer(name).predict_body(body)

    def scorer(self, name: str) -> Scorer:
        """The endpoint's own scorer, for a caller that keeps it (the HTTP trigger): every
        request after the first goes to it directly."""
        return self._scorer(name)

    def validate(self, name: str, raw: Sequence[Any], field: str = "instances") -> list[BaseModel]:
        """Validate raw instances against the endpoint's input schema; every failing field is
        reported, as a path such as ``instances[3].petal_width``."""
        return self._scorer(name).validate(raw, field)

    def validate_each(self, name: str, raw: Sequence[Any]) -> list[BaseModel | ValidationFailed]:
        """Each raw row validated on its own: its instance, or the error naming its fields."""
        return self._scorer(name).validate_each(raw)

    async def predict_valid(self, name: str, instances: list[BaseModel]) -> Scored:
        """Score independent rows already validated, through the batcher in a run of their
        own: their caller halves them when predict fails (services/halving.py), which the
        batcher's re-running of merged requests alone would only repeat."""
        scorer = self._scorer(name)
        if scorer.release is not None:  # its first read awaited, so stable() never blocks here
            await first_read(scorer.release.follower)
        return await scorer.stable().batcher.submit(
            instances, bounded=False, merge=False, bulk=True
        )

    def predict_valid_sync(self, name: str, instances: list[BaseModel]) -> Scored:
        """Score validated instances on the calling thread, which must run no event loop (a
        Spark worker, say): the caller batches, so there is no batcher to share."""
        scorer = self._scorer(name).stable()
        if scorer.is_async:
            return asyncio.run(scorer.run_async(instances))
        return scorer.run_sync(instances)

    def predicting_columns(self, name: str) -> contextlib.AbstractContextManager[ColumnsCall]:
        """``with predicting_columns(name) as (call, model):`` the endpoint's model held for
        the block, and ``call(columns, n)`` running its columnar predict on this thread (no
        batcher: the caller batches): the output columns, checked for presence and length."""
        return self._scorer(name).stable().predicting_columns()

    def _scorer(self, name: str) -> Scorer:
        found = self._scorers.get(name)
        if found is not None:  # every request after an endpoint's first: no lock
            return found
        bound = self._endpoints.get(name)
        if bound is None:
            raise EndpointNotFound(name)
        with self._making:
            found = self._scorers.get(name)
            if found is None:
                found = Scorer(bound, self._registry, self._followers.get(name))
                found.log = self._logs.get(name)
                self._scorers[name] = found
            return found


class Scorer:
    """One endpoint's validation, batcher and predict calls."""

    def __init__(
        self, bound: BoundEndpoint, registry: ModelRegistry, follower: Follower | None = None
    ) -> None:
        endpoint = bound.endpoint
        self.bound = bound
        self.name = bound.name
        self._registry = registry
        predict = endpoint.predict_fn
        # A columnar predict's adapter kept as it is: its calls go straight to the columnar room.
        self._columnar = isinstance(predict, ColumnarPredict)
        self._predict = predict.direct() if isinstance(predict, ColumnarPredict) else predict
        self.is_async = is_coroutine_function(self._predict)
        self._limits = endpoint.limits
        self._default_timeout_ms = endpoint.limits.default_timeout_ms  # read on every request
        rows: Any = list[endpoint.input]  # type: ignore[name-defined]
        self._instances: TypeAdapter[list[Any]] = TypeAdapter(rows)
        self._instances_fast: TypeAdapter[list[Any]] = TypeAdapter(Annotated[rows, FailFast()])
        self._row: TypeAdapter[Any] = TypeAdapter(endpoint.input)
        # Every field optional (a pipeline imputing each column): an instance naming none of
        # them ("Age" for "age") would validate as all defaults and score; it is refused.
        fields = endpoint.input.model_fields
        self._all_optional = bool(fields) and not any(f.is_required() for f in fields.values())
        # The whole V1 body as one model, so pydantic parses and validates it in one pass.
        body = create_model(
            f"{endpoint.input.__name__}Body",
            instances=(Annotated[rows, FailFast()], ...),  # the careful path lists every error
        )
        self._body: TypeAdapter[Any] = TypeAdapter(body)
        self._output = endpoint.output
        self.busy = Busy()  # shared by the endpoint's versions (a shallow copy of this one)
        self.serve(bound.name, endpoint.model)
        # The endpoint's release, if it follows one: its versions are copies of this scorer.
        self.release = None if follower is None else Releasing(self, follower, registry)
        self.made_for: object = None  # a version's scorer: the release's Version it serves
        self.log: EndpointLog | None = None  # the endpoint's payload log, if it logs
        self.quiet = False  # a shadow's: its failures are told by the shadow's tally

    def serve(self, key: str, ref: Model) -> None:
        """Serve model ``ref``, held in the registry as ``key``: its own runs, placement and
        batcher (requests for different versions never share a run)."""
        self.model_key, self.model_ref = key, ref
        self._placement = Placement()  # sync runs: on the loop once loaded and proved fast
        self._runs = _Runs(self.bound, key, ref, self._registry, self.busy)
        self._info: ModelInfo | None = None
        limits = self._limits
        target = limits.latency_target_ms
        self.batcher: Batcher[BaseModel, Scored] = Batcher(
            self._run,
            Scored.slice,
            max_batch_size=limits.max_batch_size,
            max_wait_s=limits.max_batch_wait_ms / 1000,
            max_concurrency=limits.max_concurrent_batches,
            max_pending=limits.max_pending_requests,
            shared_failure=_not_the_requests_fault,
            name=key,
            run_now=None if self.is_async else self._run_now,
            latency_target_s=None if target is None else target / 1000,
            join=Scored.join,
            timed_by_caller=True,  # _scored, where the run is
            busy=self.busy,
        )
        batcher = self.batcher
        self._runs.interactive_at = lambda: batcher.interactive_at

    def came(self) -> None:
        """An interactive request came that skips the batcher (V2's infer): bulk work rests
        while such requests come, as it does for the batcher's."""
        self.batcher.interactive_at = time.monotonic()

    @property
    def request_runs(self) -> _Runs | None:
        """The run slots a request that skips the batcher takes (V2's infer), ahead of bulk
        work; None for an async predict, whose runs take none."""
        return None if self.is_async else self._runs

    def retry_in(self) -> float:
        """Seconds until a failed load is tried again: of this scorer's model, or of any of
        its release's versions (a queue message waits that long rather than fail again)."""
        mine = self._registry.retry_in(self.model_key)
        return mine if self.release is None else max(mine, self.release.retry_in())

    async def predict_body(
        self,
        body: bytes,
        key: str | None = None,
        request_id: str | None = None,
        timeout_ms: str | None = None,
    ) -> Scored:
        """Score a V1 predict body ``{"instances": [...]}`` within the endpoint's byte limit,
        by the version its release gives the request (``key``: the same version for the same
        key); ``request_id``: the caller's, for the payload log; ``timeout_ms``: the caller's
        deadline (the ``x-mlfn-timeout-ms`` header), from the request's arrival
        (``Deadline.after``): waiting to be read and reading the body count."""
        began = time.monotonic()
        try:
            if timeout_ms is not None or self._default_timeout_ms is not None:
                deadline = Deadline.asked(timeout_ms, self._default_timeout_ms, v1.TIMEOUT_HEADER)
                assert deadline is not None
                if not self._released():  # a request the line would make late: refused unread
                    self.batcher.shed_if_late(1, deadline)
                try:
                    return await within(deadline, self._answer(body, key, request_id, deadline))
                except DeadlineExceeded as exc:
                    told = exc.given_runs_of(self.batcher.last_run_s)
                    if told is exc:
                        raise
                    raise told from None
            return await self._answer(body, key, request_id, None)
        finally:  # the time it was in flight: bulk work rests the longer (``bulk_rest``)
            elapsed = time.monotonic() - began
            self.busy.seconds += elapsed

    async def _answer(
        self, body: bytes, key: str | None, request_id: str | None, deadline: Deadline | None
    ) -> Scored:
        if self.log is not None and self.log.sampled(request_id):
            return await self._logged_body(self.log, body, key, request_id, deadline)
        tel = telemetry.current()
        if tel.on:  # a span costs even when off: the hot path only checks
            with tel.span("mlfn.validate"):
                instances = await self.decode_body(body)
        else:
            instances = await self.decode_body(body)
        return await self._routed(instances, key, deadline)

    async def _logged_body(
        self,
        log: EndpointLog,
        body: bytes,
        key: str | None,
        request_id: str | None,
        deadline: Deadline | None,
    ) -> Scored:
        """``predict_body`` with the request's record handed to the payload log."""
        started = time.perf_counter()
        instances: list[BaseModel] | None = None
        try:
            with telemetry.current().span("mlfn.validate"):
                instances = await self.decode_body(body)
            scored = await self._routed(instances, key, deadline)
        except Exception as exc:
            n = len(instances) if instances else 1
            log.failed(HTTP, started, exc, request_id, instances, n)
            raise
        size = 2 * len(body) + sum(map(len, scored.predictions)) + ROW_BYTES * len(instances)
        log.scored(
            HTTP, started, instances, scored.predictions, scored.model, len(instances), size,
            request_id,
        )  # fmt: skip
        return scored

    async def _routed(
        self, instances: list[BaseModel], key: str | None, deadline: Deadline | None
    ) -> Scored:
        release = self.release
        if release is not None and self._released():
            return await release.predict(instances, key, bounded=True, deadline=deadline)
        if deadline is not None:
            return await self.batcher.submit(instances, deadline=deadline)
        return await self.batcher.submit(instances)

    def _released(self) -> bool:
        """Whether a request goes by the release (its routes, or a read of its document that
        is due) rather than straight to this scorer's own line: two attributes and the clock,
        on the warm path of every endpoint, most of which have no release document."""
        release = self.release
        return release is not None and (
            release.follower.routes is not None or time.monotonic() >= release.follower.check_at
        )

    def load(self) -> None:
        """This scorer's model in memory, loaded if need be (on a thread that may block)."""
        self._registry.get(self.model_key, self.model_ref)

    def stable(self) -> Scorer:
        """The scorer of the release's stable version (the bulk paths': files and Spark), on
        a thread that may block for the document's first read; this one without a release."""
        return self if self.release is None else self.release.stable()

    @property
    def version(self) -> str:
        """The version label this scorer's model answers as (a release's), or ''."""
        return self.model_ref.version or ""

    async def decode_body(self, body: bytes) -> list[BaseModel]:
        instances = self.decode_valid(body) if len(body) <= INLINE_BODY_BYTES else None
        if instances is None:  # large, or invalid: read the careful way, in a thread
            return await asyncio.to_thread(self.decode, body)
        return instances

    def _refuse_unnamed(self, instances: Sequence[BaseModel], field: str = "instances") -> None:
        """ValidationFailed for the first instance that sets none of the input fields."""
        for i, instance in enumerate(instances):
            if not instance.model_fields_set:
                from runtime.columnar.frame import input_keys  # on this error's path only

                keys = input_keys(self.bound.endpoint.input).values()
                names = ", ".join(list(keys)[:10]) + (", ..." if len(keys) > 10 else "")
                where = f"{field}[{i}]"
                message = (
                    f"sets none of the input fields ({names}): each is named by its name or "
                    "alias, as the schema spells it"
                )
                raise ValidationFailed(
                    f"invalid {field}: {where}",
                    detail=[{"field": where, "message": message, "type": "no_field_set"}],
                )

    def decode_valid(self, body: bytes) -> list[BaseModel] | None:
        """The instances of a valid V1 body, parsed and validated by pydantic in one pass;
        None for any body that is not (``decode`` then says what is wrong). Stops at the
        first invalid instance, so a hostile body costs little here. An all-optional schema's
        instance that sets no field is ValidationFailed, as ``validate`` says it."""
        if len(body) > self._limits.max_request_bytes:
            return None
        try:
            instances: list[BaseModel] = self._body.validate_json(body).instances
        except ValidationError:
            return None
        if self._all_optional and instances:
            self._refuse_unnamed(instances)
        return instances or None

    def decode(self, body: bytes) -> list[BaseModel]:
        """The validated instances of a V1 body, or the contract's exact error: 413 for a body
        over the limit, 400 for one that is no predict request, 422 naming failing fields."""
        if len(body) > self._limits.max_request_bytes:
            raise PayloadTooLarge(len(body), self._limits.max_request_bytes)
        instances = self.decode_valid(body)
        if instances is None:
            return self.validate(v1.decode_request(body, max_bytes=self._limits.max_request_bytes))
        return instances

    def validate(self, raw: Sequence[Any], field: str = "instances") -> list[BaseModel]:
        if not raw:
            raise ValidationFailed(
                f"{field} must hold at least one instance",
                detail=[{"field": field, "message": "empty list", "type": "too_short"}],
            )
        items = list(raw)
        try:
            valid: list[BaseModel] = self._instances_fast.validate_python(items)
        except ValidationError:
            pass  # what is wrong, told below
        else:
            if self._all_optional:
                self._refuse_unnamed(valid, field)
            return valid
        # Instance by instance in slices, so a body of a million bad instances costs memory
        # for one slice's errors, and the answer lists at most MAX_REPORTED of them.
        detail: list[dict[str, Any]] = []
        total = 0
        for start in range(0, len(items), VALIDATION_SLICE):
            try:
                self._instances.validate_python(items[start : start + VALIDATION_SLICE])
            except ValidationError as exc:
                total += exc.error_count()
                if len(detail) < MAX_REPORTED:
                    errors = exc.errors(
                        include_url=False, include_context=False, include_input=False
                    )
                    for e in errors[: MAX_REPORTED - len(detail)]:
                        head, *rest = e["loc"] or ("",)  # the instance's index in the slice
                        loc = (start + head if isinstance(head, int) else head, *rest)
                        detail.append(
                            {"field": field + _path(loc), "message": e["msg"], "type": e["type"]}
                        )
        shown = ", ".join(d["field"] for d in detail[:5])
        more = f" and {total - 5} more" if total > 5 else ""
        listed = f" ({len(detail)} listed)" if total > len(detail) else ""
        raise ValidationFailed(f"invalid {field}: {shown}{more}{listed}", detail=detail)

    def validate_each(self, raw: Sequence[Any]) -> list[BaseModel | ValidationFailed]:
        items = list(raw)
        try:
            valid: list[BaseModel | ValidationFailed] = self._instances_fast.validate_python(items)
            return valid
        except ValidationError:
            pass  # which rows, told below
        return [self._validate_row(item) for item in items]

    def _validate_row(self, item: Any) -> BaseModel | ValidationFailed:
        try:
            instance: BaseModel = self._row.validate_python(item)
            return instance
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            detail = [
                {"field": _path(e["loc"]).lstrip("."), "message": e["msg"], "type": e["type"]}
                for e in errors[:MAX_REPORTED]
            ]
            shown = ", ".join(d["field"] or "(row)" for d in detail[:5])
            more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
            return ValidationFailed(f"invalid row: {shown}{more}", detail=detail)

    async def _run(self, instances: list[BaseModel]) -> Scored:
        if self.is_async:
            return await self.run_async(instances)
        return await self._placement.run(len(instances), self._runs, self._scored, instances)

    def _run_now(self, instances: list[BaseModel]) -> Scored | NotNow:
        """A sync predict's run on the loop, when it can start at once (the warm path)."""
        return self._placement.now(len(instances), self._runs, self._scored, instances)

    def run_sync(self, instances: list[BaseModel]) -> Scored:
        """A sync predict's run on this thread, which runs no event loop."""
        return self._placement.here(len(instances), self._runs, self._scored, instances)

    @contextlib.contextmanager
    def predicting_columns(self) -> Iterator[ColumnsCall]:
        from runtime.columnar.frame import output_columns

        predict = self.bound.endpoint.columns_fn
        assert predict is not None, "the columns service calls columnar predicts only"
        who = f"predict of endpoint {self.name!r}"
        # The model is held for the block; a run slot for each call only, taken behind the
        # HTTP requests waiting for one: bulk work never holds the slot between its calls.
        runs = self._runs
        bulk_call = runs.bulk_call
        with telemetry.InvocationOnThread(), runs.model_held() as model:

            def call(columns: dict[str, Any], n: int) -> dict[str, Any]:
                try:
                    returned = bulk_call(predict, columns, model)
                except MlfnError:
                    raise
                except Exception as exc:
                    raise self._failed(exc) from exc
                return output_columns(who, self._output, returned, n)

            yield call, self._model_info(model)

    async def run_async(self, instances: list[BaseModel]) -> Scored:
        """An async predict's run, on the loop."""
        held = self._registry.use(self.model_key, self.model_ref)
        # Loading may block on a download: in a thread. If this task is cancelled meanwhile,
        # the model the thread goes on to take is released when it arrives, not leaked.
        acquiring = asyncio.ensure_future(asyncio.to_thread(held.__enter__))
        try:
            model = await asyncio.shield(acquiring)
        except asyncio.CancelledError:
            acquiring.add_done_callback(lambda f: _release_if_taken(f, held))
            raise
        try:
            return await self._scored(model, instances)
        finally:
            held.__exit__(None, None, None)

    async def _scored(self, model: OnnxModel, instances: list[BaseModel]) -> Scored:
        """The chunk → run → encode loop, once for both kinds of predict: an async predict is
        awaited here, on the loop; a sync one is only called, so this never waits, and runs on
        a thread without a loop too (``placement.finished``)."""
        tel = telemetry.current()
        traced = tel.on  # a span costs even when off: the hot path only checks
        size = self._limits.max_batch_size
        predictions: list[bytes] = []
        began = time.perf_counter()
        for start in range(0, len(instances), size):
            if start:
                end_if_unanswered()  # a deadline passed with chunks to go: those never start
            chunk = instances[start : start + size]
            if traced:
                with tel.span("mlfn.run"):
                    outputs = await self._outputs(chunk, model)
                with tel.span("mlfn.encode"):
                    predictions += self._dump(chunk, outputs, start)
            else:
                predictions += self._dump(chunk, await self._outputs(chunk, model), start)
        self.batcher.ran(len(instances), time.perf_counter() - began)
        return Scored(predictions, self._model_info(model))

    async def _outputs(self, chunk: list[BaseModel], model: OnnxModel) -> Any:
        """What predict returns for ``chunk`` (awaited, for an async predict)."""
        try:
            outputs: Any = self._predict(chunk, model)  # type: ignore[misc]
            if self.is_async:
                outputs = await outputs
        except MlfnError:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
        return outputs

    def _model_info(self, model: OnnxModel) -> ModelInfo:
        """Which model answered; made (and its JSON encoded) once per loaded version."""
        info = self._info
        if info is None or (info.sha256, info.version) != (model.sha256, model.version):
            info = self._info = ModelInfo(self.name, model.version, model.sha256)
        return info

    def _failed(self, exc: Exception) -> PredictFailed:
        if not self.quiet:
            log.error("predict of endpoint %r raised", self.name, exc_info=exc)
        return PredictFailed(self.name, exc)

    def _dump(self, chunk: list[BaseModel], outputs: Any, offset: int) -> list[bytes]:
        """Check what predict returned against its contract and encode each output as JSON."""
        if self._columnar:  # the columns' adapter returns one validated output per instance
            return [encode_output(value) for value in outputs]
        name = self.name
        if inspect.isawaitable(outputs):
            if inspect.iscoroutine(outputs):
                outputs.close()  # never awaited: close it, or Python warns at collection
            fix = (
                "await it inside predict"
                if self.is_async
                else "declare predict async def, or return the outputs"
            )
            raise PredictContractError(
                f"predict of endpoint {name!r} returned an awaitable instead of its outputs; {fix}"
            )
        try:
            count = len(outputs)
        except TypeError:
            count = -1
        if count != len(chunk):
            raise PredictContractError(
                f"predict of endpoint {name!r} returned {count if count >= 0 else 'no list'} "
                f"outputs for {len(chunk)} instances; it must return one output per instance"
            )
        encoded = []
        schema = self._output
        for i, out in enumerate(outputs):
            try:
                value = out if isinstance(out, schema) else schema.model_validate(out)
            except ValidationError as exc:
                raise PredictContractError(
                    f"predict of endpoint {name!r} returned an invalid output for instance "
                    f"{offset + i}: {exc.errors(include_url=False)[0]['msg']}"
                ) from None
            encoded.append(encode_output(value))
        return encoded


class _Runs:
    """An endpoint's sync runs, as ``Placement`` holds them: each takes its model and one of
    the endpoint's ``max_concurrent_batches`` slots, whoever starts it (the batcher for HTTP
    and queue messages, Spark tasks, file slabs, large messages as columns). A run of bulk
    work (``bulk_call``) waits while a request's run waits for a slot on a thread, so an
    HTTP request waits for one bulk call at most."""

    __slots__ = (
        "_calm", "_inline", "_name", "_ref", "_registry", "_slots", "_urgent", "busy",
        "interactive_at",
    )  # fmt: skip

    def __init__(
        self, bound: BoundEndpoint, key: str, ref: Model, registry: ModelRegistry, busy: Busy
    ) -> None:
        limits = bound.endpoint.limits
        self._name, self._ref, self._registry = key, ref, registry
        self._inline = limits.inline_fast_runs
        n = limits.max_concurrent_batches
        # One slot (the default) is a lock: taken and given back in C, where a semaphore's
        # Condition costs a microsecond a run in Python.
        self._slots: _Slots = threading.Lock() if n == 1 else threading.BoundedSemaphore(n)
        self._urgent = 0  # request runs waiting for a slot on a thread
        self._calm = threading.Condition()  # told when none does
        # When the endpoint's last interactive request came (its batcher's), for bulk rests.
        self.interactive_at: Callable[[], float] = lambda: 0.0
        self.busy = busy  # how busy its endpoint's requests keep it (its scorer's)

    def held_now(self) -> _Run | None:
        """A slot and the model, when both are free now (on the loop: never a wait for a slot,
        never a load); None otherwise, and always when the endpoint keeps runs off the loop."""
        if not self._inline or not self._slots.acquire(blocking=False):
            return None
        try:
            held = self._registry.use_loaded(self._name, self._ref)
        except BaseException:
            self._slots.release()
            raise
        if held is None:
            self._slots.release()
            return None
        return _Run(self, held, taken=True)

    def held(self) -> _Run:
        """A slot and the model, waited for and loaded as need be (on a worker thread)."""
        return _Run(self, self._registry.use(self._name, self._ref), taken=False)

    def model_held(self) -> contextlib.AbstractContextManager[OnnxModel]:
        """The model alone, loaded as need be (bulk work takes a slot for each call)."""
        return self._registry.use(self._name, self._ref)

    def wait_for_slot(self) -> None:
        """A request's run: a slot, ahead of the bulk calls waiting for one."""
        with self._calm:
            self._urgent += 1
        try:
            self._slots.acquire()
        finally:
            with self._calm:
                self._urgent -= 1
                if not self._urgent:
                    self._calm.notify_all()

    def release(self) -> None:
        self._slots.release()

    def bulk_call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` as one bulk call: in a slot taken behind the requests
        waiting for one (``_take_bulk``), then, once it is given back, a rest while
        interactive requests come (``_rest_bulk``; not after a call that failed: it ends the
        bulk work). A plain call, not a ``with``: a generator costs a microsecond a call."""
        self._take_bulk()
        began = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        finally:
            self._slots.release()
        self._rest_bulk(time.perf_counter() - began)
        return result

    def _take_bulk(self) -> None:
        """A slot for one bulk call, taken when no request's run waits for one; after
        BULK_PATIENCE_S of requests in a row, taken all the same (slowed, never starved).
        ``bulk_call``'s, which gives it back."""
        # No request waiting (read without the lock: one that starts waiting just after
        # waits for this call alone, as it would for a call that had the slot already): the
        # slot at once, no Condition taken. That and a generator's ``with`` cost ~4 us a call,
        # against ~10 us for the model's run of 64 iris rows.
        if not self._urgent:
            self._slots.acquire()
            if not self._urgent:
                return
            self._slots.release()  # a request came meanwhile: it goes first
        patience = time.monotonic() + BULK_PATIENCE_S
        while True:
            with self._calm:
                self._calm.wait_for(lambda: not self._urgent, patience - time.monotonic())
            self._slots.acquire()
            if not self._urgent or time.monotonic() >= patience:
                return
            self._slots.release()  # a request came meanwhile: it goes first

    def _rest_bulk(self, ran_s: float) -> None:
        """After a bulk call that ran ``ran_s`` (its slot given back): a rest while
        interactive requests come (``bulk_rest``)."""
        rest = bulk_rest(ran_s, self.interactive_at(), self.busy.share())
        if rest:
            time.sleep(rest)


# Bulk calls wait for requests' runs at most this long in a row.
BULK_PATIENCE_S = 1.0


class _Slots(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


class _Run:
    """``with``: one run's slot (``taken`` already, or waited for here) and its model."""

    __slots__ = ("_held", "_runs", "_taken")

    def __init__(
        self,
        runs: _Runs,
        held: contextlib.AbstractContextManager[OnnxModel],
        taken: bool,
    ) -> None:
        self._runs, self._held, self._taken = runs, held, taken

    def __enter__(self) -> OnnxModel:
        if not self._taken:
            self._runs.wait_for_slot()
            deadline = current_deadline()  # its request's own, if the run is for one alone
            if deadline is not None and deadline.passed():  # answered 504 meanwhile
                self._runs.release()
                raise DeadlineExceeded(deadline.budget_ms)
        try:
            return self._held.__enter__()
        except BaseException:
            self._runs.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self._held.__exit__(*exc)
        finally:
            self._runs.release()


def _not_the_requests_fault(exc: BaseException) -> bool:
    """A failure every request of a batch would meet alone: the store, the model file, the
    settings. Rerunning each request alone would only repeat it, one timeout after another."""
    return isinstance(exc, MlfnError) and (
        exc.retryable or isinstance(exc, ModelLoadFailed | IntegrityError | ConfigError)
    )


def encode_output(value: BaseModel) -> bytes:
    """One prediction as JSON, by its own class (a subclass keeps its fields) and aliases."""
    try:
        return value.__pydantic_serializer__.to_json(value, by_alias=True)
    except PydanticSerializationError:
        pass
    try:
        # What pydantic's JSON cannot write (a lone surrogate echoed from the input, say),
        # the standard library escapes.
        doc = value.model_dump(mode="json", by_alias=True)
    except (PydanticSerializationError, ValueError) as exc:  # bytes that are not UTF-8, say
        raise PredictContractError(
            f"predict returned an output that cannot be written as JSON: {exc}"
        ) from None
    return json.dumps(doc, separators=(",", ":")).encode()


def _release_if_taken(acquired: asyncio.Future[Any], held: Any) -> None:
    if not acquired.cancelled() and acquired.exception() is None:
        held.__exit__(None, None, None)


def _path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
