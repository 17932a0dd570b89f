"""What runs in each Spark Python worker: a partition's Arrow batches in, the same rows with
the endpoint's outputs and an ``error`` column out.

A Python worker is a process of its own. It builds the app's ``Services`` once (kept here, by
app folder and the fingerprint of its files the driver saw, for every later task the process
runs; an app edited between two jobs is built again), so the model is loaded once per process,
and fetched through the store and its disk cache: workers of one machine share a download
through the cache's file lock. Its runs use the CPUs Spark gives a task (``spark.task.cpus``),
not every CPU of the machine: an executor runs that many workers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import stat
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import config, redact
from runtime.digest import sha256_file
from runtime.discovery import discover, import_failure
from runtime.errors import (
    DiscoveryError,
    HostError,
    IndexingError,
    MlfnError,
    OutputNotRepresentable,
)
from runtime.models.cache import not_private
from runtime.services import Services

if TYPE_CHECKING:
    import pyarrow as pa

    from runtime.endpoint import BoundEndpoint

ERROR_COLUMN = "error"
_PACKAGE = "functions"

_services: dict[str, tuple[str, Services]] = {}  # by app: (fingerprint, services)
_lock = threading.Lock()


@dataclass(frozen=True)
class Plan:
    """What the driver decided, pickled to every task: which endpoint, which input columns
    feed which input keys, and the Arrow fields of the columns added to each batch."""

    app_dir: str
    name: str
    # (column by position, key the input model accepts, whether a null is left out so the
    # default applies)
    inputs: tuple[tuple[int, str, bool], ...]
    outputs: tuple[pa.Field, ...]  # the output model's fields as columns, by alias
    error: pa.Field
    batch_size: int | None = None
    fingerprint: str = ""  # the app's files as the driver saw them (``fingerprint``)


def services_for(app_dir: str, fingerprint: str = "") -> Services:
    """This process's services for the app, built on first use and kept while the driver's
    ``fingerprint`` of the app is the one they were built for."""
    path = Path(app_dir)
    key = str(path.resolve()) if path.is_dir() else app_dir
    with _lock:
        kept = _services.get(key)
        if kept is None or kept[0] != fingerprint:
            # An executor logs what the function app would (a model's SAS URL, say) but never
            # runs its registration, where redaction is installed for Azure.
            redact.install_in_logging()
            root = app_root(app_dir)
            kept = (fingerprint, Services(discover_app(root), root, _task_settings()))
            _services[key] = kept
        return kept[1]


def _task_settings() -> config.Settings:
    """The process's settings, a model run's threads the CPUs Spark gives this task unless
    MLFN_ORT_INTRA_OP_THREADS says. onnxruntime's default, every CPU of the machine, in each of
    an executor's workers at once, is that many threads per core, each spinning for work."""
    settings = config.current()
    if settings.ort_intra_op_threads is not None:
        return settings
    try:
        from pyspark import TaskContext
    except ImportError:  # no Spark here: no task
        return settings
    task = TaskContext.get()
    if task is None:  # not in a task: the driver
        return settings
    return dataclasses.replace(settings, ort_intra_op_threads=max(1, task.cpus()))


def fingerprint(root: Path) -> str:
    """What the app's code is: each file under ``functions/`` and ``host.json`` by path,
    modification time and size (a zip unpacks under a folder named by its content)."""
    digest = hashlib.sha256(str(root).encode())
    files = [p for p in (root / _PACKAGE).rglob("*") if "__pycache__" not in p.parts]
    for path in sorted([*files, root / "host.json"]):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_mtime_ns}:{stat.st_size};".encode())
    return digest.hexdigest()[:16]


def discover_app(root: Path) -> list[BoundEndpoint]:
    """The endpoints of the app in ``root``, whichever app's ``functions`` package this process
    imported before (a notebook's, another app's in a reused worker): that one is set aside
    while this one is imported, then put back; the endpoints keep their own modules. In a
    process that had none (a fresh worker), the app stays imported, as in the function app."""
    saved = {n: sys.modules.pop(n) for n in _package_modules()}
    path = list(sys.path)
    sys.path.insert(0, str(root))  # first, so `functions` is this app's
    try:
        return discover(root / _PACKAGE)
    except HostError:
        raise  # mlfn's own refusals already say which file and what to do
    except Exception as exc:  # the app's own code: one line naming its file and line
        raise IndexingError(import_failure(exc, root, "the app's endpoints")) from exc
    finally:
        if saved:
            for name in _package_modules():
                del sys.modules[name]
            sys.modules.update(saved)
            sys.path[:] = path


def _package_modules() -> list[str]:
    return [n for n in sys.modules if n == _PACKAGE or n.startswith(f"{_PACKAGE}.")]


def app_root(app_dir: str | Path) -> Path:
    """The app folder: a folder, or a zip of one (``mlfn pack`` writes it) unpacked once per
    machine. A zip that is not where ``app_dir`` says is looked for among the files Spark
    shipped (``--py-files``, ``--files``, ``SparkContext.addFile``)."""
    path = Path(app_dir)
    if path.is_dir():
        return path.resolve()
    if path.suffix != ".zip":
        raise DiscoveryError(f"app folder {app_dir} does not exist here (nor is it a .zip)")
    if not path.is_file():
        from pyspark import SparkFiles

        shipped = Path(SparkFiles.get(path.name))
        if not shipped.is_file():
            raise DiscoveryError(f"app zip {app_dir} is neither here nor among Spark's files")
        path = shipped
    return _unzipped(path)


def _unzipped(archive: Path) -> Path:
    """``archive`` unpacked under the temporary folder, keyed by its content: the first
    process unpacks into a private folder (0700) beside it and renames it into place
    (atomic), so processes of one machine never see half an app; a later one uses the folder
    it finds only if this user alone can have written it. The name is predictable (``mlfn
    pack`` is reproducible), so a folder or link someone else planted there holds their code,
    and its ``endpoint.py`` would run here: it is refused."""
    digest = sha256_file(archive)[:16]
    target = Path(tempfile.gettempdir()) / f"mlfn-app-{digest}"
    if not os.path.lexists(target):
        staging = Path(tempfile.mkdtemp(prefix=f"mlfn-app-{digest}-", dir=target.parent))
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(staging)
            with contextlib.suppress(OSError):  # another process was first (or a stranger)
                staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone once renamed
    try:
        status = target.lstat()
    except OSError as exc:
        raise DiscoveryError(
            f"cannot unpack the app zip {archive.name} at {target}: {exc}"
        ) from None
    if stat.S_ISLNK(status.st_mode):
        reason: str | None = "it is a symbolic link"
    elif not stat.S_ISDIR(status.st_mode):
        reason = "it is not a folder"
    else:
        reason = not_private(status)
    if reason is not None:
        raise DiscoveryError(
            f"refusing the unpacked app at {target}: {reason}; remove it, or set TMPDIR to a "
            "folder of this user's"
        )
    return target


def score_batches(batches: Iterator[pa.RecordBatch], plan: Plan) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: each batch scored in chunks of the endpoint's batch size."""

    services = services_for(plan.app_dir, plan.fingerprint)
    if services.columns.plan(plan.name) is not None:
        yield from _score_columns(batches, plan, services)
        return
    for batch in batches:
        yield _score_rows(batch, plan, services)


def _score_rows(batch: pa.RecordBatch, plan: Plan, services: Services) -> pa.RecordBatch:
    """A batch scored row by row (the rows service): a row whose value cannot be read (text
    that is not UTF-8) gets its own error, as a batch file's row does."""
    import pyarrow as pa

    rows = services.rows
    size = plan.batch_size or rows.max_batch_size(plan.name)
    fixers = [_from_json(field.type, nullable=True) for field in plan.outputs]
    from runtime.protocol.parquet_rows import valid_text

    columns = [_python(batch.column(column)) for column, _, _ in plan.inputs]
    keys = [(key, optional) for _, key, optional in plan.inputs]
    outputs: list[list[Any]] = [[] for _ in plan.outputs]
    errors: list[str | None] = []
    # Rows with a value Python cannot read: looked for only where Arrow finds such text.
    readable = all(valid_text(batch.column(column)) for column, _, _ in plan.inputs)
    unread = {} if readable else _unread(plan, columns)
    for start in range(0, batch.num_rows, size):
        picked = range(start, min(start + size, batch.num_rows))
        raw = [_raw(keys, columns, i) for i in picked if i not in unread]
        scored = iter(rows.score_sync(plan.name, raw).rows if raw else ())
        outcomes: list[tuple[bytes | None, MlfnError | None]] = []
        for i in picked:
            row = None if i in unread else next(scored)
            outcomes.append((None, unread[i]) if row is None else (row.prediction, row.error))
        _add_predictions(outcomes, plan, outputs, errors)
    arrays = _arrays(outputs, plan.outputs, fixers, errors)
    schema = pa.schema([*batch.schema, *plan.outputs, plan.error])
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *arrays, pa.array(errors, type=plan.error.type)], schema=schema
    )


class _Unreadable:
    """A value Arrow holds that Python cannot read (text that is not UTF-8)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _unread(plan: Plan, columns: list[list[Any]]) -> dict[int, MlfnError]:
    """The error of each row one of whose values cannot be read, naming the column (the
    first such, as a batch file's row names it)."""
    from runtime.protocol.batch_formats import unreadable_row

    found: dict[int, MlfnError] = {}
    for (_, key, _), values in zip(plan.inputs, columns, strict=True):
        for i, value in enumerate(values):
            if isinstance(value, _Unreadable) and i not in found:
                found[i] = unreadable_row(f"column {key!r} cannot be read: {value.reason}")
    return found


def _add_predictions(
    scored: list[tuple[bytes | None, MlfnError | None]],
    plan: Plan,
    outputs: list[list[Any]],
    errors: list[str | None],
) -> None:
    """Rows' predictions (JSON, as the predict service writes them) or errors, appended to
    the output columns' values and the ``error`` column."""
    # One JSON document for the rows' predictions: one parse, not one per row.
    joined = b",".join(p for p, _ in scored if p is not None)
    predictions = iter(json.loads(b"[" + joined + b"]"))
    for prediction_json, error in scored:
        if prediction_json is None:
            assert error is not None  # a row holds one or the other
            errors.append(_error_json(error))
            for values in outputs:
                values.append(None)
        else:
            prediction = next(predictions)
            errors.append(None)
            for values, field in zip(outputs, plan.outputs, strict=True):
                values.append(prediction.get(field.name))


def _score_columns(
    batches: Iterator[pa.RecordBatch], plan: Plan, services: Services
) -> Iterator[pa.RecordBatch]:
    """Each batch validated and scored as columns (``runtime.services.columns``): no Python
    object per valid row, the outputs written from the arrays predict returned."""
    import pyarrow as pa

    from runtime.protocol.parquet_rows import valid_text

    keys = [(key, optional) for _, key, optional in plan.inputs]
    fixers = [_from_json(field.type, nullable=True) for field in plan.outputs]
    for batch in batches:
        given = {key: batch.column(column) for column, key, _ in plan.inputs}
        if not all(map(valid_text, given.values())):  # each such row's own error, row by row
            yield _score_rows(batch, plan, services)
            continue

        def raw_rows(rows: list[int], batch: pa.RecordBatch = batch) -> list[dict[str, Any]]:
            picked = pa.array(rows, type=pa.int64())
            columns = [_python(batch.column(column).take(picked)) for column, _, _ in plan.inputs]
            return [_raw(keys, columns, j) for j in range(len(rows))]

        scored = services.columns.score_sync(
            plan.name, given, batch.num_rows, raw_rows, plan.batch_size
        )
        if scored.outputs is None:  # pydantic wrote each row: read as the row path reads it
            outputs: list[list[Any]] = [[] for _ in plan.outputs]
            errors: list[str | None] = []
            each = scored.predictions or [None] * batch.num_rows
            rows = [(p, scored.errors.get(i)) for i, p in enumerate(each)]
            _add_predictions(rows, plan, outputs, errors)
            arrays = _arrays(outputs, plan.outputs, fixers, errors)
        else:
            errors = [None] * batch.num_rows
            for row, error in scored.errors.items():
                errors[row] = _error_json(error)
            arrays = _typed(list(scored.outputs.values()), plan.outputs, errors)
        schema = pa.schema([*batch.schema, *plan.outputs, plan.error])
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, *arrays, pa.array(errors, type=plan.error.type)], schema=schema
        )


def _typed(
    columns: list[pa.Array], fields: tuple[pa.Field, ...], errors: list[str | None]
) -> list[pa.Array]:
    """Output columns as the Spark types of ``fields``: cast where Arrow can, else made from
    their Python values; a value no column of its type holds makes its row an error, as on
    the row path (``_arrays``)."""
    import pyarrow as pa

    typed = []
    for column, field in zip(columns, fields, strict=True):
        try:
            typed.append(column if column.type == field.type else column.cast(field.type))
            continue
        except (pa.ArrowException, *_UNREPRESENTABLE):
            pass
        try:
            typed.append(pa.array(column.to_pylist(), type=field.type))
        except (pa.ArrowException, *_UNREPRESENTABLE):
            break
    else:
        return typed
    outputs = [c.to_pylist() for c in columns]
    return _arrays(outputs, fields, [None] * len(fields), errors)


def inert_formulas(
    batches: Iterator[pa.RecordBatch], columns: tuple[int, ...]
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function for CSV output: the text ``columns`` (by position) with each
    cell a spreadsheet would run as a formula made inert, by the rule batch files' CSV
    results follow (``runtime.protocol.csv_safety``)."""
    import pyarrow as pa

    from runtime.protocol.csv_safety import safe_cell

    for batch in batches:
        arrays = list(batch.columns)
        for i in columns:
            values = arrays[i].to_pylist()
            safe = [safe_cell(v) for v in values]
            if safe != values:
                arrays[i] = pa.array(safe, type=arrays[i].type)
        yield pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _raw(keys: list[tuple[str, bool]], columns: list[list[Any]], i: int) -> dict[str, Any]:
    """Row ``i`` as the input model's keys; a null for a field with a default is left out, so
    the default applies, as when an HTTP body omits the key."""
    return {
        key: column[i]
        for (key, optional), column in zip(keys, columns, strict=True)
        if not (optional and column[i] is None)
    }


# What a value Arrow refuses raises: a string where a number goes, an int over 64 bits, ...
_UNREPRESENTABLE = (ValueError, TypeError, ArithmeticError, KeyError)  # OverflowError too


def _arrays(
    outputs: list[list[Any]],
    fields: tuple[pa.Field, ...],
    fixers: list[Callable[[Any], Any] | None],
    errors: list[str | None],
) -> list[pa.Array]:
    """The output columns of a batch. When a value is one its column cannot hold, the batch
    is built again row by row: such a row's outputs become null and its ``error`` says why;
    the other rows are written."""
    import pyarrow as pa

    def build(values: list[Any], field: pa.Field, fix: Callable[[Any], Any] | None) -> pa.Array:
        return pa.array([fix(v) for v in values] if fix else values, type=field.type)

    try:
        return [build(*column) for column in zip(outputs, fields, fixers, strict=True)]
    except (pa.ArrowException, *_UNREPRESENTABLE):
        pass
    for i in range(len(errors)):
        if errors[i] is not None:
            continue
        for values, field, fix in zip(outputs, fields, fixers, strict=True):
            try:
                build(values[i : i + 1], field, fix)
            except (pa.ArrowException, *_UNREPRESENTABLE) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                errors[i] = _error_json(OutputNotRepresentable(field.name, reason))
                for column in outputs:
                    column[i] = None
                break
    return [build(*column) for column in zip(outputs, fields, fixers, strict=True)]


def _error_json(error: MlfnError) -> str:
    """As the blob trigger writes an error in a table: compact JSON of ``to_dict()``."""
    return json.dumps(error.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _python(column: pa.Array) -> list[Any]:
    """A column as Python values the input model can validate: maps as dicts, not lists of
    pairs, at any depth (in lists and structs too); a value Python cannot read (text that is
    not UTF-8) as ``_Unreadable``."""
    try:
        return _pylist(column)
    except UnicodeDecodeError:
        pass
    values: list[Any] = []
    for i in range(len(column)):
        try:
            values += _pylist(column.slice(i, 1))
        except UnicodeDecodeError as exc:
            values.append(_Unreadable(f"{type(exc).__name__}: {exc}"))
    return values


def _pylist(column: pa.Array) -> list[Any]:
    try:
        values: list[Any] = column.to_pylist(maps_as_pydicts="strict")
    except TypeError:  # pyarrow before 13 gives maps as lists of pairs, and no option
        as_dicts = _dicts(column.type)
        values = column.to_pylist()
        return values if as_dicts is None else [as_dicts(v) for v in values]
    return values


def _dicts(kind: pa.DataType) -> Callable[[Any], Any] | None:
    """What turns the maps under ``kind`` from lists of pairs into dicts; None if none."""
    import pyarrow as pa

    if pa.types.is_map(kind):
        key = _dicts(kind.key_type) or _same
        item = _dicts(kind.item_type) or _same
        return lambda v: v if v is None else {key(k): item(x) for k, x in v}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _dicts(kind.value_type)
        return None if inner is None else (lambda v: v if v is None else [inner(x) for x in v])
    if pa.types.is_struct(kind):
        fields = {kind.field(i).name: _dicts(kind.field(i).type) for i in range(kind.num_fields)}
        needed = {name: f for name, f in fields.items() if f is not None}
        if not needed:
            return None
        return lambda v: v if v is None else {**v, **{n: f(v[n]) for n, f in needed.items()}}
    return None


def _from_json(kind: pa.DataType, nullable: bool) -> Callable[[Any], Any] | None:
    """What turns a value of a prediction's JSON back into what Arrow takes for ``kind``:
    timestamps and dates from ISO strings, map keys from strings to ints, and a non-finite
    float (null in JSON) to NaN again where Spark's type holds no null (a float inside a
    struct, a list, a map). Built once per column; None where nothing under ``kind`` needs it."""
    import pyarrow as pa

    if pa.types.is_floating(kind):
        return None if nullable else _nan_for_none
    if pa.types.is_timestamp(kind):
        return _datetime
    if pa.types.is_date(kind):
        return _date
    if pa.types.is_map(kind):
        key = int if pa.types.is_integer(kind.key_type) else None
        value = _from_json(kind.item_field.type, kind.item_field.nullable)
        if key is None and value is None:
            return None
        fk = key or _same
        fv = value or _same
        return lambda v: v if v is None else {fk(k): fv(x) for k, x in v.items()}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _from_json(kind.value_field.type, kind.value_field.nullable)
        if inner is None:
            return None
        if inner is _nan_for_none:  # floats: most lists hold no null at all
            return lambda v: v if v is None or None not in v else [inner(x) for x in v]
        return lambda v: v if v is None else [inner(x) for x in v]
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        fixers = {f.name: _from_json(f.type, f.nullable) for f in fields}
        needed = {name: fix for name, fix in fixers.items() if fix is not None}
        if not needed:
            return None
        return lambda v: v if v is None else {**v, **{n: f(v.get(n)) for n, f in needed.items()}}
    return None


def _same(value: Any) -> Any:
    return value


def _datetime(value: Any) -> Any:
    # pydantic writes ISO 8601 ("Z" for UTC); a naive datetime is taken as UTC.
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def _date(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _nan_for_none(value: Any) -> Any:
    return math.nan if value is None else value
