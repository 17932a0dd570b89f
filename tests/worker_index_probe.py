"""Index an app with the Functions Python worker's own loader (azure_functions_runtime), offline.

    .venv-3.13/bin/python tests/worker_index_probe.py APP_DIR

Prints one line per function the worker would load; exits non-zero with the worker's error
otherwise. Run by the Python 3.13 venv `make setup` builds with azure-functions-runtime (the
worker's indexing code on 3.13) and azure-functions 2.x, as on Azure.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any


def main(app_dir: str) -> None:
    sys.path.insert(0, app_dir)
    from azure_functions_runtime import loader
    from azure_functions_runtime.bindings.meta import load_binding_registry
    from azure_functions_runtime.functions import Registry

    load_binding_registry()

    class Message:  # stands in for the protobuf messages the proxy worker normally injects
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    class BindingInfo(Message):
        undefined, string, binary, stream, out, inout = 0, 1, 2, 3, 1, 2

    setattr(BindingInfo, "in", 0)
    protos = types.SimpleNamespace(
        BindingInfo=BindingInfo,
        RpcFunctionMetadata=type("RpcFunctionMetadata", (Message,), {}),
        RpcRetryOptions=type("RpcRetryOptions", (Message,), {}),
    )
    indexed = loader.index_function_app(os.path.join(app_dir, "function_app.py"))
    metadata, _ = loader.process_indexed_function(protos, Registry(), indexed, app_dir)
    for function in metadata:
        print(function.name)


if __name__ == "__main__":
    main(sys.argv[1])
