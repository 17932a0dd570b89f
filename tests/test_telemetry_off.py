"""An endpoint sends nothing it was not asked to: onnxruntime's own telemetry is off unless the
app turns it on (runtime/__init__.py, docs/security.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

# What the Functions worker does first (index the app), then what a first request does with
# onnxruntime (load it, make a session).
FIRST_REQUEST = """
import sys
import function_app
import onnxruntime
onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
"""


def _run(code: str, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    home, temp = tmp / "home", tmp / "temp"
    home.mkdir(exist_ok=True)
    temp.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**clean, "HOME": str(home), "TMPDIR": str(temp), **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_deployed_app_leaves_no_telemetry_state_behind(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    # onnxruntime 1.32 on Linux, left to itself, writes TMPDIR/.ses (its session) and
    # ~/.cache/Microsoft/DeveloperTools/.onnxruntime (a device id, an event database to upload).
    _run(FIRST_REQUEST, tmp_path, str(example_models["iris"]))
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir())
    assert written == []


def test_an_app_that_sets_onnxruntime_s_telemetry_keeps_its_choice(tmp_path: Path) -> None:
    code = "import os, function_app; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    assert _run(code, tmp_path, ORT_DISABLE_TELEMETRY="0").stdout.strip() == "0"
    assert _run(code, tmp_path).stdout.strip() == "1"
