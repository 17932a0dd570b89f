"""scikit-learn estimators and pipelines through skl2onnx: input ``input``; classifiers answer
``label`` and ``probabilities`` (no ZipMap) and list their classes in the metadata. XGBoost and
LightGBM estimators, alone or as a pipeline's last step, alike (runtime/convert/boosting.py).

A model fitted on a DataFrame (it has ``feature_names_in_``) takes its columns instead, one
named input ``[None, 1]`` each, strings for categorical ones (runtime/convert/sklearn_columns.py).

Numbers are float32, except for a pipeline feeding a tree model: scikit-learn runs the steps
before the tree in float64 and casts their output to float32 for the tree's comparisons. A graph
computing those steps in float32 lands some rows on the other side of a threshold (a whole
tree's vote, 0.1 of a probability, on 9 of iris's 150 rows with a scaler and a forest), so such
a pipeline takes float64 and casts before the tree, as scikit-learn does (unless it imputes:
onnxruntime's Imputer takes float32 alone)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from runtime.convert import boosting, sklearn_columns
from runtime.convert.base import (
    CLASSES_KEY,
    COLUMNS_KEY,
    LABELS_KEY,
    OPSET,
    Converted,
    rename_outputs,
    require,
    set_metadata,
)
from runtime.errors import ConversionError

EXTRA = "convert-sklearn"
FLOAT32_TREES = (
    "this pipeline imputes, and onnxruntime's Imputer takes float32 alone, so the ONNX model "
    "computes the steps before its trees in float32 where scikit-learn computes float64: a "
    "row within float32's rounding of a split threshold may take the other branch (a tree's "
    "vote, a few hundredths of a probability, on a rare row). The sample rows agreed; --sample "
    "with more rows like your data shows how rare"
)
# skl2onnx's output names, renamed to those of mlfn's examples and the classifier scaffold.
RENAMED = {"output_label": "label", "output_probability": "probabilities"}


def convert(model: Any, sample: Any, rows: int, options: dict[str, Any]) -> Converted:
    """Convert a fitted estimator (or pipeline) taking one numeric matrix, or the named columns
    of the DataFrame it was fitted on."""
    require("sklearn", "scikit-learn", EXTRA, "scikit-learn")
    skl2onnx = require("skl2onnx", "scikit-learn", EXTRA)
    require("onnx", "scikit-learn", EXTRA)
    import numpy as np
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    final = _final_step(model)
    columns = sklearn_columns.columns_of(model, sample)
    missing_rows = 0
    imputes = _imputes(model)
    graph = model if imputes else _cast_before_tree(model, final)
    dtype = np.float64 if graph is not model else np.float32
    tensor_type = DoubleTensorType if dtype == np.float64 else FloatTensorType
    if columns is None:
        input_name = options.get("input_name", "input")
        x = _sample(model, sample, rows, dtype)
        feeds: dict[str, Any] = {input_name: x}
        initial_types = [(input_name, tensor_type([None, x.shape[1]]))]
    else:
        sklearn_columns.refuse_none_categories(model, columns)
        given = sklearn_columns.frame(model, columns, sample, rows)
        x = sklearn_columns.with_missing(given, columns)
        missing_rows = len(x) - len(given)
        if missing_rows and not _answers(model, x.tail(missing_rows)):
            # The original refuses a missing value there after all: no column is optional.
            columns = [dataclasses.replace(c, optional=False) for c in columns]
            x, missing_rows = given, 0
        feeds = sklearn_columns.feeds(x, columns, dtype)
        initial_types = sklearn_columns.initial_types(columns, tensor_type)
        graph = sklearn_columns.joined(graph, columns, x)
        # The original answers the numbers the ONNX model is given, rounded to its type alike.
        x = x.assign(**{c.name: feeds[c.name][:, 0] for c in columns if c.type != "str"})
    opset: int | dict[str, int] = options.get("opset", OPSET)
    converter = "skl2onnx"
    if boosting.register(graph):
        opset = {"": options.get("opset", OPSET), "ai.onnx.ml": boosting.ML_OPSET}
        converter = "skl2onnx (with onnxmltools' converters)"
    try:
        with sklearn_columns.strings_missing_as_text(graph):
            onnx_model = skl2onnx.to_onnx(
                graph,
                initial_types=initial_types,
                target_opset=opset,
                # Plain tensors, not a sequence of maps: what V2 clients and the scaffold read.
                options={id(final): {"zipmap": False}} if hasattr(final, "classes_") else None,
            )
    except Exception as exc:  # skl2onnx raises many kinds; all mean "cannot convert this"
        raise ConversionError(f"{converter} cannot convert {type(model).__name__}: {exc}") from None
    if columns is not None:
        sklearn_columns.restore_names(onnx_model, columns)
        set_metadata(onnx_model, {COLUMNS_KEY: sklearn_columns.dumps(columns)})
    rename_outputs(onnx_model, RENAMED)
    outputs = [o.name for o in onnx_model.graph.output]
    expected: dict[str, Any] = {}
    if hasattr(final, "classes_"):
        expected["label"] = model.predict(x)
        if "probabilities" in outputs and hasattr(model, "predict_proba"):
            expected["probabilities"] = model.predict_proba(x)
        names = options.get("classes") or [_name(c) for c in final.classes_]
        if len(names) != len(final.classes_):
            raise ConversionError(
                f"{len(names)} class names given; the model has {len(final.classes_)} classes "
                f"({', '.join(_name(c) for c in final.classes_)})"
            )
        set_metadata(
            onnx_model,
            {
                CLASSES_KEY: json.dumps([str(n) for n in names]),
                LABELS_KEY: json.dumps([_label_value(c) for c in final.classes_]),
            },
        )
    elif options.get("classes"):
        raise ConversionError("class names are for a classifier; this model has no classes_")
    elif hasattr(model, "predict"):
        expected[outputs[0]] = np.asarray(model.predict(x))
    else:
        expected[outputs[0]] = np.asarray(model.transform(x))
    warnings = (
        (FLOAT32_TREES,) if imputes and _trees_last(model, final) and _holds_trees(final) else ()
    )
    return Converted(
        onnx_model,
        feeds,
        expected,
        synthesised=sample is None,
        missing_rows=missing_rows,
        warnings=warnings,
    )


def _answers(model: Any, rows: Any) -> bool:
    """Whether ``model`` answers ``rows`` (rows with the columns taken as optional missing)."""
    try:
        (model.predict if hasattr(model, "predict") else model.transform)(rows)
    except Exception:  # scikit-learn's "Input X contains NaN", an encoder's unknown category
        return False
    return True


def _imputes(model: Any) -> bool:
    """Whether ``model`` holds an imputer: onnxruntime's Imputer takes float32, not float64,
    so such a model takes float32 even before a tree."""
    from sklearn.impute import SimpleImputer

    return any(isinstance(step, SimpleImputer) for step in sklearn_columns.steps(model))


def _trees_last(model: Any, final: Any) -> bool:
    """Whether ``model`` is a pipeline whose last step is a tree model (XGBoost and LightGBM
    too), fed by steps that scikit-learn runs in float64."""
    from sklearn.pipeline import Pipeline

    trees = type(final).__module__.startswith(("sklearn.tree", "sklearn.ensemble"))
    trees = trees or boosting.library(final) is not None
    return trees and isinstance(model, Pipeline) and len(model.steps) > 1


def _holds_trees(estimator: Any) -> bool:
    """Whether ``estimator`` compares values with split thresholds: a tree, a tree ensemble,
    boosted trees, or an ensemble of estimators any of which does (a VotingClassifier of
    linear models does not)."""
    if boosting.library(estimator) is not None:
        return True
    module = type(estimator).__module__
    if module.startswith("sklearn.tree"):
        return True
    if not module.startswith("sklearn.ensemble"):
        return False
    if type(estimator).__name__.startswith(("Voting", "Stacking", "Bagging", "AdaBoost")):
        members: Any = getattr(estimator, "estimators_", [])
        flat = members.ravel().tolist() if hasattr(members, "ravel") else list(members)
        return any(_holds_trees(member) for member in flat)
    return True  # forests, gradient boosting, isolation forests: trees all


def _cast_before_tree(model: Any, final: Any) -> Any:
    """``model``, or for a pipeline whose last step is a tree model (XGBoost and LightGBM too),
    the same fitted steps with a cast to float32 before that step (skl2onnx's
    ``CastTransformer``)."""
    from sklearn.pipeline import Pipeline

    if not _trees_last(model, final):
        return model
    import numpy as np
    from skl2onnx.sklapi import CastTransformer

    *before, last = model.steps
    if isinstance(last[1], Pipeline):  # a pipeline of pipelines: cast inside the last one
        return Pipeline([*before, ("mlfn_inner", _cast_before_tree(last[1], final))])
    cast = CastTransformer(dtype=np.float32).fit(np.zeros((1, 1)))  # stateless
    return Pipeline([*before, ("mlfn_cast_to_float32", cast), last])


def _sample(model: Any, sample: Any, rows: int, dtype: Any) -> Any:
    """The rows given, as ``dtype``, else rows drawn around what the model was fitted on."""
    import numpy as np

    if sample is not None:
        x = np.asarray(sample, dtype=dtype)
        if x.ndim != 2:
            raise ConversionError(
                f"a scikit-learn sample is a [rows, features] matrix, not shaped {x.shape}"
            )
        return x
    features = getattr(model, "n_features_in_", None)
    if features is None:
        raise ConversionError(
            f"{type(model).__name__} does not say how many features it takes (n_features_in_): "
            "pass a sample"
        )
    first = model.steps[0][1] if hasattr(model, "steps") else model
    # A fitted scaler knows the data's centre and spread: rows like the training data reach the
    # model's real decision boundaries, where standard normal ones might all land in one leaf.
    centre = _fitted(first, "mean_", 0.0)
    spread = np.sqrt(_fitted(first, "var_", 1.0))
    rng = np.random.default_rng(0)
    return (centre + spread * rng.standard_normal((rows, features))).astype(dtype)


def _fitted(step: Any, attribute: str, default: float) -> Any:
    """A fitted statistic of ``step`` as an array, else ``default``: a StandardScaler has the
    attributes but sets them to None when told not to use them (``with_std=False``)."""
    import numpy as np

    value = getattr(step, attribute, None)
    return np.asarray(default if value is None else value, dtype=np.float64)


def _final_step(model: Any) -> Any:
    """The estimator that answers: the last step of a pipeline (of pipelines)."""
    while hasattr(model, "steps"):
        model = model.steps[-1][1]
    return model


def _label_value(label: Any) -> int | str:
    """A class as skl2onnx's label output gives it: booleans and whole floats as int64,
    strings as themselves."""
    value = label.item() if hasattr(label, "item") else label
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def _name(label: Any) -> str:
    return str(label.item() if hasattr(label, "item") else label)
