"""Where validated instances become predictions: transport-neutral, shared by every trigger."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from runtime.endpoint import BoundEndpoint
from runtime.errors import (
    EndpointNotFound,
    MlfnError,
    PredictContractError,
    ValidationFailed,
)
from runtime.models.registry import ModelRegistry

log = logging.getLogger("mlfn.serving")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Scored:
    """Predictions as JSON-ready dicts (by the output schema's aliases), one per instance."""

    predictions: list[dict[str, Any]]
    model: ModelInfo


class PredictFailed(MlfnError):
    """The endpoint's predict function raised: a server-side fault, never the client's."""

    status = 500


class Scorer:
    """Scores instances for the app's endpoints: validate, load the model once, call predict
    in chunks of at most ``max_batch_size``, check what predict returned."""

    def __init__(self, endpoints: Mapping[str, BoundEndpoint], registry: ModelRegistry) -> None:
        self._endpoints = dict(endpoints)
        self.registry = registry
        self._adapters: dict[str, TypeAdapter[list[Any]]] = {}

    def endpoint(self, name: str) -> BoundEndpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise EndpointNotFound(name) from None

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

    def predict(self, name: str, instances: list[BaseModel]) -> Scored:
        bound = self.endpoint(name)
        endpoint = bound.endpoint
        if endpoint.predict_fn is None:
            raise EndpointNotFound(name)
        size = endpoint.limits.max_batch_size
        predictions: list[dict[str, Any]] = []
        with self.registry.use(name, endpoint.model) as model:
            for start in range(0, len(instances), size):
                chunk = instances[start : start + size]
                try:
                    outputs = endpoint.predict_fn(chunk, model)
                except MlfnError:
                    raise
                except Exception as exc:
                    log.exception("predict of endpoint %r raised", name)
                    raise PredictFailed(
                        f"predict of endpoint {name!r} raised {type(exc).__name__}: {exc}"
                    ) from exc
                predictions.extend(self._dump_outputs(bound, chunk, outputs, start))
        return Scored(predictions, ModelInfo(name, model.version, model.sha256))

    def _dump_outputs(
        self, bound: BoundEndpoint, chunk: list[BaseModel], outputs: Any, offset: int
    ) -> list[dict[str, Any]]:
        schema = bound.endpoint.output
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


def _path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
