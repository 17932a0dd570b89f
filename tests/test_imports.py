"""Cold start is the product: indexing the app must not pull in the heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    local = ("runtime.host", "runtime.cli", "runtime.convert", "uvicorn", "click")
    assert sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in local)) == []


def test_a_deployed_app_imports_nothing_of_spark() -> None:
    loaded = _modules_after("import function_app")
    spark = ("runtime.spark", "pyspark", "py4j", "pyarrow", "pandas")
    assert sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in spark)) == []


def test_importing_runtime_spark_waits_for_first_use_to_import_pyspark() -> None:
    loaded = _modules_after("import runtime.spark")
    assert "runtime.spark" in loaded
    assert [m for m in ("pyspark", "py4j", "pyarrow", "pandas", "onnxruntime") if m in loaded] == []


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


# Serving with telemetry off: a predict request, a queue message and a sync route, in the
# deployed app's own functions (no host, so no invocation context: what a test or bench does).
SERVE = """
import asyncio, json, sys
import azure.functions as func
import function_app

fns = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
body = json.dumps({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,
                                  "petal_width": 0.2}]}).encode()
request = func.HttpRequest("POST", "http://localhost/api/iris/predict", body=body)
assert asyncio.run(fns["iris_predict"](req=request)).status_code == 200

class Out(func.Out[str]):
    def set(self, val): self.val = val
    def get(self): return self.val

out = Out()
job = json.dumps({"id": "j", "instances": json.loads(body)["instances"]}).encode()
asyncio.run(fns["iris_queue"](msg=func.QueueMessage(id="m", body=job), out=out))
assert json.loads(out.get())["predictions"], out.get()
assert fns["health_live"](req=func.HttpRequest("GET", "http://localhost/", body=b"")).status_code == 200
print(json.dumps(sorted(sys.modules)))
"""


def test_with_telemetry_off_serving_imports_nothing_of_opentelemetry(
    example_models: dict[str, Path], tmp_path: Path
) -> None:
    telemetry = ("OTEL_", "APPLICATIONINSIGHTS_", "MLFN_", "AzureWebJobs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(telemetry)}
    env["MLFN_MODEL_STORE"] = str(example_models["iris"].parent)
    env["MLFN_CACHE_DIR"] = str(tmp_path / "cache")
    out = subprocess.run(
        [sys.executable, "-c", SERVE], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "runtime.telemetry" in loaded and "onnxruntime" in loaded  # it did serve
    otel = ("opentelemetry", "azure.monitor", "runtime.telemetry.otel", "runtime.telemetry.setup")
    assert sorted(m for m in loaded if m.startswith(otel)) == []


COLUMNAR = """
from pydantic import BaseModel

from runtime import Columns, Endpoint, OnnxModel


class In(BaseModel):
    x: float


class Out(BaseModel):
    y: float


endpoint = Endpoint(In, Out, model="iris.onnx")


@endpoint.predict_columns
def predict(columns: Columns, model: OnnxModel) -> Columns:
    return {"y": columns["x"]}
"""


def test_indexing_an_app_with_a_columnar_predict_imports_nothing_of_the_columnar_path(
    tmp_path: Path,
) -> None:
    from tests.support import make_app

    app = make_app(tmp_path / "app", {"cols": COLUMNAR})
    code = "import json, sys; import function_app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=app, check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout  # fmt: skip
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "functions.cols.endpoint" in loaded
    columnar = ("runtime.columnar", "runtime.services.columns", "numpy", "pyarrow")
    assert sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in columnar)) == []
