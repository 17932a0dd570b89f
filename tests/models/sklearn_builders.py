"""Small scikit-learn models converted with skl2onnx, for the classifier and regressor scaffolds.

Deterministic: fixed data, fixed seeds, so the same bytes on every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

OPSET = 17


def _save(model, path: Path, metadata: dict[str, str] | None = None) -> Path:  # type: ignore[no-untyped-def]
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def iris_zipmap(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Logistic regression on iris with skl2onnx's default ZipMap: input ``measurements``
    float [N, 4]; ``output_label`` int64 [N] and ``output_probability``
    seq(map(int64, float)). ``metadata`` goes into the model's metadata_props."""
    data = load_iris()
    fitted = LogisticRegression(max_iter=1000, random_state=0).fit(data.data, data.target)
    model = to_onnx(
        fitted, initial_types=[("measurements", FloatTensorType([None, 4]))], target_opset=OPSET
    )
    return _save(model, path, metadata)


def string_labels(path: Path) -> Path:
    """A decision tree whose classes are strings (``cat``, ``dog``, ``eel``), without ZipMap:
    ``label`` string [N] and ``probabilities`` float [N, 3]; input ``x`` float [N, 3]."""
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    y = np.array(["cat", "dog", "eel"])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)]
    fitted = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    model = to_onnx(
        fitted,
        initial_types=[("x", FloatTensorType([None, 3]))],
        target_opset=OPSET,
        options={"zipmap": False},
    )
    return _save(model, path)


def sparse_int_labels(path: Path) -> Path:
    """A decision tree whose classes are the integers 3, 7 and 9 (not column indices), without
    ZipMap: ``label`` int64 [N] and ``probabilities`` float [N, 3]; input ``x`` float [N, 2]."""
    x = np.random.default_rng(1).normal(size=(60, 2)).astype(np.float32)
    y = np.array([3, 7, 9])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)]
    fitted = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    model = to_onnx(
        fitted,
        initial_types=[("x", FloatTensorType([None, 2]))],
        target_opset=OPSET,
        options={"zipmap": False},
    )
    return _save(model, path)


def two_targets(path: Path) -> Path:
    """Linear regression with two targets: input ``x`` float [N, 3], output ``variable``
    float [N, 2]."""
    x = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    y = np.stack([x @ [1.0, -2.0, 0.5] + 3.0, x @ [0.0, 1.5, 1.0] - 1.0], axis=1)
    model = to_onnx(
        LinearRegression().fit(x, y),
        initial_types=[("x", FloatTensorType([None, 3]))],
        target_opset=OPSET,
    )
    return _save(model, path)
