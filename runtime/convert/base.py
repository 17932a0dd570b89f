"""What every framework's converter hands back, and how converters import their framework."""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runtime.errors import ConversionError, ConverterMissing

if TYPE_CHECKING:
    import numpy as np

# The opset written unless a converter is told otherwise: onnxruntime 1.17 and every converter
# here support it (scripts/build_models.py builds the examples with it too).
OPSET = 17
# The metadata_props key naming a classifier's classes, as JSON: `mlfn new --template
# classifier` reads it (runtime/scaffold/classifier.py).
CLASSES_KEY = "mlfn.classes"
# The values the label output gives for each class, in the probability columns' order (JSON):
# what the classifier scaffold maps to the names above. Not always 0..n-1: a model fitted on
# classes 3, 5, 7 answers 3, 5 or 7.
LABELS_KEY = "mlfn.labels"
# The named columns a model takes, one ONNX input each (JSON: name, type float/int/bool/str, and an
# encoder's categories and whether it refuses others): `mlfn new` writes a typed field for each.
COLUMNS_KEY = "mlfn.columns"


@dataclass(frozen=True)
class Converted:
    """A converted model, the sample rows it was proven on, and the original's answers."""

    model: Any  # onnx.ModelProto
    feeds: dict[str, np.ndarray]  # the sample rows, by ONNX input name
    expected: dict[str, np.ndarray]  # the original framework's answers, by ONNX output name
    # The converter made the rows up: no sample was given, and the model carried none (a
    # torch.export archive's example inputs are the user's own rows).
    synthesised: bool = False
    # Of the rows, those the converter added: copies with the optional columns left out.
    missing_rows: int = 0
    warnings: tuple[str, ...] = ()  # what the proof cannot show, for the user to know


def require(module: str, framework: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConverterMissing(framework, package or module, extra) from None


def first_line(exc: BaseException) -> str:
    """The first line of an error from a framework (their messages run to pages)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def rename_outputs(model: Any, names: dict[str, str]) -> None:
    """Rename graph outputs of an ``onnx.ModelProto`` (and the node outputs that feed them)."""
    for output in model.graph.output:
        if output.name in names:
            old, new = output.name, names[output.name]
            output.name = new
            for node in model.graph.node:
                node.output[:] = [new if o == old else o for o in node.output]


def output_names(count: int) -> list[str]:
    """``output``, or ``output_0``, ``output_1``, ... for several: what mlfn calls the outputs
    of a network (PyTorch, Keras)."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def as_classifier(model: Any, expected: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """A network's one output of class scores ``[batch, classes]`` as a classifier: renamed
    ``probabilities``, a ``label`` output added (ArgMax, the first of equal scores, as numpy's),
    the class names in the metadata: what ``mlfn new --template classifier`` serves. Returns the
    original's answers under the new names."""
    from onnx import TensorProto, helper

    scores = expected.get("output")
    if len(expected) != 1 or scores is None or scores.ndim != 2:
        shapes = ", ".join(f"{n} {list(a.shape)}" for n, a in expected.items())
        raise ConversionError(
            f"class names are for a model with one output of scores [batch, classes]; this "
            f"one answers {shapes}"
        )
    if scores.shape[1] != len(classes):
        raise ConversionError(
            f"{len(classes)} class names given; the model scores {scores.shape[1]} classes"
        )
    rename_outputs(model, {"output": "probabilities"})
    batch = model.graph.output[0].type.tensor_type.shape.dim[0]
    model.graph.node.append(
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)
    )
    model.graph.output.append(
        helper.make_tensor_value_info(
            "label", TensorProto.INT64, [batch.dim_param or batch.dim_value or None]
        )
    )
    set_metadata(
        model,
        {
            CLASSES_KEY: json.dumps([str(c) for c in classes]),
            LABELS_KEY: json.dumps(list(range(len(classes)))),  # the argmax: a column number
        },
    )
    return {"label": scores.argmax(axis=1), "probabilities": scores}


def set_metadata(model: Any, values: dict[str, str]) -> None:
    """Set (or replace) ``metadata_props`` entries of an ``onnx.ModelProto``."""
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for prop in kept:
        model.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


@contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Third-party readers and exporters quiet: they warn about their own internals (torch's
    deprecations of its own APIs), which is not the user's business, and pytest's
    warnings-as-errors would turn it into failures; ``loggers`` log only errors meanwhile."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in loggers:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
