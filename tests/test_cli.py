"""The mlfn command line against a running host and Azurite, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AzuriteInfo
from tests.support import MLFN, LocalHost, app_env, copy_examples

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def app_and_host(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str
) -> Iterator[tuple[Path, LocalHost, dict[str, str]]]:
    app = copy_examples(tmp_path / "app")
    env = app_env(azurite.connection_string, models_in_blob, tmp_path)
    host = LocalHost(app, env).start()
    yield app, host, env
    host.stop()


def _mlfn(app: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLFN), *args],
        cwd=app,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_invoke_prints_predictions_and_fails_on_an_error_status(
    app_and_host: tuple[Path, LocalHost, dict[str, str]],
) -> None:
    app, host, env = app_and_host
    ok = _mlfn(
        app, env, "invoke", "iris", "--url", host.url, "--data", json.dumps({"instances": [FLOWER]})
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["predictions"][0]["label"] == "setosa"
    (app / "bad.json").write_text(json.dumps({"instances": [{"sepal_length": -1}]}))
    bad = _mlfn(app, env, "invoke", "iris", "--url", host.url, "--data", "@bad.json")
    assert bad.returncode == 1
    assert json.loads(bad.stderr)["error"]["type"] == "ValidationFailed"


def test_enqueue_then_results_through_the_cli(
    app_and_host: tuple[Path, LocalHost, dict[str, str]],
) -> None:
    app, _, env = app_and_host
    (app / "many.jsonl").write_text("\n".join(json.dumps(FLOWER) for _ in range(700)))  # over 64 KB
    small = _mlfn(app, env, "enqueue", "iris", "--data", json.dumps([FLOWER]), "--id", "cli-1")
    large = _mlfn(app, env, "enqueue", "iris", "--data", "@many.jsonl", "--id", "cli-2")
    assert small.returncode == 0 and "queued cli-1 on iris-requests" in small.stdout
    assert large.returncode == 0 and "requests/iris/cli-2.jsonl" in large.stdout
    seen: dict[str, dict[str, object]] = {}
    for _ in range(10):
        done = _mlfn(app, env, "results", "iris", "--wait", "5")
        seen.update({d["id"]: d for d in map(json.loads, done.stdout.splitlines())})
        if len(seen) == 2:
            break
    assert set(seen) == {"cli-1", "cli-2"}
    assert seen["cli-1"]["predictions"][0]["label"] == "setosa"  # type: ignore[index]
    assert str(seen["cli-2"]["predictions_blob"]) == "results/iris/cli-2.json"


def test_unknown_endpoint_names_the_known_ones(
    app_and_host: tuple[Path, LocalHost, dict[str, str]],
) -> None:
    app, _, env = app_and_host
    done = _mlfn(app, env, "enqueue", "tulips", "--data", "[]")
    assert done.returncode == 1
    assert "no queue-triggered endpoint 'tulips'" in done.stderr and "iris" in done.stderr
