"""``to_onnx``: dispatch on the model's type, convert, prove, and write only what passed."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.convert import proof
from runtime.convert.base import Converted
from runtime.errors import ConversionError, ConversionMismatch, HostError, MlfnError

# The frameworks ``to_onnx`` takes, each with the optional extra that installs its converter.
FRAMEWORKS = {
    "sklearn": "convert-sklearn",
    "torch": "convert-torch",
    "keras": "convert-keras",
    "sparkml": "convert-sparkml",
}
# The largest difference accepted by default: float32 arithmetic against the original's float32
# or float64 differs by about 1e-6; a real conversion fault differs by far more.
TOLERANCE = 1e-4
ROWS = 32  # sample rows synthesised when none are given


@dataclass(frozen=True)
class Conversion:
    """A conversion that passed its proof and was written to ``path``."""

    path: Path
    framework: str
    rows: int  # sample rows the original and the ONNX model both answered
    differences: tuple[proof.Difference, ...]
    tolerance: float
    synthesised: bool = False  # the rows were made up, not given: they may miss the edges
    constant: tuple[str, ...] = ()  # outputs that gave one value for every row
    missing_rows: int = 0  # rows answered besides, with the optional columns left out
    warnings: tuple[str, ...] = ()  # what the proof cannot show (the converter's)

    @property
    def largest_difference(self) -> float:
        return max((d.value for d in self.differences), default=0.0)


def framework_of(model: Any) -> str:
    """The framework a model object comes from, by the modules its classes are defined in."""
    modules = {getattr(cls, "__module__", "").partition(".")[0] for cls in type(model).__mro__}
    for framework, roots in (
        ("sklearn", {"sklearn", "imblearn", "xgboost", "lightgbm"}),
        ("torch", {"torch"}),
        ("keras", {"keras", "tensorflow", "tf_keras"}),
        ("sparkml", {"pyspark"}),
    ):
        if modules & roots:
            return framework
    raise ConversionError(
        f"mlfn convert takes scikit-learn, PyTorch, Keras/TensorFlow and Spark ML models, not "
        f"{type(model).__module__}.{type(model).__qualname__}"
    )


def to_onnx(
    model: Any,
    path: str | os.PathLike[str],
    sample: Any = None,
    *,
    framework: str | None = None,
    tolerance: float = TOLERANCE,
    rows: int = ROWS,
    **options: Any,
) -> Conversion:
    """Convert ``model`` to ONNX at ``path`` once the ONNX model answers ``sample`` as the
    original does; otherwise raise ``ConversionMismatch`` and write nothing.

    sample: rows to prove the conversion on (an array shaped ``[rows, ...]``; for Spark ML, a
        DataFrame or an array ``[rows, columns]`` of the columns its first stage reads; for a
        scikit-learn model fitted on a pandas DataFrame, a DataFrame with its columns). Needed
        for PyTorch modules, where it also gives the input's shape and type; synthesised from
        the model's signature elsewhere when not given.
    framework: ``sklearn``, ``torch``, ``keras`` or ``sparkml``; by default from the model's type.
    tolerance: the largest ``Difference.value`` accepted on any output.
    rows: how many sample rows to synthesise when ``sample`` is None.
    options: for the converter: ``opset`` (default 17), ``input_name`` (default ``input``;
        a scikit-learn model fitted on a DataFrame takes its columns' names instead),
        ``classes`` (class names, stored in the model's ``mlfn.classes`` metadata; a PyTorch
        or Keras network's one score output becomes ``probabilities`` with a ``label``), and
        ``spark`` (a SparkSession, Spark ML only).
    """
    name = framework or framework_of(model)
    converter = _converters().get(name)
    if converter is None:
        raise ConversionError(f"no framework {name!r}; choose one of {', '.join(FRAMEWORKS)}")
    if not tolerance >= 0:  # NaN too
        raise ConversionError(f"the tolerance must be a number >= 0, not {tolerance!r}")
    try:
        converted = converter(model, sample, rows, options)
    except (MlfnError, HostError):
        raise
    except Exception as exc:  # the original refusing the sample, a converter's own fault
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(
            f"converting the {name} model failed: {type(exc).__name__}: {first[:300]}"
        ) from exc
    proof.check(converted.model)
    differences = tuple(proof.compare(converted))
    worst = [d for d in differences if not d.value <= tolerance]  # NaN fails too
    count = len(next(iter(converted.feeds.values()), ()))
    if worst:
        raise ConversionMismatch(
            f"the ONNX model does not answer as the {name} model does on {count} sample rows "
            f"(tolerance {tolerance:g}): {'; '.join(map(str, worst))}; nothing was written"
        )
    target = Path(path)
    _write(converted, target)
    constant = tuple(
        output for output, values in converted.expected.items() if count > 1 and _constant(values)
    )
    return Conversion(
        target,
        name,
        count - converted.missing_rows,
        differences,
        tolerance,
        converted.synthesised,
        constant,
        converted.missing_rows,
        converted.warnings,
    )


def _constant(values: Any) -> bool:
    import numpy as np

    array = np.asarray(values)
    return array.ndim > 0 and len(array) > 1 and bool((array == array[:1]).all())


def _converters() -> dict[str, Callable[[Any, Any, int, dict[str, Any]], Converted]]:
    from runtime.convert import from_keras, from_sklearn, from_sparkml, from_torch

    return {
        "sklearn": from_sklearn.convert,
        "torch": from_torch.convert,
        "keras": from_keras.convert,
        "sparkml": from_sparkml.convert,
    }


def _write(converted: Converted, target: Path) -> None:
    """Through a temporary file and a rename: a reader never sees half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(converted.model.SerializeToString())
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
