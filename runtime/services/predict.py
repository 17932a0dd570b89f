"""The predict service: raw instances in, validated, micro-batched, scored by the endpoint's
predict function, checked against its contract, predictions out. Every trigger calls this."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from runtime.batching import Batcher
from runtime.endpoint import BoundEndpoint
from runtime.errors import (
    EndpointNotFound,
    MlfnError,
    PredictContractError,
    PredictFailed,
    ValidationFailed,
)
from runtime.models.onnx_model import OnnxModel
from runtime.models.registry import ModelRegistry
from runtime.protocol import v1
from runtime.scored import ModelInfo, Scored

log = logging.getLogger("mlfn.predict")


class PredictService:
    """Scores instances for the app's endpoints that have a predict function.

    Concurrent requests to one endpoint share model calls (micro-batching, up to the endpoint's
    ``max_batch_size``); a request larger than that is scored in chunks of that size. A sync
    predict function runs in a worker thread, an ``async def`` one on the event loop.
    """

    def __init__(self, endpoints: Mapping[str, BoundEndpoint], registry: ModelRegistry) -> None:
        self._endpoints = {n: b for n, b in endpoints.items() if b.endpoint.predict_fn is not None}
        self._registry = registry
        self._adapters: dict[str, TypeAdapter[list[Any]]] = {}
        self._batchers: dict[str, Batcher[Any, Scored]] = {}
        for name, bound in self._endpoints.items():
            limits = bound.endpoint.limits
            asynchronous = _is_async(bound.endpoint.predict_fn)
            run = self._run_async if asynchronous else self._run_sync
            self._batchers[name] = Batcher(
                functools.partial(run, name),
                Scored.slice,
                max_batch_size=limits.max_batch_size,
                max_wait_s=limits.max_batch_wait_ms / 1000,
            )

    def endpoint(self, name: str) -> BoundEndpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise EndpointNotFound(name) from None

    async def predict(self, name: str, raw_instances: Sequence[Any]) -> Scored:
        """Validate and score instances as decoded from JSON (a queue message, a file)."""
        # Validating hundreds of instances is CPU work: keep it off the event loop.
        instances = await asyncio.to_thread(self.validate, name, raw_instances)
        return await self._batchers[name].submit(instances)

    async def predict_body(self, name: str, body: bytes) -> Scored:
        """Score a V1 predict body ``{"instances": [...]}`` within the endpoint's byte limit."""
        limit = self.endpoint(name).endpoint.limits.max_request_bytes

        def decode() -> list[BaseModel]:
            return self.validate(name, v1.decode_request(body, max_bytes=limit))

        # Parsing and validating a large body is CPU work: one hop off the event loop for both.
        instances = await asyncio.to_thread(decode)
        return await self._batchers[name].submit(instances)

    def validate(self, name: str, raw: Sequence[Any], field: str = "instances") -> list[BaseModel]:
        """Validate raw instances against the endpoint's input schema; every failing field is
        reported, as a path such as ``instances[3].petal_width``."""
        bound = self.endpoint(name)
        if not raw:
            raise ValidationFailed(
                f"{field} must hold at least one instance",
                detail=[{"field": field, "message": "empty list", "type": "too_short"}],
            )
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = self._adapters[name] = TypeAdapter(list[bound.endpoint.input])  # type: ignore[name-defined]
        try:
            return adapter.validate_python(list(raw))
        except ValidationError as exc:
            detail = [
                {"field": field + _path(e["loc"]), "message": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            shown = ", ".join(d["field"] for d in detail[:5])
            more = f" and {len(detail) - 5} more" if len(detail) > 5 else ""
            raise ValidationFailed(f"invalid {field}: {shown}{more}", detail=detail) from None

    def _run_sync(self, name: str, instances: list[BaseModel]) -> Scored:
        bound = self.endpoint(name)
        with self._registry.use(name, bound.endpoint.model) as model:
            predictions: list[dict[str, Any]] = []
            for start, chunk in self._chunks(bound, instances):
                outputs = self._call(bound, chunk, model)
                predictions.extend(self._dump_outputs(bound, chunk, outputs, start))
        return Scored(predictions, ModelInfo(name, model.version, model.sha256))

    async def _run_async(self, name: str, instances: list[BaseModel]) -> Scored:
        bound = self.endpoint(name)
        predict = bound.endpoint.predict_fn
        assert predict is not None
        held = self._registry.use(name, bound.endpoint.model)
        # Loading may block on a download: in a thread. If this task is cancelled meanwhile,
        # the model the thread goes on to take is released when it arrives, not leaked.
        acquiring = asyncio.ensure_future(asyncio.to_thread(held.__enter__))
        try:
            model = await asyncio.shield(acquiring)
        except asyncio.CancelledError:
            acquiring.add_done_callback(lambda f: _release_if_taken(f, held))
            raise
        try:
            predictions: list[dict[str, Any]] = []
            for start, chunk in self._chunks(bound, instances):
                try:
                    outputs = await predict(chunk, model)  # type: ignore[misc]
                except MlfnError:
                    raise
                except Exception as exc:
                    raise self._failed(bound.name, exc) from exc
                predictions.extend(self._dump_outputs(bound, chunk, outputs, start))
        finally:
            held.__exit__(None, None, None)
        return Scored(predictions, ModelInfo(name, model.version, model.sha256))

    @staticmethod
    def _chunks(
        bound: BoundEndpoint, instances: list[BaseModel]
    ) -> list[tuple[int, list[BaseModel]]]:
        size = bound.endpoint.limits.max_batch_size
        return [
            (start, instances[start : start + size]) for start in range(0, len(instances), size)
        ]

    def _call(self, bound: BoundEndpoint, chunk: list[BaseModel], model: OnnxModel) -> Any:
        predict = bound.endpoint.predict_fn
        assert predict is not None
        try:
            return predict(chunk, model)
        except MlfnError:
            raise
        except Exception as exc:
            raise self._failed(bound.name, exc) from exc

    @staticmethod
    def _failed(name: str, exc: Exception) -> PredictFailed:
        log.error("predict of endpoint %r raised", name, exc_info=exc)
        return PredictFailed(name, exc)

    def _dump_outputs(
        self, bound: BoundEndpoint, chunk: list[BaseModel], outputs: Any, offset: int
    ) -> list[dict[str, Any]]:
        schema = bound.endpoint.output
        if inspect.isawaitable(outputs):
            if inspect.iscoroutine(outputs):
                outputs.close()  # never awaited: close it, or Python warns at collection
            fix = (
                "await it inside predict"
                if _is_async(bound.endpoint.predict_fn)
                else "declare predict async def, or return the outputs"
            )
            raise PredictContractError(
                f"predict of endpoint {bound.name!r} returned an awaitable instead of its "
                f"outputs; {fix}"
            )
        try:
            count = len(outputs)
        except TypeError:
            count = -1
        if count != len(chunk):
            raise PredictContractError(
                f"predict of endpoint {bound.name!r} returned {count if count >= 0 else 'no list'} "
                f"outputs for {len(chunk)} instances; it must return one output per instance"
            )
        dumped = []
        for i, out in enumerate(outputs):
            try:
                value = out if isinstance(out, schema) else schema.model_validate(out)
            except ValidationError as exc:
                raise PredictContractError(
                    f"predict of endpoint {bound.name!r} returned an invalid output for instance "
                    f"{offset + i}: {exc.errors(include_url=False)[0]['msg']}"
                ) from None
            dumped.append(value.model_dump(mode="json", by_alias=True))
        return dumped


def _release_if_taken(acquired: asyncio.Future[Any], held: Any) -> None:
    if not acquired.cancelled() and acquired.exception() is None:
        held.__exit__(None, None, None)


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


def _path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
