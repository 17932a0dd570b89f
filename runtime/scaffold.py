"""``mlfn new``: render an endpoint folder from a template and a model's signature.

Templates: ``tensor`` (a field per model output), ``classifier`` (the class name and a
probability per class) and ``regressor`` (one float per target).
"""

from __future__ import annotations

import json
import keyword
import re
import shlex
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel

from runtime.config import Settings
from runtime.element_types import BY_ONNX
from runtime.endpoint import check_endpoint_name
from runtime.errors import ScaffoldError
from runtime.models.onnx_model import TensorSpec
from runtime.models.reference import Model
from runtime.protocol.jobs import check_queue_name, requests_queue, results_queue
from runtime.store.base import Progress

TEMPLATES = ("tensor", "classifier", "regressor")
# metadata_props keys a converter may use to name a classifier's classes (a JSON list).
CLASSES_KEYS = ("mlfn.classes", "classes")
_FLOATS = ("float", "double", "float16")
_NUMBERED = "numbered (the model names none)"


@dataclass(frozen=True)
class Scaffold:
    """What ``mlfn new`` wrote, and what to tell the person who asked for it."""

    path: Path
    sample: dict[str, Any]  # one instance that fits the generated input model
    notes: tuple[str, ...] = ()

    def next_commands(self) -> list[str]:
        """Serve it, call it over HTTP, send it a queue message (with a sample body)."""
        name = self.path.parent.name
        body = shlex.quote(json.dumps({"instances": [self.sample]}))
        return [
            "mlfn serve",
            f"curl -s http://127.0.0.1:7071/api/{name}/predict "
            f"-H 'Content-Type: application/json' -d {body}",
            f"mlfn enqueue {name} --data {body}",
            f"mlfn results {name} --wait 30",
        ]


@dataclass(frozen=True)
class _Field:
    onnx_name: str
    attr: str
    annotation: str

    def declaration(self) -> str:
        alias = f'Field(alias="{self.onnx_name}")' if self.attr != self.onnx_name else None
        return f"    {self.attr}: {self.annotation}" + (f" = {alias}" if alias else "")


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
    else:
        local = _fetch(source, app_dir, settings, progress)
    signature = _signature(local)

    in_fields = [_field(spec, "input") for spec in signature.inputs]
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
        "feeds": "\n".join(
            f'            "{f.onnx_name}": [i.{f.attr} for i in instances],' for f in in_fields
        ),
    }
    annotations = [f.annotation for f in in_fields]
    notes: list[str] = []
    if template == "tensor":
        out_fields = [_field(spec, "output") for spec in signature.outputs]
        annotations += [f.annotation for f in out_fields]
        values["output_fields"] = "\n".join(f.declaration() for f in out_fields)
        values["output_args"] = "\n".join(
            f'            {f.attr}=out["{f.onnx_name}"][row].tolist(),' for f in out_fields
        )
        if _classifier_outputs(signature.outputs):
            notes.append(
                "hint: the model looks like a classifier (a label and a probability output); "
                "--template classifier serves class names and a probability per class"
            )
    elif template == "classifier":
        notes.append(_classifier_values(values, local, signature, labels))
    else:
        _regressor_values(values, signature.outputs)
    values["typing_import"] = (
        "\nfrom typing import Annotated\n" if any("Annotated" in a for a in annotations) else ""
    )
    text = _render(app_dir, template, values)

    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    functions_init = app_dir / "functions" / "__init__.py"
    if not functions_init.exists():
        functions_init.write_text("")
    endpoint_file = target / "endpoint.py"
    endpoint_file.write_text(text)
    sample = {spec.name: _sample(spec) for spec in signature.inputs}
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


def _render(app_dir: Path, template: str, values: Mapping[str, object]) -> str:
    """Template ``template`` filled in. The one place that knows where templates live: the app's
    own ``scaffolds/<template>/endpoint.py.tmpl`` if it has one, else mlfn's."""
    # runtime/scaffolds: package data in a wheel, a link to the repository's scaffolds/ in a
    # checkout (as for `mlfn init`'s app template).
    builtin = Path(__file__).resolve().parent / "scaffolds"
    for folder in (app_dir / "scaffolds", builtin):
        path = folder / template / "endpoint.py.tmpl"
        if path.is_file():
            try:
                return Template(path.read_text()).substitute(values)
            except (KeyError, ValueError) as exc:
                raise ScaffoldError(f"{path} has a placeholder mlfn does not fill: {exc}") from None
    raise ScaffoldError(f"no scaffold {template!r} in {app_dir / 'scaffolds'} or {builtin}")


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
    from runtime.models.cache import DiskCache
    from runtime.store import locate, resolve_uri

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


def _field(spec: TensorSpec, role: str) -> _Field:
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
    for dim in reversed((spec.shape or (None,))[1:]):
        annotation = (
            f"list[{annotation}]"
            if dim is None
            else f"Annotated[list[{annotation}], Field(min_length={dim}, max_length={dim})]"
        )
    return _Field(spec.name, _attr_name(spec.name), annotation)


def _sample(spec: TensorSpec) -> Any:
    """One row of input ``spec`` filled with zeros (dynamic dimensions as 1)."""
    known = BY_ONNX[spec.element_type or ""]
    value: Any = {"float": 0.0, "int": 0, "bool": False, "str": ""}[known.python]
    for dim in reversed((spec.shape or (None,))[1:]):
        value = [value] * (dim or 1)
    return value


def _attr_name(onnx_name: str) -> str:
    attr = re.sub(r"\W", "_", onnx_name)
    if not attr or attr[0].isdigit() or attr.startswith("_"):
        attr = "x_" + attr.lstrip("_")
    if keyword.iskeyword(attr) or hasattr(BaseModel, attr):
        attr += "_"
    return attr


# --- classifier ---------------------------------------------------------------------------------


def _classifier_outputs(outputs: list[TensorSpec]) -> tuple[TensorSpec, TensorSpec] | None:
    """A classifier's label output (int64 or string, one per row) and probability output
    (float [batch, classes], or a ZipMap's sequence of maps), if the model has both."""
    label = next(
        (o for o in outputs if o.element_type in ("int64", "string") and len(o.shape or ()) == 1),
        None,
    )
    probabilities = next(
        (
            o
            for o in outputs
            if (o.element_type in _FLOATS and len(o.shape or ()) == 2)
            or o.onnx_type.startswith("seq(map(")
        ),
        None,
    )
    return (label, probabilities) if label and probabilities else None


@dataclass(frozen=True)
class _Classes:
    labels: list[int | str]  # as the label output gives them, in probability-column order
    names: list[str]  # served for each label
    origin: str  # where the names come from: "from --labels", ...


def _classifier_values(
    values: dict[str, object], path: Path, signature: _Signature, given: Sequence[str] | None
) -> str:
    """Fill ``values`` for the classifier template; return a line naming the classes."""
    found = _classifier_outputs(signature.outputs)
    if found is None:
        outputs = ", ".join(f"{o.name} {o.onnx_type}" for o in signature.outputs)
        raise ScaffoldError(
            "the classifier scaffold needs a label output (int64 or string, shaped [batch]) and "
            f"a probability output (float [batch, classes], or a ZipMap); the model has {outputs}"
        )
    label, probabilities = found
    zipmap = probabilities.element_type is None
    classes = _classes(path, signature.metadata, label, probabilities, given)
    note = f"Class names come {classes.origin}."
    if classes.origin == _NUMBERED:
        note = (
            "The model names none of its classes, so each is named by the number its label output "
            "gives it: edit CLASSES, or run mlfn new again with --labels."
        )
    values.update(
        classes_note=textwrap.fill(note, width=99),
        classes="\n".join(
            f"    {json.dumps(x, ensure_ascii=False)}: {json.dumps(n, ensure_ascii=False)},"
            for x, n in zip(classes.labels, classes.names, strict=True)
        ),
        label_output=json.dumps(label.name),
        probability_rows=f"out[{json.dumps(probabilities.name)}]" + ("" if zipmap else ".tolist()"),
        probabilities="{CLASSES[k]: p for k, p in probs.items()}"
        if zipmap
        else "dict(zip(CLASSES.values(), probs, strict=True))",
    )
    return f"classes {classes.origin}: {', '.join(classes.names)}"


def _classes(
    path: Path,
    metadata: Mapping[str, str],
    label: TensorSpec,
    probabilities: TensorSpec,
    given: Sequence[str] | None,
) -> _Classes:
    """The model's class labels, and their names: ``given`` (--labels), else those in the
    model's metadata, else string labels themselves, else the label numbers."""
    width = probabilities.shape[1] if probabilities.shape else None
    labels = _graph_class_labels(path)
    stored = None if given else _metadata_classes(metadata)
    if labels is None:  # not a scikit-learn converter's graph: an argmax, say
        if label.element_type == "string":
            raise ScaffoldError(
                f"output {label.name!r} gives string labels but the graph lists none; "
                "use --template tensor"
            )
        count = width or len(given or (stored[1] if stored else ()))
        if not count:
            raise ScaffoldError("cannot tell how many classes the model has: pass --labels")
        labels = list(range(count))  # the label is the column
    if width is not None and width != len(labels):
        raise ScaffoldError(
            f"the graph lists {len(labels)} class labels but {probabilities.name!r} has "
            f"{width} columns"
        )

    if given:
        names, origin = list(given), "from --labels"
    elif stored:
        names, origin = stored[1], f"from the model's metadata ({stored[0]})"
    else:
        names = [str(x) for x in labels]
        named = all(isinstance(x, str) for x in labels)
        origin = "from the model's own labels" if named else _NUMBERED
    if len(names) != len(labels):
        raise ScaffoldError(
            f"{len(names)} class names {origin}; the model has {len(labels)} classes"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated or not all(names):
        problem = f"repeat: {', '.join(map(repr, repeated))}" if repeated else "include ''"
        raise ScaffoldError(f"class names {origin} {problem}")
    return _Classes(labels, names, origin)


def _metadata_classes(metadata: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """The class names a converter stored in metadata_props, with the key it used."""
    for key in CLASSES_KEYS:
        if key in metadata:
            try:
                names = json.loads(metadata[key])
            except ValueError:
                names = None
            if not isinstance(names, list) or not all(
                isinstance(n, str | int) and not isinstance(n, bool) for n in names
            ):
                raise ScaffoldError(
                    f"metadata_props {key!r} must be a JSON list of class names, not "
                    f"{metadata[key][:80]!r} (or pass --labels)"
                )
            return key, [str(n) for n in names]
    return None


def _graph_class_labels(path: Path) -> list[int | str] | None:
    """The labels a classifier node (scikit-learn's converters: ``LinearClassifier``, ``ZipMap``,
    tree ensembles...) lists, in the order of its probability columns; None if none does."""
    try:
        import onnx
    except ImportError:
        raise ScaffoldError(
            "the classifier scaffold reads class labels from the model's graph with the onnx "
            "package: pip install onnx"
        ) from None
    graph = onnx.load(str(path), load_external_data=False).graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return [s.decode() for s in attribute.strings]
            if attribute.name == "classlabels_int64s" and attribute.ints:
                return list(attribute.ints)
    return None


# --- regressor ----------------------------------------------------------------------------------


def _regressor_values(values: dict[str, object], outputs: list[TensorSpec]) -> None:
    """Fill ``values`` for the regressor template: ``prediction``, or ``prediction_0``... for a
    model with several targets."""
    if _classifier_outputs(outputs):
        raise ScaffoldError("the model looks like a classifier: use --template classifier")
    spec = outputs[0]
    shape = spec.shape or ()
    if (
        len(outputs) != 1
        or spec.element_type not in _FLOATS
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
        output_fields="\n".join(f"    {f}: float" for f in fields),
        output_args="\n".join(f"            {f}=row[{i}]," for i, f in enumerate(fields)),
    )
