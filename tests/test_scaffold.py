"""Scaffolds are code: `mlfn new` renders an endpoint that `mlfn serve` serves unedited."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result

from runtime.cli import main
from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import fixed_batch, multi_io
from tests.support import LocalHost, make_app


def _new(monkeypatch: pytest.MonkeyPatch, app: Path, *args: str) -> Result:
    """``mlfn new ARGS`` typed in the app folder, run in this process."""
    monkeypatch.chdir(app)
    return CliRunner().invoke(main, ["new", *args])


def _clean_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The environment of a fresh shell: no mlfn settings or storage account but ``env``."""
    for key in list(os.environ):
        if key.startswith(("MLFN_", "AzureWebJobs")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_new_endpoint_from_a_local_model_is_served_and_matches_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "app", {})
    model = multi_io(app / "multi.onnx")
    done = _new(monkeypatch, app, "tensors", "--model", "multi.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert done.stdout.startswith(f"created {Path('functions', 'tensors', 'endpoint.py')}\n")
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
            nan = {**rows[0], "features:0": [["NaN", 2.0], [3.0, 4.0]]}
            non_finite = http.post("/api/tensors/predict", json={"instances": [nan]})
    finally:
        server.stop()
    assert non_finite.status_code == 422  # the generated input model refuses NaN
    assert non_finite.json()["error"]["detail"][0]["field"] == "instances[0].features:0[0][0]"
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
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "app", {})
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("MLFN_CACHE_DIR", str(tmp_path / "cache"))
    done = _new(monkeypatch, app, "flowers", "--model", f"az://{models_in_blob}/iris.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
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
    tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "app", {})
    multi_io(app / "m.onnx")
    fixed_batch(app / "fixed.onnx")
    _clean_env(monkeypatch, MLFN_CACHE_DIR=str(tmp_path / "c"))
    done = _new(monkeypatch, app, *args)
    assert done.exit_code == 1, (done.output, done.exc_info)
    assert isinstance(done.exception, SystemExit), done.exc_info  # a message, not a crash
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (app / "functions" / args[0]).exists()
