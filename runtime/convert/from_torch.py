"""PyTorch modules, TorchScript modules and ``torch.export`` programs to ONNX: input ``input``
with a dynamic batch axis, outputs ``output`` (``output_0``, ``output_1``, ... for several).

Exporters, chosen on purpose: a module or an ``ExportedProgram`` goes through the
``torch.export``-based exporter (``dynamo=True``, torch's default since 2.9; it needs
onnxscript); a TorchScript module can only go through the older TorchScript exporter
(``dynamo=False``), which torch deprecates: prefer a ``torch.export`` archive for new models.
"""

from __future__ import annotations

import io
from typing import Any

from runtime.convert.base import (
    Converted,
    as_classifier,
    first_line,
    output_names,
    quiet,
    require,
)
from runtime.errors import ConversionError

EXTRA = "convert-torch"
# The torch.export-based exporter writes opset 18 natively (asked for less, it converts down
# and may fail); onnxruntime has run opset 18 since 1.14.
OPSET = 18


def convert(model: Any, sample: Any, rows: int, options: dict[str, Any]) -> Converted:
    """Export ``model`` (an ``nn.Module``, a TorchScript module or an ``ExportedProgram``),
    proven on ``sample`` (for an ``ExportedProgram``, its own example inputs by default)."""
    torch = require("torch", "PyTorch", EXTRA)
    require("onnx", "PyTorch", EXTRA)
    import numpy as np

    exported = isinstance(model, torch.export.ExportedProgram)
    if sample is None and exported and model.example_inputs:
        args, _ = model.example_inputs
        sample = args[0].detach().numpy() if len(args) == 1 else None
    if sample is None:
        raise ConversionError(
            "a PyTorch model needs a sample input to convert (sample=, or --sample FILE.npy): an "
            "array shaped [rows, ...] with the input's type; it gives the input's shape"
        )
    module = model.module() if exported else model.eval()
    x = np.ascontiguousarray(np.asarray(sample))
    if x.dtype.kind == "f":
        x = x.astype(_float_type(torch, module), copy=False)
    tensor = torch.from_numpy(x)
    with torch.no_grad():
        answers = module(tensor)
    answers = tuple(answers) if isinstance(answers, tuple | list) else (answers,)
    outputs = output_names(len(answers))
    input_name = options.get("input_name", "input")
    onnx_model = _export(torch, model, tensor, input_name, outputs, options.get("opset", OPSET))
    expected = {name: a.detach().numpy() for name, a in zip(outputs, answers, strict=True)}
    if options.get("classes"):
        expected = as_classifier(onnx_model, expected, list(options["classes"]))
    return Converted(onnx_model, {input_name: x}, expected)


def _float_type(torch: Any, module: Any) -> Any:
    """The numpy type of the module's first floating parameter, float32 without one: a network
    refuses input of another float type, and numpy saves float64 unless told otherwise."""
    import numpy as np

    types = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return types.get(parameter.dtype, np.float32)
    return np.float32


def _export(torch: Any, model: Any, x: Any, input_name: str, outputs: list[str], opset: int) -> Any:
    import onnx

    script = isinstance(model, torch.jit.ScriptModule)
    with quiet("torch.onnx", "torch.export", "onnxscript"):
        try:
            if script:
                buffer = io.BytesIO()
                torch.onnx.export(
                    model, (x,), buffer, input_names=[input_name], output_names=outputs,
                    dynamic_axes={n: {0: "batch"} for n in (input_name, *outputs)},
                    opset_version=opset, dynamo=False,
                )  # fmt: skip
                return onnx.load_from_string(buffer.getvalue())
            require("onnxscript", "PyTorch", EXTRA)
            exported = isinstance(model, torch.export.ExportedProgram)
            program = torch.onnx.export(
                model, () if exported else (x,), input_names=[input_name], output_names=outputs,
                dynamic_shapes=None if exported else ({0: torch.export.Dim("batch")},),
                opset_version=opset, dynamo=True, verbose=False,
            )  # fmt: skip
        except ConversionError:
            raise
        except Exception as exc:  # the exporters raise many kinds; all mean "cannot export"
            raise ConversionError(
                f"torch.onnx.export cannot export the model: {first_line(exc)}"
            ) from None
    return program.model_proto
