"""Build the example ONNX models deterministically from scikit-learn's bundled data sets.

python -m scripts.build_models [OUT_DIR]      # default: build/models
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from runtime.convert.base import rename_outputs

OPSET = 17


def build_iris(path: Path, c: float = 1.0) -> Path:
    """Logistic regression on the 4 iris measurements (cm); outputs ``label`` (int64 class
    index into setosa, versicolor, virginica) and ``probabilities`` (float32 [N, 3]). Another
    regularisation ``c`` makes another version of it (the release tests' second model)."""
    data = load_iris()
    x, y = data.data.astype(np.float32), data.target
    regression = LogisticRegression(C=c, max_iter=1000, random_state=0)
    pipeline = make_pipeline(StandardScaler(), regression)
    pipeline.fit(x, y)
    onnx_model = to_onnx(
        pipeline,
        initial_types=[("input", FloatTensorType([None, 4]))],
        target_opset=OPSET,
        options={LogisticRegression: {"zipmap": False}},
    )
    rename_outputs(onnx_model, {"output_label": "label", "output_probability": "probabilities"})
    return _save(onnx_model, path, "iris")


def build_diabetes(path: Path) -> Path:
    """Ridge regression on the 10 diabetes features in original units; output ``variable``
    (float32 [N, 1])."""
    data = load_diabetes(scaled=False)
    x, y = data.data.astype(np.float32), data.target
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    pipeline.fit(x, y)
    onnx_model = to_onnx(
        pipeline, initial_types=[("input", FloatTensorType([None, 10]))], target_opset=OPSET
    )
    return _save(onnx_model, path, "diabetes")


def build_all(out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "iris": build_iris(out_dir / "iris.onnx"),
        "diabetes": build_diabetes(out_dir / "diabetes.onnx"),
    }


def _save(model, path: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    model.graph.name = name
    model.producer_name = "mlfn scripts/build_models.py"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/models")
    for name, p in build_all(out).items():
        print(f"built {name}: {p} ({p.stat().st_size} bytes)")
