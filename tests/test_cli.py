"""The mlfn command line against a running host and Azurite, as a user types it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runtime import config
from runtime.cli import main
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, app_env, copy_examples

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}

Mlfn = Callable[..., Result]


@pytest.fixture
def app(tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str) -> tuple[Path, dict[str, str]]:
    """The repository's app and the settings that serve its models from Azurite."""
    app_dir = copy_examples(tmp_path / "app")
    return app_dir, app_env(azurite.connection_string, models_in_blob, tmp_path)


@pytest.fixture
def host(app: tuple[Path, dict[str, str]]) -> Iterator[LocalHost]:
    host = LocalHost(*app).start()
    yield host
    host.stop()


@pytest.fixture
def mlfn(
    app: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> Mlfn:
    """``mlfn ARGS`` typed in the app folder with the app's settings, run in this process
    (a host stays a subprocess: the CLI reaches it over real HTTP and real queues)."""
    app_dir, env = app
    monkeypatch.chdir(app_dir)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Process-wide state the app's import sets, which a subprocess would start without.
    monkeypatch.setattr(config, "_current", None)
    monkeypatch.setattr(config, "_warned", False)

    def run(*args: str) -> Result:
        # Each command imports the app afresh, as its own process would: the app's
        # FunctionApp lists its functions only once (get_functions() is not idempotent).
        for name in list(sys.modules):
            if name in ("function_app", "functions") or name.startswith("functions."):
                del sys.modules[name]
        return CliRunner().invoke(main, list(args))

    return run


def _failed(result: Result) -> object:
    return result.output, result.exc_info


def test_invoke_prints_predictions_and_fails_on_an_error_status(
    app: tuple[Path, dict[str, str]], host: LocalHost, mlfn: Mlfn
) -> None:
    ok = mlfn("invoke", "iris", "--url", host.url, "--data", json.dumps({"instances": [FLOWER]}))
    assert ok.exit_code == 0, _failed(ok)
    assert json.loads(ok.stdout)["predictions"][0]["label"] == "setosa"
    app_dir, _ = app
    (app_dir / "bad.json").write_text(json.dumps({"instances": [{"sepal_length": -1}]}))
    bad = mlfn("invoke", "iris", "--url", host.url, "--data", "@bad.json")
    assert bad.exit_code == 1, _failed(bad)
    assert isinstance(bad.exception, SystemExit), bad.exc_info  # the response, not a crash
    assert json.loads(bad.stderr)["error"]["type"] == "ValidationFailed"


def test_enqueue_then_results_through_the_cli(
    app: tuple[Path, dict[str, str]], host: LocalHost, mlfn: Mlfn
) -> None:
    app_dir, _ = app
    many = "\n".join(json.dumps(FLOWER) for _ in range(700))  # over 64 KB
    (app_dir / "many.jsonl").write_text(many)
    small = mlfn("enqueue", "iris", "--data", json.dumps([FLOWER]), "--id", "cli-1")
    large = mlfn("enqueue", "iris", "--data", "@many.jsonl", "--id", "cli-2")
    assert small.exit_code == 0, _failed(small)
    assert large.exit_code == 0, _failed(large)
    assert "queued cli-1 on iris-requests" in small.stdout
    assert "requests/iris/cli-2.jsonl" in large.stdout
    seen: dict[str, dict[str, object]] = {}
    for _ in range(10):
        done = mlfn("results", "iris", "--wait", "5")
        assert done.exit_code == 0, _failed(done)
        seen.update({d["id"]: d for d in map(json.loads, done.stdout.splitlines())})
        if len(seen) == 2:
            break
    assert set(seen) == {"cli-1", "cli-2"}
    assert seen["cli-1"]["predictions"][0]["label"] == "setosa"  # type: ignore[index]
    assert str(seen["cli-2"]["predictions_blob"]) == "results/iris/cli-2.json"


def test_unknown_endpoint_names_the_known_ones(mlfn: Mlfn) -> None:
    done = mlfn("enqueue", "tulips", "--data", "[]")
    assert done.exit_code == 1, _failed(done)
    assert isinstance(done.exception, SystemExit), done.exc_info  # a message, not a crash
    assert "no queue-triggered endpoint 'tulips'" in done.stderr and "iris" in done.stderr


def test_enqueue_refuses_what_the_endpoint_would_refuse_before_queueing(
    mlfn: Mlfn, tmp_path: Path
) -> None:
    missing = mlfn("enqueue", "iris", "--data", f"@{tmp_path / 'nothing.json'}")
    assert missing.exit_code == 1 and "No such file or directory" in missing.output, _failed(
        missing
    )
    nan = mlfn("enqueue", "iris", "--data", '{"instances": [{"sepal_length": NaN}]}')
    assert nan.exit_code == 1 and "not a finite JSON number" in nan.output, _failed(nan)
    bad_id = mlfn("enqueue", "iris", "--data", json.dumps([FLOWER]), "--id", "bad id!")
    assert bad_id.exit_code == 1 and '"id" must be a string' in bad_id.output, _failed(bad_id)
    for result in (missing, nan, bad_id):
        assert result.exc_info is None or result.exc_info[0] is SystemExit


def test_enqueue_and_results_say_storage_is_unreachable_in_one_line(
    mlfn: Mlfn, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    monkeypatch.setenv("AzureWebJobsStorage", nobody)
    monkeypatch.setenv("MLFN_STORE_RETRIES", "0")
    for args in (("enqueue", "iris", "--data", json.dumps([FLOWER])), ("results", "iris")):
        result = mlfn(*args)
        assert result.exit_code == 1, _failed(result)
        assert "cannot be reached" in result.output, _failed(result)
        assert result.exc_info is None or result.exc_info[0] is SystemExit, _failed(result)
