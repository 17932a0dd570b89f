"""Cold start is the product: indexing the app must not pull in the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

HEAVY = (
    "onnxruntime",
    "numpy",
    "azure.storage.blob",
    "azure.storage.queue",
    "azure.identity",
    "boto3",
)


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_function_app_loads_no_heavy_library() -> None:
    loaded = _modules_after("import function_app")
    assert "function_app" in loaded and "functions.iris.endpoint" in loaded
    assert [m for m in HEAVY if m in loaded] == []


def test_a_deployed_app_imports_neither_the_local_host_nor_the_cli_nor_its_tooling() -> None:
    loaded = _modules_after("import function_app")
    local = ("runtime.host", "runtime.cli", "uvicorn", "click")
    assert sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in local)) == []


def test_importing_runtime_loads_neither_heavy_libraries_nor_azure_functions() -> None:
    loaded = _modules_after("import runtime")
    assert [m for m in (*HEAVY, "azure.functions") if m in loaded] == []


def test_indexing_the_app_touches_no_network_and_loads_no_model() -> None:
    # With an unreachable store configured, indexing must still succeed: nothing is fetched.
    code = (
        "import os; os.environ['AzureWebJobsStorage'] = 'DefaultEndpointsProtocol=http;"
        "AccountName=x;AccountKey=eA==;BlobEndpoint=http://127.0.0.1:9/x;'; "
        "import function_app; fns = function_app.app.get_functions(); "
        "print(sorted(f.get_function_name() for f in fns))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "iris_predict" in out and "diabetes_predict" in out
