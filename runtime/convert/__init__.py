"""``mlfn convert``: a model from scikit-learn, PyTorch, Keras/TensorFlow or Spark ML to ONNX,
with proof that the ONNX model answers as the original does.

Local tooling: the converters are optional extras (``mlfn[convert-sklearn]``, ...) imported on
first use, and a deployed app never imports this package.
"""

from __future__ import annotations

from runtime.convert.api import FRAMEWORKS, Conversion, to_onnx
from runtime.convert.proof import Difference

__all__ = ["FRAMEWORKS", "Conversion", "Difference", "to_onnx"]
