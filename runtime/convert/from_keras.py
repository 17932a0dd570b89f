"""Keras models and TensorFlow SavedModels through tf2onnx: one float32 input ``input`` with a
dynamic batch axis, outputs ``output`` (``output_0``, ``output_1``, ... for several)."""

from __future__ import annotations

from typing import Any

from runtime.convert.base import (
    OPSET,
    Converted,
    as_classifier,
    output_names,
    quiet,
    rename_outputs,
    require,
)
from runtime.errors import ConversionError

EXTRA = "convert-keras"


def convert(model: Any, sample: Any, rows: int, options: dict[str, Any]) -> Converted:
    """Convert a Keras model, or a loaded SavedModel (``tf.saved_model.load``) through its
    ``serving_default`` signature, with one input."""
    tf = require("tensorflow", "Keras/TensorFlow", EXTRA)
    tf2onnx = require("tf2onnx", "Keras/TensorFlow", EXTRA)
    import numpy as np

    function = _function(tf, model)
    x = _sample(model, sample, rows)
    input_name = options.get("input_name", "input")
    spec = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype), name=input_name),)
    opset = options.get("opset", OPSET)
    try:
        # from_function for Keras models too: tf2onnx's from_keras reads Keras 2's output names
        # and fails on Keras 3 models (KeyError 'keras_tensor_N').
        with quiet("tensorflow", "tf2onnx"):
            onnx_model, _ = tf2onnx.convert.from_function(
                tf.function(function), input_signature=spec, opset=opset
            )
    except Exception as exc:  # tf2onnx raises many kinds; all mean "cannot convert this"
        raise ConversionError(f"tf2onnx cannot convert the model: {exc!r}") from None
    answers = function(tf.constant(x))
    if isinstance(answers, dict):
        answers = [answers[k] for k in sorted(answers)]
    answers = answers if isinstance(answers, list | tuple) else [answers]
    given = [o.name for o in onnx_model.graph.output]  # tf2onnx's: Identity:0, ...
    if len(given) != len(answers):
        raise ConversionError(
            f"the ONNX model has {len(given)} outputs, the original {len(answers)}"
        )
    outputs = output_names(len(given))
    rename_outputs(onnx_model, dict(zip(given, outputs, strict=True)))
    expected = {n: np.asarray(a) for n, a in zip(outputs, answers, strict=True)}
    if options.get("classes"):
        expected = as_classifier(onnx_model, expected, list(options["classes"]))
    return Converted(onnx_model, {input_name: x}, expected, synthesised=sample is None)


def _function(tf: Any, model: Any) -> Any:
    """What answers a batch: the Keras model, or a SavedModel's serving signature (which takes
    its one input by keyword)."""
    if not hasattr(model, "signatures"):
        return lambda x: model(x, training=False)
    serving = model.signatures.get("serving_default")
    if serving is None:
        raise ConversionError("the SavedModel has no serving_default signature")
    (name,) = serving.structured_input_signature[1]
    return lambda x: serving(**{name: x})


def _sample(model: Any, sample: Any, rows: int) -> Any:
    import numpy as np

    if sample is not None:
        return np.ascontiguousarray(np.asarray(sample, dtype=np.float32))
    shape = _input_shape(model)
    if shape is None or any(d is None for d in shape[1:]):
        raise ConversionError(
            f"cannot synthesise sample rows for an input shaped {shape}: pass a sample"
        )
    row = [int(d) for d in shape[1:] if d is not None]
    return np.random.default_rng(0).standard_normal((rows, *row)).astype(np.float32)


def _input_shape(model: Any) -> tuple[int | None, ...] | None:
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1:
        return tuple(inputs[0].shape)
    return None
