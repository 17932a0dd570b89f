"""``mlfn new``: render an endpoint folder from a template and a model's tensor signature."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from pydantic import BaseModel

from runtime.config import Settings
from runtime.element_types import BY_ONNX
from runtime.endpoint import check_endpoint_name
from runtime.errors import ScaffoldError
from runtime.models.onnx_model import TensorSpec
from runtime.models.reference import Model
from runtime.store.base import Progress


@dataclass(frozen=True)
class _Field:
    onnx_name: str
    attr: str
    annotation: str

    def declaration(self) -> str:
        alias = f'Field(alias="{self.onnx_name}")' if self.attr != self.onnx_name else None
        return f"    {self.attr}: {self.annotation}" + (f" = {alias}" if alias else "")


def scaffold_dirs(app_dir: Path) -> list[Path]:
    """Where templates are looked up: the app's own ``scaffolds/``, then mlfn's."""
    return [app_dir / "scaffolds", Path(__file__).resolve().parent.parent / "scaffolds"]


def render_tensor_endpoint(
    name: str,
    source: str,
    app_dir: Path,
    settings: Settings,
    template: str = "tensor",
    progress: Progress | None = None,
) -> Path:
    """Write ``functions/NAME/`` for the model at ``source`` (a local file or a store URI,
    referenced as given; a relative local file gets an explicit ``./``). Returns the new
    endpoint file."""
    try:
        check_endpoint_name(name)
    except ValueError as exc:
        raise ScaffoldError(str(exc)) from None
    target = app_dir / "functions" / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists")
    model_uri = source
    local = Path(source)
    if "://" not in source and local.is_file():
        if not local.is_absolute() and not source.startswith(("./", "../")):
            model_uri = "./" + source
        inputs, outputs = _signature(local)
    else:
        inputs, outputs = _signature(_fetch(source, app_dir, settings, progress))

    batch = _batch_size(inputs)
    in_fields = [_field(spec, "input") for spec in inputs]
    out_fields = [_field(spec, "output") for spec in outputs]
    text = _template(app_dir, template).substitute(
        name=name,
        source=source,
        typing_import="\nfrom typing import Annotated\n"
        if any("Annotated" in f.annotation for f in in_fields + out_fields)
        else "",
        input_fields="\n".join(f.declaration() for f in in_fields),
        output_fields="\n".join(f.declaration() for f in out_fields),
        model_uri=repr(model_uri).replace("'", '"'),
        max_batch_size=batch,
        feeds="\n".join(
            f'            "{f.onnx_name}": [i.{f.attr} for i in instances],' for f in in_fields
        ),
        output_args="\n".join(
            f'            {f.attr}=out["{f.onnx_name}"][row].tolist(),' for f in out_fields
        ),
    )
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    functions_init = app_dir / "functions" / "__init__.py"
    if not functions_init.exists():
        functions_init.write_text("")
    endpoint_file = target / "endpoint.py"
    endpoint_file.write_text(text)
    return endpoint_file


def _template(app_dir: Path, template: str) -> Template:
    for folder in scaffold_dirs(app_dir):
        path = folder / template / "endpoint.py.tmpl"
        if path.is_file():
            return Template(path.read_text())
    raise ScaffoldError(
        f"no scaffold named {template!r} in {[str(d) for d in scaffold_dirs(app_dir)]}"
    )


def _fetch(source: str, app_dir: Path, settings: Settings, progress: Progress | None) -> Path:
    from runtime.models.cache import DiskCache
    from runtime.store import locate, resolve_uri

    uri = resolve_uri(Model(source).uri, settings, app_dir)
    return DiskCache(settings.cache_dir).fetch(locate(uri, settings), progress=progress).path


def _signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ScaffoldError(f"onnxruntime cannot load {path}: {exc}") from exc
    return (
        [TensorSpec.from_node_arg(a) for a in session.get_inputs()],
        [TensorSpec.from_node_arg(a) for a in session.get_outputs()],
    )


def _batch_size(inputs: list[TensorSpec]) -> int:
    batch = 64
    for spec in inputs:
        if not spec.shape:
            raise ScaffoldError(
                f"input {spec.name!r} has no batch dimension (shape {spec.shape}); the tensor "
                "scaffold needs inputs shaped [batch, ...]"
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
            "tensors only (for scikit-learn classifiers, convert with zipmap=False)"
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


def _attr_name(onnx_name: str) -> str:
    attr = re.sub(r"\W", "_", onnx_name)
    if not attr or attr[0].isdigit() or attr.startswith("_"):
        attr = "x_" + attr.lstrip("_")
    if keyword.iskeyword(attr) or hasattr(BaseModel, attr):
        attr += "_"
    return attr
