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
        precision); for labels (integers, strings, booleans), 0 when every one is equal and
        infinite otherwise: a flipped label is never within a tolerance.
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
    _check_batch_axis(session, converted.feeds, got)
    return differences


def _check_batch_axis(session: Any, feeds: dict[str, Any], whole: dict[str, Any]) -> None:
    """The model answers the rows one by one as it answers them together: its batch axis is
    really dynamic (an exporter may bake the sample's batch size into a reshape)."""
    import numpy as np

    count = len(next(iter(feeds.values()), ()))
    if count < 2:
        return
    names = [o.name for o in session.get_outputs()]
    for part in (slice(0, 1), slice(1, count)):
        try:
            got = session.run(None, {k: v[part] for k, v in feeds.items()})
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ConversionError(
                f"the converted model answers {count} rows but not {part.stop - part.start}: "
                f"its batch axis is not dynamic ({first[:200]})"
            ) from None
        for name, value in zip(names, got, strict=True):
            expected = np.asarray(whole[name])
            if expected.ndim == 0 or expected.shape[0] != count:
                continue  # not batched by rows
            a, b = np.asarray(value), expected[part]
            same = a.shape == b.shape and (
                np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
                if a.dtype.kind in "fc"
                else bool(np.array_equal(a, b))
            )
            if not same:
                raise ConversionError(
                    f"output {name!r} of the converted model differs when the rows are run in "
                    "two parts: its batch axis is not dynamic"
                )


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
    if expected.dtype.kind == "b" and actual.dtype.kind in "iu":
        expected = expected.astype(actual.dtype)  # False/True classes come back as 0/1
    equal = expected.astype(str) == actual.astype(str)
    differ = int(equal.size - np.count_nonzero(equal))
    value = 0.0 if differ == 0 else float("inf")
    return Difference(name, value, f"{differ} of {equal.size} values differ")
