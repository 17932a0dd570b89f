"""Scaffolds are code: `mlfn new` renders an endpoint that `mlfn serve` serves unedited."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import fixed_batch, multi_io
from tests.support import MLFN, LocalHost, make_app


def _new(
    app: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLFN), "new", *args], cwd=app, capture_output=True, text=True, env=env, timeout=120
    )


def test_new_endpoint_from_a_local_model_is_served_and_matches_onnxruntime(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {})
    model = multi_io(app / "multi.onnx")
    done = _new(app, "tensors", "--model", "multi.onnx")
    assert done.returncode == 0, done.stderr
    source = (app / "functions" / "tensors" / "endpoint.py").read_text()
    assert 'Model("./multi.onnx")' in source
    assert (
        'features_0: Annotated[list[Annotated[list[float], Field(min_length=2, max_length=2)]], Field(min_length=2, max_length=2)] = Field(alias="features:0")'
        in source
    )
    assert "count: int" in source and "mask: Annotated[list[bool]" in source
    compile(source, "endpoint.py", "exec")

    rows = [
        {"features:0": [[1.5, 2.0], [3.0, -4.0]], "count": 7, "mask": [True, False]},
        {"features:0": [[0.0, 0.5], [1.0, 1.0]], "count": -1, "mask": [False, False]},
    ]
    server = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp_path / "cache")}, ("--no-queues",)).start()
    try:
        with server.client() as http:
            ok = http.post("/api/tensors/predict", json={"instances": rows})
            bad = http.post(
                "/api/tensors/predict", json={"instances": [{**rows[0], "mask": [True]}]}
            )
    finally:
        server.stop()
    assert ok.status_code == 200, ok.text + server.output()
    feeds = {
        "features:0": np.array([r["features:0"] for r in rows], dtype=np.float32),
        "count": np.array([r["count"] for r in rows], dtype=np.int64),
        "mask": np.array([r["mask"] for r in rows], dtype=bool),
    }
    doubled, nxt, not_mask = ort.InferenceSession(str(model)).run(
        ["doubled", "next", "not_mask"], feeds
    )
    assert ok.json()["predictions"] == [
        {"doubled": doubled[i].tolist(), "next": int(nxt[i]), "not_mask": not_mask[i].tolist()}
        for i in range(2)
    ]
    assert bad.status_code == 422
    assert bad.json()["error"]["detail"][0]["field"] == "instances[0].mask"


def test_new_endpoint_from_a_store_uri_references_it_verbatim(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str
) -> None:
    import os

    app = make_app(tmp_path / "app", {})
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = _new(app, "flowers", "--model", f"az://{models_in_blob}/iris.onnx", env=env)
    assert done.returncode == 0, done.stderr
    source = (app / "functions" / "flowers" / "endpoint.py").read_text()
    assert f'Model("az://{models_in_blob}/iris.onnx")' in source
    assert "fetching iris.onnx" in done.stderr  # downloads run from the CLI show progress
    assert "input: Annotated[list[float], Field(min_length=4, max_length=4)]" in source
    assert (
        "label: int" in source
        and "probabilities: Annotated[list[float], Field(min_length=3, max_length=3)]" in source
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad-Name", "--model", "m.onnx"], "must match"),
        (["fixed", "--model", "fixed.onnx"], "fixed batch dimension of 8"),
        (["nofile", "--model", "./absent.onnx"], "does not exist"),
    ],
)
def test_new_refuses_what_it_cannot_serve_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    app = make_app(tmp_path / "app", {})
    multi_io(app / "m.onnx")
    fixed_batch(app / "fixed.onnx")
    done = _new(app, *args, env={"PATH": "/usr/bin:/bin", "MLFN_CACHE_DIR": str(tmp_path / "c")})
    assert done.returncode != 0
    assert message in done.stderr
    assert not (app / "functions" / args[0]).exists()
