"""XGBoost and LightGBM estimators, alone or as a scikit-learn pipeline's last step: converted
by onnxmltools' converters, which skl2onnx is told about here, so the rest of a scikit-learn
conversion (columns, casts, class names, the proof) is the same as for scikit-learn's own."""

from __future__ import annotations

from typing import Any

from runtime.convert import sklearn_columns
from runtime.convert.base import require
from runtime.errors import ConversionError

# The package of each gradient-boosting library, its name in messages, and the extra that
# installs its converter (onnxmltools) beside it.
LIBRARIES = {
    "xgboost": ("XGBoost", "convert-xgboost"),
    "lightgbm": ("LightGBM", "convert-lightgbm"),
}
# onnxmltools writes the tree ensembles of ai.onnx.ml version 3 and refuses a later one, which
# skl2onnx would pick for the main opset mlfn writes.
ML_OPSET = 3
# What skl2onnx's parser and onnxmltools' converters accept for a classifier: the parser reads
# ``zipmap`` (mlfn turns it off) of every classifier that declares it.
CLASSIFIER_OPTIONS: dict[str, Any] = {"nocl": [True, False], "zipmap": [True, False, "columns"]}


def library(estimator: Any) -> str | None:
    """``xgboost`` or ``lightgbm`` for an estimator of theirs, else None."""
    root = type(estimator).__module__.partition(".")[0]
    return root if root in LIBRARIES else None


def register(model: Any) -> bool:
    """Register onnxmltools' converter with skl2onnx for each XGBoost and LightGBM estimator
    in ``model`` (itself, a pipeline's steps, a column transformer's parts); whether any."""
    found = False
    for step in sklearn_columns.steps(model):
        name = library(step)
        if name is None:
            continue
        if callable(getattr(step, "objective", None)):
            # onnxmltools reads the objective's name to turn the trees' scores into an answer;
            # a function has none (LightGBM's converter then takes a regressor for a classifier).
            raise ConversionError(
                f"{type(step).__name__} was trained with a custom objective (a function): "
                "onnxmltools converts only the library's own objectives"
            )
        _register(step, name)
        found = True
    return found


def _register(estimator: Any, name: str) -> None:
    label, extra = LIBRARIES[name]
    require("onnxmltools", label, extra)
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import is_classifier

    classifier = is_classifier(estimator)
    update_registered_converter(
        type(estimator),
        f"Mlfn{label}{type(estimator).__name__}",
        calculate_linear_classifier_output_shapes
        if classifier
        else calculate_linear_regressor_output_shapes,
        _convert_xgboost if name == "xgboost" else _convert_lightgbm,
        options=CLASSIFIER_OPTIONS if classifier else None,
    )


def _convert_xgboost(scope: Any, operator: Any, container: Any) -> None:
    """onnxmltools' XGBoost converter, on a booster without feature names meanwhile: it reads
    the trees' features as ``f0``, ``f1``..., and a model fitted on a DataFrame names them by
    its columns (``age``), which it cannot place."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

    booster = operator.raw_operator.get_booster()
    names = booster.feature_names
    booster.feature_names = None
    try:
        convert_xgboost(scope, operator, container)
    finally:
        booster.feature_names = names


def _convert_lightgbm(scope: Any, operator: Any, container: Any) -> None:
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    convert_lightgbm(scope, operator, container)
