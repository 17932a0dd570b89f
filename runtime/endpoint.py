"""What a user declares in ``functions/NAME/endpoint.py``: schemas, model, limits, predict."""

from __future__ import annotations

import numbers
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from pydantic import BaseModel

from runtime.models.reference import Model as Model  # users declare it beside Endpoint
from runtime.payload_log.declared import Log
from runtime.protocol import batch as batch_names
from runtime.protocol.batch_formats import RESERVED_COLUMNS, output_columns
from runtime.protocol.jobs import (
    check_queue_name,
    is_container_name,
    is_host_container,
    requests_queue,
    results_queue,
)

if TYPE_CHECKING:
    from runtime.models.onnx_model import OnnxModel
    from runtime.releases.document import Release

PredictFn: TypeAlias = Callable[[list[Any], "OnnxModel"], Sequence[Any] | Awaitable[Sequence[Any]]]
"""``predict(instances, model) -> outputs``, a plain function or an ``async def`` one."""
F = TypeVar("F", bound=PredictFn)
Columns: TypeAlias = dict[str, Any]
"""A batch as one numpy array per field, by field name (``Endpoint.predict_columns``)."""
ColumnsFn: TypeAlias = Callable[[Columns, "OnnxModel"], Mapping[str, Any]]
"""``predict(columns, model) -> columns``: one array per field, in and out (runtime.columnar)."""
C = TypeVar("C", bound=ColumnsFn)


def stacked(columns: Columns, names: Sequence[str], dtype: Any = None) -> Any:
    """The named columns of a columnar predict's batch side by side as one numpy matrix, a row
    per instance (a 1-D column is one column of it, a 2-D one its width), as ``dtype`` if
    given: a model input made of several fields. For rows scored in several predict calls (a
    file's slab, a Spark batch) the matrix is made once for all of them and each call gets a
    read-only view of its rows; ``np.column_stack`` and ``astype`` in predict would make it
    again for every ``max_batch_size`` rows."""
    own = getattr(columns, "stacked", None)  # runtime.columnar.frame.SlabPart's
    if own is not None:
        return own(names, dtype)
    from runtime.columnar.frame import stack_columns

    return stack_columns(columns, names, dtype)


DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _numpy_bool() -> type:
    """numpy's bool type where numpy is imported already (a limit may be one), else bool."""
    numpy = sys.modules.get("numpy")
    return numpy.bool_ if numpy is not None else bool


MAX_MS = 86_400_000  # a day, the longest a limit of time may be


@dataclass(frozen=True)
class Limits:
    """Per-endpoint limits.

    max_batch_size: instances per predict call; concurrent requests are merged up to it, and
        a larger request is scored in chunks of that size.
    max_request_bytes: checked before the body is parsed.
    max_batch_wait_ms: how long a batch may wait for company when other requests are in
        flight (an idle endpoint never waits). Set, it wins over a latency target's waiting
        (the target still sheds and sets deadlines).
    max_concurrent_batches: predict calls of this endpoint that may run at once, whichever
        path starts them (the batcher's runs and the bulk paths' column runs together).
    max_pending_requests: HTTP requests that may wait for a run; more are answered 503 with
        Retry-After instead of waiting without limit (queue messages wait: the listener
        bounds how many run at once).
    inline_fast_runs: a sync predict whose runs (at a batch's size) have proved shorter than
        a trip to a worker thread runs on the event loop instead. Set False if predict may
        block now and then, or runs an event loop of its own.
    latency_target_ms: the time an HTTP or V2 request should be answered within. The
        batcher learns the endpoint's run time by batch size and waits for company (under
        load) only while the expected answer stays within half the target; a request that
        cannot be answered within it is refused at once (503, Retry-After), and one still
        unanswered at the target gets 504 then. None: no waiting beyond
        ``max_batch_wait_ms``, no shedding.
    timeout_ms: the deadline of an HTTP or V2 request that carries none of its own
        (``x-mlfn-timeout-ms``, V2's ``parameters.timeout``): at it the caller gets 504 with
        Retry-After, and work not started by then never starts. Default: the latency target.
    """

    max_batch_size: int = 64
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch_wait_ms: float = 0.0
    max_concurrent_batches: int = 1
    max_pending_requests: int = 512
    inline_fast_runs: bool = True
    latency_target_ms: float | None = None
    timeout_ms: float | None = None

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("max_batch_size", "max_request_bytes", "max_concurrent_batches",
                     "max_pending_requests"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_batch_wait_ms < 0:
            raise ValueError("max_batch_wait_ms must be >= 0")
        for name in ("latency_target_ms", "timeout_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None)")

    def _check_types(self) -> None:
        """Each limit of its kind, said by name, and kept as Python's own int, float or bool:
        a setting read from text (``"20"``) or a bool where a number goes would otherwise fail
        later, in a comparison, with no name; a numpy number would reach an error's JSON."""
        for name in ("max_batch_size", "max_request_bytes", "max_concurrent_batches",
                     "max_pending_requests"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool | _numpy_bool()) or not isinstance(value, numbers.Integral):
                raise TypeError(f"Limits.{name} must be an int, not {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("max_batch_wait_ms", "latency_target_ms", "timeout_ms"):
            value = getattr(self, name)
            optional = name != "max_batch_wait_ms"
            if value is None and optional:
                continue
            kind = "a finite number of milliseconds" + (" or None" if optional else "")
            if isinstance(value, bool | _numpy_bool()) or not isinstance(value, numbers.Real):
                raise TypeError(f"Limits.{name} must be {kind}, not {value!r}")
            # A day at most: a longer wait or deadline is none, and Python's clocks and waits
            # overflow on the huge (an int of 10**400 overflows even a float).
            if not -MAX_MS <= cast(float, value) <= MAX_MS:  # False for NaN too
                raise ValueError(f"Limits.{name} must be {kind} (at most a day), not {value!r}")
            plain = int(value) if isinstance(value, numbers.Integral) else float(value)
            object.__setattr__(self, name, plain)
        if not isinstance(self.inline_fast_runs, bool | _numpy_bool()):
            raise TypeError(
                f"Limits.inline_fast_runs must be a bool, not {self.inline_fast_runs!r}"
            )
        object.__setattr__(self, "inline_fast_runs", bool(self.inline_fast_runs))

    @property
    def default_timeout_ms(self) -> float | None:
        """A request's deadline when it brings none: ``timeout_ms``, else the target."""
        return self.timeout_ms if self.timeout_ms is not None else self.latency_target_ms


@dataclass(frozen=True)
class Queues:
    """The storage queues of an endpoint. Defaults: ``NAME-requests`` and ``NAME-results``
    (``_`` in the endpoint name becomes ``-``)."""

    requests: str | None = None
    results: str | None = None

    def __post_init__(self) -> None:
        for name in (self.requests, self.results):
            if name is not None:
                check_queue_name(name)


@dataclass(frozen=True)
class Batch:
    """Batch scoring of files (docs/batch.md): a file dropped into the ``files`` container is
    scored row by row into the ``results`` container. Defaults: ``NAME-batch`` and
    ``NAME-batch-results``. ``enabled=False`` registers no blob trigger for the endpoint."""

    files: str | None = None
    results: str | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in (self.files, self.results):
            if name is not None:
                check_container_name(name)


class Endpoint:
    """An ML endpoint: validated instances in, a batch-first ``predict`` over one ONNX model.

    Declare it at module level in ``functions/NAME/endpoint.py``; the folder name is the
    endpoint's name. Without a predict function the endpoint serves tensors only.
    """

    def __init__(
        self,
        input: type[BaseModel] | None = None,
        output: type[BaseModel] | None = None,
        *,
        model: Model | str,
        limits: Limits | None = None,
        queues: Queues | None = None,
        batch: Batch | None = None,
        predict: PredictFn | None = None,
        release: Mapping[str, Any] | None = None,
        route_key: str | None = None,
        log: Log | bool | None = None,
    ) -> None:
        """release: the endpoint's release until a release document is written (the document
            wins), in the document's own form (docs/releases.md), checked here as an instance
            checks a document: ``{"versions": {"v1": {"uri": "iris.onnx"}, ...}, "stable":
            "v1", "weights": {...}}``; relative URIs are beside the endpoint's model.
        route_key: an input field whose value keeps a request on one version of a split, when
            the request has no ``x-mlfn-route-key`` header (the first instance's, for a
            request of several).
        log: the endpoint's payload log (docs/payload-log.md): ``Log(sample=0.1)``, True for
            ``Log()``, False for none whatever ``MLFN_PAYLOAD_LOG`` says; None (the default):
            as the settings say."""
        for role, schema in (("input", input), ("output", output)):
            if schema is not None and not (
                isinstance(schema, type) and issubclass(schema, BaseModel)
            ):
                raise TypeError(f"Endpoint {role} must be a pydantic BaseModel subclass")
        self._input = input
        self._output = output
        self.model = model if isinstance(model, Model) else Model(model)
        self.limits = limits or Limits()
        self.queues = queues or Queues()
        self.batch = batch or Batch()
        self.release = None if release is None else _declared_release(release)
        if route_key is not None and (input is None or route_key not in input.model_fields):
            fields = sorted(input.model_fields) if input is not None else []
            raise ValueError(f"route_key {route_key!r} is not a field of the input model: {fields}")
        self.route_key = route_key
        if log is not None and not isinstance(log, bool | Log):
            raise TypeError("Endpoint log must be a Log(...), True or False")
        self.log = Log(enabled=log) if isinstance(log, bool) else log
        self.predict_fn: PredictFn | None = None
        self.columns_fn: ColumnsFn | None = None
        if predict is not None:
            self.predict(predict)

    def predict(self, fn: F) -> F:
        """Decorator: register ``fn(instances, model) -> outputs`` (same length, same order)."""
        if self._input is None or self._output is None:
            raise TypeError("an Endpoint with a predict function needs input and output models")
        self.predict_fn = fn
        self.columns_fn = None
        return fn

    def predict_columns(self, fn: C) -> C:
        """Decorator: register ``fn(columns, model) -> columns``, the columnar form of predict.

        ``columns`` holds the batch as one numpy array per input field, by field name (float64,
        int64, bool, an object array of str, a 2-D array for a fixed-length list: see
        ``runtime.columnar.frame``); ``fn`` returns one array or list per output field, by
        field name, a value per instance in order. Spark and batch files then validate and
        score whole columns without a Python object per row; HTTP and queue requests reach
        ``fn`` too, their instances gathered into columns.
        """
        if self._input is None or self._output is None:
            raise TypeError("an Endpoint with a predict function needs input and output models")
        if is_coroutine_function(fn):
            raise TypeError("a columnar predict is a plain function (def, not async def)")
        self.predict_fn = ColumnarPredict(fn, self._input, self._output)
        self.columns_fn = fn
        return fn

    @property
    def input(self) -> type[BaseModel]:
        if self._input is None:
            raise TypeError("this tensor-only Endpoint has no input model")
        return self._input

    @property
    def output(self) -> type[BaseModel]:
        if self._output is None:
            raise TypeError("this tensor-only Endpoint has no output model")
        return self._output

    def __repr__(self) -> str:
        if self._input is None or self._output is None:
            return f"Endpoint(model={self.model.uri!r})"
        schemas = f"input={self._input.__name__}, output={self._output.__name__}"
        return f"Endpoint({schemas}, model={self.model.uri!r})"


class ColumnarPredict:
    """A columnar predict as the row path calls it (the ``predict_fn`` of an endpoint declared
    with ``predict_columns``): instances in as columns, the returned columns out as the output
    model's instances. The work is ``runtime.columnar.frame.RowsThroughColumns``, imported on
    the first call, never at indexing; a caller that keeps the predict keeps ``direct()``."""

    def __init__(self, fn: ColumnsFn, input: type[BaseModel], output: type[BaseModel]) -> None:
        self.fn = fn
        self.input = input
        self.output = output
        self.__name__ = getattr(fn, "__name__", "predict")
        self._direct: Callable[[list[Any], OnnxModel], list[BaseModel]] | None = None

    def direct(self) -> Callable[[list[Any], OnnxModel], list[BaseModel]]:
        if self._direct is None:
            from runtime.columnar.frame import RowsThroughColumns

            self._direct = RowsThroughColumns(self.fn, self.input, self.output)
        return self._direct

    def __call__(self, instances: list[Any], model: OnnxModel) -> list[BaseModel]:
        return self.direct()(instances, model)


def is_coroutine_function(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine: an ``async def``, or an object whose
    ``__call__`` is one."""
    import inspect

    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


_NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


@dataclass(frozen=True)
class BoundEndpoint:
    """An endpoint with the name it is served under (its folder's name)."""

    name: str
    endpoint: Endpoint

    def __post_init__(self) -> None:
        check_endpoint_name(self.name)
        check_queue_name(self.requests_queue)
        check_queue_name(self.results_queue)
        if self.endpoint.batch.enabled:
            check_container_name(self.batch_container, "Batch(files=...)")
            check_container_name(self.results_container, "Batch(results=...)")
            if self.batch_container == self.results_container:
                raise ValueError(
                    f"endpoint {self.name!r}: Batch files and results are both container "
                    f"{self.batch_container!r}; every result would be scored again, forever"
                )
            self._check_batch_columns()

    @property
    def requests_queue(self) -> str:
        return self.endpoint.queues.requests or requests_queue(self.name)

    @property
    def results_queue(self) -> str:
        return self.endpoint.queues.results or results_queue(self.name)

    def _check_batch_columns(self) -> None:
        """Batch results have the columns ``row`` and ``error`` beside the output's fields: an
        output field of either name would make the files ambiguous (CSV) or unreadable
        (Parquet)."""
        output = self.endpoint._output
        if output is None or self.endpoint.predict_fn is None:
            return
        clash = sorted({name for name, _ in output_columns(output)} & set(RESERVED_COLUMNS))
        if clash:
            raise ValueError(
                f"endpoint {self.name!r}: output field {clash[0]!r} clashes with the batch "
                "files' own column of that name; rename it (serialization_alias=...) or turn "
                "batch files off (batch=Batch(enabled=False))"
            )

    @property
    def batch_container(self) -> str:
        return self.endpoint.batch.files or batch_names.batch_container(self.name)

    @property
    def results_container(self) -> str:
        return self.endpoint.batch.results or batch_names.results_container(self.name)


def check_container_name(name: str, instead: str = "") -> None:
    """Raise ValueError unless ``name`` follows Azure's blob container naming rules."""
    hint = f"; name another with {instead}, or turn batch files off" if instead else ""
    if not is_container_name(name):
        raise ValueError(
            f"container name {name!r} is invalid: Azure container names are 3-63 lowercase "
            f"letters, digits and single hyphens, starting and ending with a letter or digit{hint}"
        )
    if is_host_container(name):  # the local host would score its own receipts
        raise ValueError(
            f"container {name!r} belongs to the Functions host (azure-webjobs-*, $...): "
            f"files and results go in the app's own containers{hint}"
        )


def check_endpoint_name(name: str) -> None:
    """Raise ValueError unless ``name`` can be an endpoint's (and its folder's) name."""
    # The name becomes a route segment, a function name and (with '-') queue names, whose
    # rules (lowercase, 3-63 chars including '-requests-poison') are the strictest of the three.
    if not _NAME.match(name):
        raise ValueError(
            f"endpoint name {name!r} must match {_NAME.pattern} "
            "(lowercase letters, digits and '_', 2-40 characters, starting with a letter)"
        )


def _declared_release(release: Mapping[str, Any]) -> Release:
    """A release declared in code, checked as a document is (a ``ReleaseInvalid`` naming the
    field, at import)."""
    import json

    from runtime.releases.document import parse

    try:
        data = json.dumps(release).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Endpoint release must be JSON-like, as a release document: {exc}"
        ) from None
    return parse(data)
