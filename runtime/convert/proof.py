"""Proof that a conversion kept the answers: onnx's checker, then the ONNX model run with
onnxruntime on the rows the original answered, output by output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.convert.base import Converted
from runtime.errors import ConversionError


@dataclass(frozen=True)
class Difference:
    """How far one output of the ONNX model is from the original's.

    value: for numbers, the largest ``|onnx - original| / max(1, |original|)`` (absolute below
        1, relative above, so a regression target in the hundreds is held to float32's
        precision); for labels (integers, strings, booleans), the share of elements that differ.
    """

    output: str
    value: float
    detail: str

    def __str__(self) -> str:
        return f"{self.output}: {self.detail}"


def check(model: Any) -> None:
    """onnx's own checker, with shape inference: a model it refuses is never written."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(f"the converted model fails onnx's checker: {exc}") from None


def compare(converted: Converted) -> list[Difference]:
    """Run the ONNX model on the sample rows; one ``Difference`` per output the original gave."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            converted.model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(None, converted.feeds), strict=True))
    except Exception as exc:  # onnxruntime raises its own classes, not exported
        raise ConversionError(f"onnxruntime cannot run the converted model: {exc}") from None
    differences = []
    for name, expected in converted.expected.items():
        if name not in got:
            raise ConversionError(f"the converted model has no output {name!r}; it has {names}")
        differences.append(_difference(name, np.asarray(expected), np.asarray(got[name])))
    return differences


def _difference(name: str, expected: Any, actual: Any) -> Difference:
    import numpy as np

    if expected.size != actual.size:
        raise ConversionError(
            f"output {name!r} has shape {list(actual.shape)} in ONNX but the original gave "
            f"{list(expected.shape)}"
        )
    expected = expected.reshape(actual.shape)
    if expected.dtype.kind in "fc" or actual.dtype.kind in "fc":
        if not (expected.dtype.kind in "fciub" and actual.dtype.kind in "fciub"):
            raise ConversionError(
                f"output {name!r} is {actual.dtype} in ONNX but {expected.dtype} in the original"
            )
        a, b = actual.astype(np.float64), expected.astype(np.float64)
        same_nan = np.isnan(a) & np.isnan(b)
        gap = np.where(same_nan, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(b)))
        value = float(np.nan_to_num(gap.max(initial=0.0), nan=np.inf))
        return Difference(name, value, f"largest difference {value:.3g}")
    equal = expected.astype(str) == actual.astype(str)
    differ = int(equal.size - np.count_nonzero(equal))
    value = differ / equal.size if equal.size else 0.0
    return Difference(name, value, f"{differ} of {equal.size} values differ")
