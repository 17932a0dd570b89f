"""Records as one Parquet file's columns: the same columns for every endpoint (when, where
from, which model, how it went) and then each input field and prediction field as a typed
column of its own (docs/payload-log.md lists them). Runs on the flush thread, never on a
request's path; pyarrow is imported here, on the first flush."""

from __future__ import annotations

import json
import logging
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from runtime import redact
from runtime.payload_log.declared import not_logged
from runtime.payload_log.records import Entry
from runtime.protocol.batch_formats import output_columns
from runtime.protocol.parquet_rows import arrow_type, pyarrow
from runtime.scored import ModelInfo

log = logging.getLogger("mlfn.payload_log")

FORMAT_VERSION = 1
METADATA_KEY = b"mlfn.payload_log"
INPUT, PREDICTION = "input_", "prediction_"


class Layout:
    """An endpoint's columns: the input fields it may log (those marked ``NotLogged`` left
    out, whatever path the request took) and its prediction fields, with their annotations."""

    def __init__(
        self, endpoint: str, model: type[BaseModel] | None, output: type[BaseModel] | None
    ) -> None:
        self.endpoint = endpoint
        self.model = model
        self.hidden = not_logged(model) if model is not None else frozenset()
        # (attribute, key as the caller writes it, annotation)
        self.inputs: list[tuple[str, str, Any]] = []
        if model is not None:
            self.inputs = [
                (name, f.alias or name, f.annotation)
                for name, f in model.model_fields.items()
                if name not in self.hidden
            ]
        self.predictions: list[tuple[str, Any]] = output_columns(output) if output else []
        # A field holding a model with fields of its own marked NotLogged has no declared
        # type: its Arrow struct would name them. Its values (without them) say its type.
        self._declared = {INPUT + key: None if _hides(a) else a for _, key, a in self.inputs}
        self._declared |= {PREDICTION + key: a for key, a in self.predictions}

    def table(self, entries: Sequence[Entry]) -> Any:
        """One Parquet file's table of ``entries`` (all of this endpoint)."""
        pa = pyarrow()
        built = _Columns()
        for name in self._declared:  # every file has the declared columns, if only nulls
            built.put(name, [])
        for entry in entries:
            self._add(built, entry)
        meta = _meta_columns(pa, self.endpoint, entries)
        names = list(meta)
        arrays = list(meta.values())
        for name, values in built.columns.items():
            names.append(name)
            arrays.append(_typed(pa, name, values, self._declared.get(name)))
        fields = {
            "version": FORMAT_VERSION,
            "endpoint": self.endpoint,
            "input_fields": [n[len(INPUT) :] for n in built.columns if n.startswith(INPUT)],
            "prediction_fields": [
                n[len(PREDICTION) :] for n in built.columns if n.startswith(PREDICTION)
            ],
        }
        table = pa.Table.from_arrays(arrays, names=names)
        return table.replace_schema_metadata({METADATA_KEY: json.dumps(fields).encode()})

    def _add(self, built: _Columns, entry: Entry) -> None:
        n = entry.rows
        inputs = entry.inputs
        if isinstance(inputs, Mapping):  # tensors by name (V2)
            if not self.hidden:  # a tensor cannot say which of its values a marked field is
                for name, tensor in inputs.items():
                    built.put(INPUT + name, _tensor_rows(tensor, n))
        elif inputs is not None:
            rows = [self._instance(item) for item in inputs]
            for _, key, _ in self.inputs:
                built.put(INPUT + key, [row.get(key) for row in rows])
        predictions = entry.predictions
        if isinstance(predictions, Mapping):
            for name, tensor in predictions.items():
                built.put(PREDICTION + name, _tensor_rows(tensor, n))
        elif predictions is not None:
            docs = [json.loads(p) for p in predictions]
            for key, _ in self.predictions:
                built.put(PREDICTION + key, [doc.get(key) for doc in docs])
        built.end_rows(n)

    def _instance(self, item: Any) -> dict[str, Any]:
        """An instance's loggable values by key: a validated model's, or a raw row (a queue
        message scored as columns) validated again, so its values have the fields' types."""
        if isinstance(item, dict) and self.model is not None:
            try:
                item = self.model.model_validate(item)
            except ValidationError:  # a row refused: its values would break the types
                return {}
        if isinstance(item, BaseModel):
            return {key: _plain(getattr(item, attr, None)) for attr, key, _ in self.inputs}
        return {}


def _hides(annotation: Any, seen: frozenset[type] = frozenset()) -> bool:
    """Whether ``annotation`` holds, at any depth, a model with a field marked NotLogged (a
    model that holds itself is looked into once)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return False
        inner = seen | {annotation}
        return bool(not_logged(annotation)) or any(
            _hides(f.annotation, inner) for f in annotation.model_fields.values()
        )
    return any(_hides(arg, seen) for arg in typing.get_args(annotation))


class _Columns:
    """Columns filled a request at a time; a column first seen late is filled with nulls for
    the rows before it, and a request without it gets nulls."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}
        self._rows = 0

    def put(self, name: str, values: list[Any]) -> None:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = [None] * self._rows
        column.extend(values)

    def end_rows(self, n: int) -> None:
        self._rows += n
        for column in self.columns.values():
            if len(column) < self._rows:
                column.extend([None] * (self._rows - len(column)))
            elif len(column) > self._rows:  # a tensor of more rows than instances: cut
                del column[self._rows :]


def _meta_columns(pa: Any, endpoint: str, entries: Sequence[Entry]) -> dict[str, Any]:
    def each(get: Any) -> list[Any]:
        return [get(e) for e in entries for _ in range(e.rows)]

    def model(e: Entry) -> ModelInfo | _NoModel:
        return e.model or _NO_MODEL

    rows = [e.offset + i for e in entries for i in range(e.rows)]
    return {
        "time": pa.array(each(lambda e: int(e.time * 1_000_000)), pa.timestamp("us", tz="UTC")),
        "endpoint": pa.array([endpoint] * len(rows), pa.string()),
        "source": pa.array(each(lambda e: e.source), pa.string()),
        "model_version": pa.array(each(lambda e: model(e).version), pa.string()),
        "model_sha256": pa.array(each(lambda e: model(e).sha256), pa.string()),
        "invocation_id": pa.array(each(lambda e: e.invocation_id), pa.string()),
        "trace_id": pa.array(each(lambda e: e.trace_id), pa.string()),
        "request_id": pa.array(each(lambda e: e.request_id), pa.string()),
        "row": pa.array(rows, pa.int32()),
        "status": pa.array(each(lambda e: e.status), pa.int16()),
        "latency_ms": pa.array(each(lambda e: e.latency_ms), pa.float64()),
        "error": pa.array(each(lambda e: e.error), pa.string()),
    }


class _NoModel:
    """A failed request's model: none answered."""

    version = sha256 = None


_NO_MODEL = _NoModel()


def _tensor_rows(tensor: Any, n: int) -> list[Any]:
    values = tensor.tolist() if hasattr(tensor, "tolist") else list(tensor)
    if not isinstance(values, list):  # a scalar tensor
        values = [values]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values[:n]]


def _plain(value: Any) -> Any:
    """A value as its column holds it: a nested model as a dict without its own fields marked
    ``NotLogged``, whatever the depth; every text that may hold a credential (a URL, a
    connection string) redacted, in lists and dicts too."""
    if isinstance(value, str):
        return redact.text(value) if "=" in value else value
    if isinstance(value, BaseModel):
        hidden = not_logged(type(value))
        return {
            field.alias or name: _plain(getattr(value, name))
            for name, field in type(value).model_fields.items()
            if name not in hidden
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _typed(pa: Any, name: str, values: list[Any], annotation: Any) -> Any:
    """``values`` as the field's Arrow type; what its annotation does not fix (an ``Any``, a
    union), as Arrow reads the values; JSON text only for values of mixed kinds. A few values
    the field's type cannot hold (a refused request's text that is not UTF-8) are nulls, told
    in the log, in a column kept of its type, and a V2 tensor's row of one value is that
    value: one odd request must not turn a day's column into JSON text, which drift cannot
    compare."""
    kind = arrow_type(pa, annotation) if annotation is not None else None
    if kind is not None:
        held = _held(pa, name, values, kind)
        if held is not None:
            return held
    try:
        return pa.array(values)
    except _REFUSED:
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values])


_REFUSED = (ArithmeticError, TypeError, ValueError)  # Arrow's errors are ValueError's too


def _held(pa: Any, name: str, values: list[Any], kind: Any) -> Any:
    """``values`` as an array of ``kind``, each value it cannot hold a null, if most fit; else
    None. Arrow truncates a float it puts in an int column: a fraction does not fit."""
    if _exact(pa, values, kind):
        try:
            return pa.array(values, type=kind)
        except _REFUSED:
            pass
    given = sum(v is not None for v in values)
    if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)):
        values = [v[0] if type(v) is list and len(v) == 1 else v for v in values]
    if pa.types.is_integer(kind):
        values = [None if type(v) is float and not v.is_integer() else v for v in values]
    kept = _fitting(pa, values, kind)
    lost = given - sum(v is not None for v in kept)
    if 2 * lost > given:
        return None
    if lost:
        log.warning(
            "payload log: %d value(s) of column %r do not fit its type %s: logged as nulls",
            lost, name, kind,
        )  # fmt: skip
    return pa.array(kept, type=kind)


def _exact(pa: Any, values: list[Any], kind: Any) -> bool:
    """Whether Arrow may be handed ``values`` for ``kind`` as they are: not an int column
    with a float among them, which Arrow would truncate."""
    return not pa.types.is_integer(kind) or not any(type(v) is float for v in values)


def _fitting(pa: Any, values: list[Any], kind: Any) -> list[Any]:
    """``values``, each that a column of ``kind`` cannot hold a None, found by halves (a few
    odd values among many cost a few conversions, not one a value)."""
    try:
        pa.array(values, type=kind)
    except _REFUSED:
        if len(values) == 1:
            return [None]
        half = len(values) // 2
        return _fitting(pa, values[:half], kind) + _fitting(pa, values[half:], kind)
    return values


def parquet_bytes(table: Any) -> bytes:
    pa = pyarrow()
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue())
