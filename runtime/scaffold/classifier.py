"""The classifier scaffold: find a model's label and probability outputs and name its classes
(``--labels``, the model's metadata, its string labels, or the label numbers)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ScaffoldError
from runtime.models.onnx_model import TensorSpec

CLASSES_KEYS = ("mlfn.classes", "classes")
LABELS_KEY = "mlfn.labels"  # mlfn convert: the label output's value for each class, in order
FLOATS = ("float", "double", "float16")
_NUMBERED = "numbered (the model names none)"


def classifier_outputs(outputs: list[TensorSpec]) -> tuple[TensorSpec, TensorSpec] | None:
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
            if (o.element_type in FLOATS and len(o.shape or ()) == 2)
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


def fill_values(
    values: dict[str, object],
    path: Path,
    outputs: list[TensorSpec],
    metadata: Mapping[str, str],
    given: Sequence[str] | None,
) -> str:
    """Fill ``values`` for the classifier template; return a line naming the classes."""
    found = classifier_outputs(outputs)
    if found is None:
        has = ", ".join(f"{o.name} {o.onnx_type}" for o in outputs)
        raise ScaffoldError(
            "the classifier scaffold needs a label output (int64 or string, shaped [batch]) and "
            f"a probability output (float [batch, classes], or a ZipMap); the model has {has}"
        )
    label, probabilities = found
    zipmap = probabilities.element_type is None
    classes = _classes(path, metadata, label, probabilities, given)
    note = f"Class names come {classes.origin}."
    if classes.origin == _NUMBERED:
        note = (
            "The model names none of its classes, so each is named by the number its label output "
            "gives it: edit CLASSES, or run mlfn new again with --labels."
        )
    label_values = f"out[{json.dumps(label.name)}]"
    indexed = classes.labels == list(range(len(classes.labels)))
    values.update(
        classes_note=textwrap.fill(note, width=99),
        classes="\n".join(
            f"    {json.dumps(x, ensure_ascii=False)}: {json.dumps(n, ensure_ascii=False)},"
            for x, n in zip(classes.labels, classes.names, strict=True)
        ),
        # Labels 0, 1, ... index an array of the names, the whole column at once.
        names="\n# The names in label order: the label output's values index them.\n"
        "NAMES = tuple(CLASSES.values())"
        if indexed
        else "",
        # numpy in predict, where the model has loaded it: not when the app is indexed (a
        # cold start's imports; mlfn check refuses an app whose indexing loads numpy).
        predict_setup="    import numpy as np  # loaded with the model, not at indexing\n\n"
        if indexed
        else "",
        label_column=f"np.asarray(NAMES)[{label_values}]"
        if indexed
        else f"[CLASSES[label] for label in {label_values}.tolist()]",
        probability_rows=f"out[{json.dumps(probabilities.name)}]",
        # A ZipMap gives a dict a row already; a tensor gives a column per class, which the
        # columns service makes a map column of without a Python object a row.
        probability_column="[{CLASSES[k]: v for k, v in p.items()} for p in probabilities]"
        if zipmap
        else "dict(zip(CLASSES.values(), probabilities.T, strict=True))",
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
    labels = _metadata_labels(metadata) or _graph_class_labels(path)
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


def _metadata_labels(metadata: Mapping[str, str]) -> list[int | str] | None:
    """The label values ``mlfn convert`` stored, in the probability columns' order."""
    if LABELS_KEY not in metadata:
        return None
    try:
        labels = json.loads(metadata[LABELS_KEY])
    except ValueError:
        labels = None
    if not isinstance(labels, list) or not all(
        isinstance(x, str | int) and not isinstance(x, bool) for x in labels
    ):
        raise ScaffoldError(
            f"metadata_props {LABELS_KEY!r} must be a JSON list of label values, not "
            f"{metadata[LABELS_KEY][:80]!r}"
        )
    return labels


def _graph_class_labels(path: Path) -> list[int | str] | None:
    """The labels a classifier node (scikit-learn's converters: ``LinearClassifier``, ``ZipMap``,
    tree ensembles...) lists, in the order of its probability columns; None if none does."""
    try:
        import onnx
    except ImportError:
        # --labels too: its names are given in the order of the model's label values, which
        # the graph lists (a classifier of classes 1, 2, 3 outputs 1, not 0).
        raise ScaffoldError(
            "the classifier scaffold reads the model's label values from its graph (the order "
            "--labels names them in, too) with the onnx package: pip install onnx"
        ) from None
    graph = onnx.load(str(path), load_external_data=False).graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return [s.decode() for s in attribute.strings]
            # Tree ensembles say int64s; LinearClassifier and SVMClassifier say ints.
            if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                return list(attribute.ints)
    return None
