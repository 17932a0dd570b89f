"""The app as the Functions worker indexes it: its own loader, with its stricter checks of
parameters against bindings, output annotations and return types."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import ROOT, WORKER_PROBE, WORKER_PYTHON, declared_functions, needs_worker

pytestmark = needs_worker


def _index(app_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKER_PYTHON), str(WORKER_PROBE), str(app_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_worker_loads_every_function_of_the_app(isolated_imports: None) -> None:
    done = _index(ROOT)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {
        "iris_predict",
        "iris_queue",
        "diabetes_predict",
        "diabetes_queue",
        "iris_batch",
        "diabetes_batch",
        "health_live",
    } <= loaded
    assert {"v2_model_infer", "v2_model_version_infer", "openapi", "docs"} <= loaded
    assert loaded == declared_functions(ROOT)


def test_the_worker_refuses_a_function_whose_parameters_do_not_match_its_bindings(
    tmp_path: Path,
) -> None:
    (tmp_path / "function_app.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp()\n"
        '@app.queue_trigger(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")\n'
        "def f(message: func.QueueMessage) -> None:\n"
        "    pass\n"
    )
    done = _index(tmp_path)
    assert done.returncode != 0
    assert "FunctionLoadError" in done.stderr and "message" in done.stderr
