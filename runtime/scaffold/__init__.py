"""``mlfn new``: render an endpoint folder from a template and a model's signature.

Templates: ``tensor`` (a field per model output), ``classifier`` (the class name and a
probability per class) and ``regressor`` (one float per target). Each writes a columnar predict
(``@endpoint.predict_columns``): the model fed each input field's column, each output field's
column taken from what it returns.
"""

from __future__ import annotations

import dataclasses
import json
import keyword
import re
import shlex
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel

from runtime.config import Settings
from runtime.config.client import DEFAULT_URL
from runtime.element_types import BOUNDED_FLOATS, BY_ONNX
from runtime.endpoint import check_endpoint_name
from runtime.errors import ModelNotInStore, ScaffoldError
from runtime.model_store.base import Progress
from runtime.models.onnx_model import TensorSpec
from runtime.models.reference import Model
from runtime.protocol.jobs import check_queue_name, requests_queue, results_queue
from runtime.scaffold.classifier import FLOATS, classifier_outputs, fill_values
from runtime.scaffold.columns import column_fields

TEMPLATES = ("tensor", "classifier", "regressor")
# metadata_props keys a converter may use to name a classifier's classes (a JSON list).
# The templates: package data in a wheel; in a checkout, a link to the repository's scaffolds/.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# A template's import of mlfn's names: those the generated code uses (its number types too).
RUNTIME_NAMES = "${runtime_names}"
RUNTIME_BASE = ("Columns", "Endpoint", "Limits", "Model", "OnnxModel")


@dataclass(frozen=True)
class Scaffold:
    """What ``mlfn new`` wrote, and what to tell the person who asked for it."""

    path: Path
    sample: dict[str, Any]  # one instance that fits the generated input model
    notes: tuple[str, ...] = ()

    def next_commands(self, url: str = DEFAULT_URL) -> list[str]:
        """Serve it, call it over HTTP at ``url`` (the app's base URL: MLFN_URL's), send it a
        queue message (with a sample body)."""
        from urllib.parse import urlsplit

        name = self.path.parent.name
        body = shlex.quote(json.dumps({"instances": [self.sample]}))
        parts = urlsplit(url)
        port = parts.port
        local = parts.hostname in ("127.0.0.1", "localhost")
        return [
            "mlfn serve" + (f" --port {port}" if local and port and port != 7071 else ""),
            f"curl -s {url}/api/{name}/predict -H 'Content-Type: application/json' -d {body}",
            f"mlfn enqueue {name} --data {body}",
            f"mlfn results {name} --wait 30",
        ]


@dataclass(frozen=True)
class _Field:
    onnx_name: str
    attr: str
    annotation: str
    optional: bool = False  # None when left out (a column the model imputes)

    def declaration(self) -> str:
        annotation = f"{self.annotation} | None" if self.optional else self.annotation
        default = "default=None, " if self.optional else ""
        if self.attr != self.onnx_name:
            value: str | None = f"Field({default}alias={json.dumps(self.onnx_name)})"
        else:
            value = "None" if self.optional else None
        return f"    {self.attr}: {annotation}" + (f" = {value}" if value else "")


@dataclass(frozen=True)
class _Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: Mapping[str, str]  # the model's metadata_props


def render_endpoint(
    name: str,
    source: str,
    app_dir: Path,
    settings: Settings,
    template: str = "tensor",
    *,
    labels: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Scaffold:
    """Write ``functions/NAME/`` for the model at ``source`` (a local file or a store URI,
    referenced as given; a relative local file gets an explicit ``./``). Never overwrites.

    labels: class names in the order of the model's classes (``classifier`` only); they win
        over names the model carries.
    """
    _check_name(name)
    target = app_dir / "functions" / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; mlfn new does not overwrite it")
    if template not in TEMPLATES:
        raise ScaffoldError(f"no scaffold named {template!r}; choose one of {', '.join(TEMPLATES)}")
    if labels is not None and template != "classifier":
        raise ScaffoldError("--labels names a classifier's classes: use --template classifier")
    model_uri = source
    local = Path(source)
    if "://" not in source and local.is_file():
        if not local.is_absolute() and not source.startswith(("./", "../")):
            model_uri = "./" + source
    elif "://" not in source and settings.model_store is None and not (app_dir / local).exists():
        # No store to resolve a bare path against, nor a file in the app: a typo, say.
        where = app_dir / local
        raise ScaffoldError(
            f"model file {where} does not exist: give an .onnx file, or a store URI "
            "(az://, s3://, https://)"
        )
    else:
        try:
            local = _fetch(source, app_dir, settings, progress)
        except ModelNotInStore as exc:
            if "://" in source:
                raise
            # A bare path is looked up in the store: a local file's typo reads as a store's.
            raise ScaffoldError(
                f"{exc.message}: {source} is no file here ({app_dir / local}), so it was looked "
                f"up in MLFN_MODEL_STORE ({settings.model_store}); name a local file by its "
                "path, or a stored model by its URI"
            ) from None
    signature = _signature(local)
    template_path = _template_path(app_dir, template)
    template_text = template_path.read_text()
    # A float32 input's fields refuse what float32 cannot hold (runtime.Float32), where the
    # template imports the names it is given (an app's own older template: plain floats).
    bounded = RUNTIME_NAMES in template_text

    columns = column_fields(signature.inputs, signature.metadata, bounded)
    if columns is None:
        in_fields = [_field(spec, "input", bounded) for spec in signature.inputs]
        feeds = [_feed(f) for f in in_fields]
        sample = {spec.name: _sample(spec) for spec in signature.inputs}
    else:  # one named column a field, each fed as the model's [batch, 1] input
        in_fields = _unique(
            [_Field(c.name, _attr_name(c.name), c.annotation, c.optional) for c in columns]
        )
        feeds = [_feed(f, ".reshape(-1, 1)") for f in in_fields]
        sample = {c.name: c.sample for c in columns}
    command = f"mlfn new {name} --model {source}" + (
        f" --template {template}" if template != "tensor" else ""
    )
    values: dict[str, object] = {
        "name": name,
        "source": source,
        "command": command + (f" --labels {','.join(labels)}" if labels else ""),
        "input_fields": "\n".join(f.declaration() for f in in_fields),
        "model_uri": json.dumps(model_uri),
        "max_batch_size": _batch_size(signature.inputs),
        "feeds": "\n".join(feeds),
    }
    annotations = [f.annotation for f in in_fields]
    notes: list[str] = []
    outputs = ["label", "probabilities"]  # the classifier template's
    if template == "tensor":
        out_fields = [_field(spec, "output") for spec in signature.outputs]
        outputs = [n for f in out_fields for n in (f.attr, f.onnx_name)]
        annotations += [f.annotation for f in out_fields]
        values["output_fields"] = "\n".join(f.declaration() for f in out_fields)
        values["output_columns"] = "\n".join(
            f"        {json.dumps(f.attr)}: out[{json.dumps(f.onnx_name)}]," for f in out_fields
        )
        if classifier_outputs(signature.outputs):
            notes.append(
                "hint: the model looks like a classifier (a label and a probability output); "
                "--template classifier serves class names and a probability per class"
            )
    elif template == "classifier":
        notes.append(fill_values(values, local, signature.outputs, signature.metadata, labels))
    else:
        outputs = _regressor_values(values, signature.outputs)
    added = {n.lower() for n in (*outputs, "error")}  # Spark's names ignore case
    clash = sorted(f.onnx_name for f in in_fields if f.onnx_name.lower() in added)
    if clash:
        notes.append(
            f"note: input column(s) {', '.join(map(repr, clash))} are named like what scoring "
            "adds to a DataFrame (the outputs and 'error'): Spark scoring (runtime.spark.score, "
            "mlfn spark-score) refuses a DataFrame holding them; rename them there first"
        )
    declared = f"{values['input_fields']}\n{values.get('output_fields', '')}"
    values["imports"] = _imports(
        annotations,
        field=template == "classifier" or "Field(" in declared,  # the classifier's Output has one
    )
    floats = {n for n in BOUNDED_FLOATS.values() if re.search(rf"\b{n}\b", declared)}
    values["runtime_names"] = ", ".join(sorted({*RUNTIME_BASE, *floats}))
    text = _render(template_path, template_text, values)

    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    functions_init = app_dir / "functions" / "__init__.py"
    if not functions_init.exists():
        functions_init.write_text("")
    endpoint_file = target / "endpoint.py"
    endpoint_file.write_text(text)
    return Scaffold(endpoint_file, sample, tuple(notes))


def render_tensor_endpoint(
    name: str,
    source: str,
    app_dir: Path,
    settings: Settings,
    template: str = "tensor",
    progress: Progress | None = None,
) -> Path:
    """``render_endpoint`` returning just the endpoint file (``mlfn init``, the benchmarks)."""
    return render_endpoint(name, source, app_dir, settings, template, progress=progress).path


def _render(path: Path, text: str, values: Mapping[str, object]) -> str:
    """The template ``text`` (read from ``path``) filled in."""
    try:
        return Template(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ScaffoldError(f"{path} has a placeholder mlfn does not fill: {exc}") from None


def _template_path(app_dir: Path, template: str) -> Path:
    """The one place that knows where templates live: the app's own
    ``scaffolds/<template>/endpoint.py.tmpl`` if it has one, else mlfn's."""
    builtin = TEMPLATES_DIR
    for folder in (app_dir / "scaffolds", builtin):
        path = folder / template / "endpoint.py.tmpl"
        if path.is_file():
            return path
    raise ScaffoldError(f"no scaffold {template!r} in {app_dir / 'scaffolds'} or {builtin}")


def _feed(field: _Field, reshape: str = "") -> str:
    """One entry of the model's feeds: the field's column (``columns`` is keyed by field name)."""
    return f"            {json.dumps(field.onnx_name)}: columns[{json.dumps(field.attr)}]{reshape},"


def _imports(annotations: list[str], *, field: bool) -> str:
    """The import lines above ``from runtime import ...``, each name only if the generated code
    uses it (ruff's F401): typing's and pydantic's ``Field``."""
    typing = [n for n in ("Annotated", "Literal") if any(f"{n}[" in a for a in annotations)]
    lines = [f"\nfrom typing import {', '.join(typing)}\n"] if typing else [""]
    lines.append("from pydantic import BaseModel, ConfigDict" + (", Field" if field else ""))
    return "\n".join(lines)


def _check_name(name: str) -> None:
    """The endpoint name rules, and those of the queue names derived from it."""
    try:
        check_endpoint_name(name)
        for queue in (requests_queue(name), results_queue(name)):
            try:
                check_queue_name(queue)
            except ValueError as exc:
                raise ValueError(
                    f"endpoint name {name!r} would name its default queue {queue!r} ('_' becomes "
                    f"'-'), which Azure refuses: {str(exc).partition(': ')[2]}"
                ) from None
    except ValueError as exc:
        raise ScaffoldError(str(exc)) from None


def _fetch(source: str, app_dir: Path, settings: Settings, progress: Progress | None) -> Path:
    from runtime.model_store import locate, resolve_uri
    from runtime.models.cache import DiskCache

    uri = resolve_uri(Model(source).uri, settings, app_dir)
    return DiskCache(settings.cache_dir).fetch(locate(uri, settings), progress=progress).path


def _signature(path: Path) -> _Signature:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ScaffoldError(f"onnxruntime cannot load {path}: {exc}") from exc
    return _Signature(
        [TensorSpec.from_node_arg(a) for a in session.get_inputs()],
        [TensorSpec.from_node_arg(a) for a in session.get_outputs()],
        dict(session.get_modelmeta().custom_metadata_map),
    )


def _batch_size(inputs: list[TensorSpec]) -> int:
    batch = 64
    for spec in inputs:
        if not spec.shape:
            raise ScaffoldError(
                f"input {spec.name!r} has no batch dimension (shape {spec.shape}); the "
                "scaffolds need inputs shaped [batch, ...]"
            )
        first = spec.shape[0]
        if first is not None and first != 1:
            raise ScaffoldError(
                f"input {spec.name!r} has a fixed batch dimension of {first}; re-export the model "
                "with a dynamic (or size-1) first dimension"
            )
        if first == 1:
            batch = 1
    return batch


def _field(spec: TensorSpec, role: str, bounded: bool = False) -> _Field:
    """A field for one row of tensor ``spec``; ``bounded``: a float16 or float32 input's
    items as runtime's Float16 or Float32 (within what the input holds)."""
    if spec.element_type is None:
        raise ScaffoldError(
            f"{role} {spec.name!r} is {spec.onnx_type}, not a tensor; the tensor scaffold handles "
            "tensors only (a classifier's ZipMap output: use --template classifier)"
        )
    known = BY_ONNX.get(spec.element_type)
    if known is None:
        raise ScaffoldError(
            f"{role} {spec.name!r} has element type {spec.element_type}, unsupported"
        )
    annotation = known.python
    if bounded and role == "input":
        annotation = BOUNDED_FLOATS.get(known.onnx, annotation)
    for dim in reversed((spec.shape or (None,))[1:]):
        annotation = (
            f"list[{annotation}]"
            if dim is None
            else f"Annotated[list[{annotation}], Field(min_length={dim}, max_length={dim})]"
        )
    return _Field(spec.name, _attr_name(spec.name), annotation)


def _unique(fields: list[_Field]) -> list[_Field]:
    """``fields`` with attribute names made distinct: columns ``a b`` and ``a_b`` are both
    ``a_b`` as Python names."""
    seen: set[str] = set()
    out = []
    for field in fields:
        attr, n = field.attr, 1
        while attr in seen:
            n += 1
            attr = f"{field.attr}_{n}"
        seen.add(attr)
        out.append(dataclasses.replace(field, attr=attr))
    return out


def _sample(spec: TensorSpec) -> Any:
    """One row of input ``spec`` filled with zeros (dynamic dimensions as 1)."""
    known = BY_ONNX[spec.element_type or ""]
    value: Any = {"float": 0.0, "int": 0, "bool": False, "str": ""}[known.python]
    for dim in reversed((spec.shape or (None,))[1:]):
        value = [value] * (dim or 1)
    return value


def _attr_name(onnx_name: str) -> str:
    # Python reads an identifier in NFKC form ("µm" as "μm", "ﬁeld" as "field"): the name
    # written is the one it will have, which then differs from the column's and gets its alias.
    attr = re.sub(r"\W", "_", unicodedata.normalize("NFKC", onnx_name))
    if not attr or attr[0].isdigit() or attr.startswith("_"):
        attr = "x_" + attr.lstrip("_")
    if keyword.iskeyword(attr) or hasattr(BaseModel, attr):
        attr += "_"
    return attr


# --- regressor ----------------------------------------------------------------------------------


def _regressor_values(values: dict[str, object], outputs: list[TensorSpec]) -> list[str]:
    """Fill ``values`` for the regressor template: ``prediction``, or ``prediction_0``... for a
    model with several targets (the output fields' names, returned)."""
    if classifier_outputs(outputs):
        raise ScaffoldError("the model looks like a classifier: use --template classifier")
    spec = outputs[0]
    shape = spec.shape or ()
    if (
        len(outputs) != 1
        or spec.element_type not in FLOATS
        or len(shape) not in (1, 2)
        or (len(shape) == 2 and shape[1] is None)
    ):
        described = ", ".join(f"{o.name} {o.onnx_type} {list(o.shape or ())}" for o in outputs)
        raise ScaffoldError(
            "the regressor scaffold needs one float output shaped [batch] or [batch, targets] "
            f"with a fixed number of targets; the model has {described} (use --template tensor)"
        )
    targets = 1 if len(shape) == 1 else shape[1] or 1
    fields = ["prediction"] if targets == 1 else [f"prediction_{i}" for i in range(targets)]
    values.update(
        output=json.dumps(spec.name),
        targets=targets,
        output_fields="\n".join(f"    {f}: float" for f in fields),
        output_columns="\n".join(f'        "{f}": values[:, {i}],' for i, f in enumerate(fields)),
    )
    return fields
