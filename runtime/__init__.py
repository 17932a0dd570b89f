"""mlfn: a predict function and an ONNX model as endpoints on Azure Functions.

Importing this package is cheap on purpose (it runs on every cold start): onnxruntime, numpy
and the storage SDKs load on first use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# onnxruntime's Linux and macOS wheels (1.32 here) send usage telemetry to Microsoft, and keep
# a device id and an event database under ~/.cache and a session file in the temporary folder,
# unless ORT_DISABLE_TELEMETRY is set before onnxruntime loads (it reads it once). An endpoint
# calls out only where its settings say so: off, unless the app sets it (docs/security.md).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from runtime.element_types import Float16, Float32
from runtime.endpoint import Batch, Columns, Endpoint, Limits, Queues, stacked
from runtime.errors import MlfnError, ValidationFailed
from runtime.models.onnx_model import OnnxModel, TensorSpec
from runtime.models.reference import Model
from runtime.payload_log.declared import Log, NotLogged

if TYPE_CHECKING:
    import azure.functions as func

__all__ = [
    "Batch",
    "Columns",
    "Endpoint",
    "Float16",
    "Float32",
    "Limits",
    "Log",
    "MlfnError",
    "Model",
    "NotLogged",
    "OnnxModel",
    "Queues",
    "TensorSpec",
    "ValidationFailed",
    "build_app",
    "stacked",
]


def build_app(functions_dir: Any, **kwargs: Any) -> func.FunctionApp:
    """Build the Functions app from ``functions_dir`` (see ``runtime.registration.build_app``)."""
    from runtime.registration import build_app as _build

    return _build(functions_dir, **kwargs)
