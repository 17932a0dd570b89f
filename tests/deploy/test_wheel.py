"""mlfn as a package: the wheel built from this checkout, installed in a fresh venv, gives the
whole CLI; a new app made with it passes ``mlfn check`` and serves a prediction."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from runtime.deploy import example_model
from tests.support import ROOT, LocalHost

pytestmark = pytest.mark.slow  # a wheel built and installed with its dependencies in a venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with only the wheel (and what it depends on) installed; its bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools builds in the source's own build/ folder, where two builds
    # at once (two test workers, a developer's) collide, and where the project keeps its own.
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "node_modules", "build", ".azurite", "__pycache__", "*.egg-info",
        ".mypy_cache", ".ruff_cache", ".pytest_cache",
    ))  # fmt: skip
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp / "dist"), str(source)], check=True)
    wheel = next((tmp / "dist").glob("mlfn-*.whl"))
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(tmp / "venv")], check=True)
    bin_dir = tmp / "venv" / "bin"
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
    )
    yield bin_dir
    shutil.rmtree(tmp, ignore_errors=True)


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A new user's shell: none of this checkout's venv, path or test settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("MLFN_", "AzureWebJobs"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [str(bin_dir / "mlfn"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_wheel_carries_the_runtime_and_its_scaffolds_outside_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import runtime, runtime.deploy.init as i; print(runtime.__file__); print(i.app_templates())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(str(installed.parent) in line for line in where), where
    assert Path(where[1], "host.json").is_file()
    done = _run(installed, "--help", cwd=tmp_path)
    for command in ("init", "new", "serve", "check", "pack", "publish"):
        assert f"  {command} " in done.stdout, done.stdout


def test_init_new_check_serve_from_the_installed_wheel(
    installed: Path, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    done = _run(installed, "init", "app", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    app = tmp_path / "app"
    # mlfn is not on PyPI: the app carries the wheel it was made with, and installs that.
    requirements = (app / "requirements.txt").read_text()
    assert "./wheels/mlfn-0.1.0-py3-none-any.whl" in requirements.splitlines()
    assert (app / "wheels" / "mlfn-0.1.0-py3-none-any.whl").is_file()

    (app / "models" / "iris.onnx").write_bytes(example_models["iris"].read_bytes())
    done = _run(installed, "new", "iris", "--model", "models/iris.onnx", cwd=app)
    assert done.returncode == 0, done.stderr + done.stdout
    done = _run(installed, "check", cwd=app)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = _run(installed, "check", "--list-files", cwd=app).stdout.split()
    assert "models/iris.onnx" in listed and "local.settings.json" not in listed
    assert "wheels/mlfn-0.1.0-py3-none-any.whl" in listed

    host = LocalHost(app, {}, args=("--no-queues",), mlfn=installed / "mlfn").start()
    try:
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        with httpx.Client(base_url=host.url, timeout=60) as http:
            iris = http.post("/api/iris/predict", json={"instances": [{"input": r} for r in rows]})
            example = http.post(
                "/api/example/predict", json={"instances": [{"x": [1.0, 2.0, 3.0, 4.0]}]}
            )
    finally:
        host.stop()
    assert iris.status_code == 200, iris.text
    session = ort.InferenceSession(str(example_models["iris"]))
    labels, probabilities = session.run(None, {"input": np.array(rows, dtype=np.float32)})
    got = iris.json()["predictions"]
    assert [p["label"] for p in got] == labels.tolist()
    np.testing.assert_allclose([p["probabilities"] for p in got], probabilities, rtol=1e-6)
    assert example.status_code == 200, example.text
    (y,) = example.json()["predictions"][0]["y"]
    assert y == pytest.approx(example_model.expected([[1.0, 2.0, 3.0, 4.0]])[0], rel=1e-6)
