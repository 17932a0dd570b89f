"""What runs in each Spark Python worker: a partition's Arrow batches in, the same rows with
the endpoint's outputs and an ``error`` column out.

A Python worker is a process of its own. It builds the app's ``Services`` once (kept here, by
app folder, for every later task the process runs), so the model is loaded once per process,
and fetched through the store and its disk cache: workers of one machine share a download
through the cache's file lock.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.digest import sha256_file
from runtime.discovery import discover
from runtime.errors import DiscoveryError, MlfnError
from runtime.services import Services

if TYPE_CHECKING:
    import pyarrow as pa

    from runtime.endpoint import BoundEndpoint

ERROR_COLUMN = "error"
_PACKAGE = "functions"

_services: dict[str, Services] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Plan:
    """What the driver decided, pickled to every task: which endpoint, which input columns
    feed which input keys, and the Arrow fields of the columns added to each batch."""

    app_dir: str
    name: str
    inputs: tuple[tuple[str, str], ...]  # (column, key the input model accepts)
    outputs: tuple[pa.Field, ...]  # the output model's fields as columns, by alias
    error: pa.Field
    batch_size: int | None = None


def services_for(app_dir: str) -> Services:
    """This process's services for the app folder, built on first use and then kept."""
    with _lock:
        services = _services.get(app_dir)
        if services is None:
            root = app_root(app_dir)
            services = Services(discover_app(root), app_root=root)
            _services[app_dir] = services
        return services


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
    """``archive`` unpacked under the temporary folder, keyed by its content: a process that
    finds the folder uses it; the first unpacks beside it and renames (atomic), so processes
    of one machine never see half an app."""
    digest = sha256_file(archive)[:16]
    target = Path(tempfile.gettempdir()) / f"mlfn-app-{digest}"
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=f"mlfn-app-{digest}-", dir=target.parent))
        with zipfile.ZipFile(archive) as z:
            z.extractall(staging)
        try:
            staging.rename(target)
        except OSError:  # another process was first
            shutil.rmtree(staging, ignore_errors=True)
    return target


def score_batches(batches: Iterator[pa.RecordBatch], plan: Plan) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: each batch scored in chunks of the endpoint's batch size."""
    import pyarrow as pa

    rows = services_for(plan.app_dir).rows
    size = plan.batch_size or rows.max_batch_size(plan.name)
    fixers = [_nan_fixer(field.type, nullable=True) for field in plan.outputs]
    for batch in batches:
        columns = [_python(batch.column(column)) for column, _ in plan.inputs]
        keys = [key for _, key in plan.inputs]
        outputs: list[list[Any]] = [[] for _ in plan.outputs]
        errors: list[str | None] = []
        for start in range(0, batch.num_rows, size):
            stop = min(start + size, batch.num_rows)
            raw = [
                {k: c[i] for k, c in zip(keys, columns, strict=True)} for i in range(start, stop)
            ]
            scored = rows.score_sync(plan.name, raw).rows
            # One JSON document for the chunk's predictions: one parse, not one per row.
            joined = b",".join(r.prediction for r in scored if r.prediction is not None)
            predictions = iter(json.loads(b"[" + joined + b"]"))
            for row in scored:
                if row.prediction is None:
                    err = row.error
                    errors.append(_error_json(err) if err else '{"type":"Unscored"}')
                    for values in outputs:
                        values.append(None)
                else:
                    prediction = next(predictions)
                    errors.append(None)
                    for values, field in zip(outputs, plan.outputs, strict=True):
                        values.append(prediction.get(field.name))
        arrays = [
            pa.array([fix(v) for v in values] if fix else values, type=field.type)
            for values, field, fix in zip(outputs, plan.outputs, fixers, strict=True)
        ]
        schema = pa.schema([*batch.schema, *plan.outputs, plan.error])
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, *arrays, pa.array(errors, type=plan.error.type)], schema=schema
        )


def _error_json(error: MlfnError) -> str:
    """As the blob trigger writes an error in a table: compact JSON of ``to_dict()``."""
    return json.dumps(error.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _python(column: pa.Array) -> list[Any]:
    """A column as Python values the input model can validate (maps as dicts, not pairs)."""
    import pyarrow as pa

    values: list[Any] = column.to_pylist()
    if pa.types.is_map(column.type):
        return [dict(v) if v is not None else None for v in values]
    return values


def _nan_fixer(kind: pa.DataType, nullable: bool) -> Callable[[Any], Any] | None:
    """JSON has no NaN, so predictions carry a non-finite float as null. Where Spark's type
    holds no null (a float inside a struct, a list, a map) it becomes NaN again. Built once per
    column; None where nothing under ``kind`` needs it."""
    import pyarrow as pa

    if pa.types.is_floating(kind):
        return None if nullable else _nan_for_none
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        item = kind.item_field if pa.types.is_map(kind) else kind.value_field
        inner = _nan_fixer(item.type, item.nullable)
        if inner is None:
            return None
        if pa.types.is_map(kind):
            return lambda v: v if v is None else {k: inner(x) for k, x in v.items()}
        if inner is _nan_for_none:  # floats: most lists hold no null at all
            return lambda v: v if v is None or None not in v else [inner(x) for x in v]
        return lambda v: v if v is None else [inner(x) for x in v]
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        fixers = {f.name: _nan_fixer(f.type, f.nullable) for f in fields}
        needed = {name: fix for name, fix in fixers.items() if fix is not None}
        if not needed:
            return None
        return lambda v: v if v is None else {**v, **{n: f(v.get(n)) for n, f in needed.items()}}
    return None


def _nan_for_none(value: Any) -> Any:
    return math.nan if value is None else value
