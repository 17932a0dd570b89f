"""The mlfn command line against a running host and Azurite, as a user types it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runtime.cli import main
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, Mlfn, app_env, copy_examples, mlfn_in

# Every test here shares the iris endpoint's queues in the one Azurite of the run: in turn, in
# one xdist worker, or a result one test waits for is drained by another ("conn-1" was, in a
# fresh-clone make test).
pytestmark = pytest.mark.xdist_group("cli-iris-queues")

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


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
    """``mlfn ARGS`` typed in the app folder with the app's settings, run in this process."""
    app_dir, env = app
    return mlfn_in(app_dir, env, monkeypatch)


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


# --- where the app and its storage are (MLFN_URL, --url, --connection) --------------------------

UNREACHABLE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;"
    "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)


def test_invoke_calls_the_app_at_mlfn_url(
    host: LocalHost, mlfn: Mlfn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFN_URL", host.url)
    ok = mlfn("invoke", "iris", "--data", json.dumps({"instances": [FLOWER]}))
    assert ok.exit_code == 0, _failed(ok)
    assert json.loads(ok.stdout)["predictions"][0]["label"] == "setosa"
    # --url wins over the variable.
    monkeypatch.setenv("MLFN_URL", "http://127.0.0.1:9")
    body = json.dumps({"instances": [FLOWER]})
    again = mlfn("invoke", "iris", "--url", host.url, "--data", body)
    assert again.exit_code == 0, _failed(again)


def test_a_bad_mlfn_url_is_one_line_naming_the_variable(
    mlfn: Mlfn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFN_URL", "127.0.0.1:7071")
    done = mlfn("invoke", "iris", "--data", "[]")
    assert done.exit_code == 1, _failed(done)
    assert "MLFN_URL" in done.stderr and len(done.stderr.strip().splitlines()) == 1, _failed(done)
    assert done.exc_info is None or done.exc_info[0] is SystemExit, _failed(done)


def test_the_help_of_each_client_command_names_what_it_reads(mlfn: Mlfn) -> None:
    assert "MLFN_URL" in mlfn("invoke", "--help").output
    for command in ("enqueue", "results", "batch", "upload"):
        shown = mlfn(command, "--help").output
        assert "--connection" in shown and "AzureWebJobsStorage" in shown, (command, shown)


def test_storage_commands_reach_the_account_given_by_connection(
    app: tuple[Path, dict[str, str]],
    host: LocalHost,
    mlfn: Mlfn,
    azurite: AzuriteInfo,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The shell's own setting points nowhere: --connection alone reaches Azurite.
    monkeypatch.setenv("AzureWebJobsStorage", UNREACHABLE)
    monkeypatch.setenv("MLFN_STORE_RETRIES", "0")
    real = azurite.connection_string
    sent = mlfn(
        "enqueue", "iris", "--data", json.dumps([FLOWER]), "--id", "conn-1", "--connection", real
    )
    assert sent.exit_code == 0, _failed(sent)
    seen: list[str] = []
    for _ in range(10):
        done = mlfn("results", "iris", "--wait", "5", "--connection", real)
        assert done.exit_code == 0, _failed(done)
        seen += [json.loads(line)["id"] for line in done.stdout.splitlines()]
        if seen:
            break
    assert seen == ["conn-1"]
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not really a model")
    up = mlfn("upload", str(model), "az://conn-test/m.onnx", "--connection", real)
    assert up.exit_code == 0, _failed(up)
    assert "sha256" in up.stdout


def test_without_connection_the_storage_commands_read_local_settings_as_serve_does(
    app: tuple[Path, dict[str, str]], mlfn: Mlfn, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir, env = app
    monkeypatch.delenv("AzureWebJobsStorage")
    (app_dir / "local.settings.json").write_text(
        json.dumps({"Values": {"AzureWebJobsStorage": env["AzureWebJobsStorage"]}})
    )
    done = mlfn("results", "iris")
    assert done.exit_code == 0, _failed(done)


# --- errors as one line ----------------------------------------------------------------------


def test_a_missing_data_file_is_one_line_for_invoke_and_enqueue(mlfn: Mlfn) -> None:
    for command in ("invoke", "enqueue"):
        done = mlfn(command, "iris", "--data", "@missing.json")
        assert done.exit_code == 1, _failed(done)
        assert done.stderr == "Error: --data @missing.json: No such file or directory\n", _failed(
            done
        )


def test_a_data_file_that_is_not_text_is_one_line(mlfn: Mlfn, tmp_path: Path) -> None:
    binary = tmp_path / "model.onnx"
    binary.write_bytes(b"\x08\xff\xfe\x00binary")
    done = mlfn("enqueue", "iris", "--data", f"@{binary}")
    assert done.exit_code == 1, _failed(done)
    assert "is not UTF-8 text" in done.stderr and len(done.stderr.splitlines()) == 1, _failed(done)


def test_invoke_says_a_lost_connection_in_one_line(mlfn: Mlfn) -> None:
    import socket
    import threading

    # A server that accepts and hangs up before answering, as a crashing app would.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        done = mlfn("invoke", "iris", "--url", f"http://127.0.0.1:{port}", "--data", "[]")
        thread.join()
    assert done.exit_code == 1, _failed(done)
    assert done.stderr.startswith("Error: ") and len(done.stderr.splitlines()) == 1, _failed(done)


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("import time\nx = (\n", "functions/broken/endpoint.py, line 2: SyntaxError"),
        (
            "import no_such_module_here\n",
            "functions/broken/endpoint.py, line 1: ModuleNotFoundError",
        ),
        (
            "raise RuntimeError('boom')\n",
            "functions/broken/endpoint.py, line 1: RuntimeError: boom",
        ),
    ],
)
@pytest.mark.parametrize("command", [("serve", "--port", "9"), ("results", "broken")])
def test_an_endpoint_that_fails_to_import_is_one_line_naming_file_and_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_imports: None,
    source: str,
    says: str,
    command: tuple[str, ...],
) -> None:
    from tests.support import make_app

    app = make_app(tmp_path / "app", {"broken": source})
    monkeypatch.chdir(app)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    done = CliRunner().invoke(main, list(command))
    assert done.exit_code == 1, _failed(done)
    assert done.exc_info is None or done.exc_info[0] is SystemExit, _failed(done)
    assert done.stderr.startswith("Error: importing function_app.py failed: "), _failed(done)
    assert says in done.stderr and len(done.stderr.splitlines()) == 1, _failed(done)


def test_a_file_a_command_cannot_write_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not really a model")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["upload", str(model), str(model / "sub" / "m.onnx")])
    assert done.exit_code == 1, _failed(done)
    assert done.stderr == f"Error: {model / 'sub'}: Not a directory\n", _failed(done)


# --- --wait, --data and what a client command says when it finds nothing -------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "abc", ""])
def test_results_wait_must_be_a_finite_number_of_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # No app here: a value that got past the option would fail reading the app, with exit 1.
    monkeypatch.chdir(tmp_path)
    for args in (["--wait", value], [f"--wait={value}"]):
        done = CliRunner().invoke(main, ["results", "iris", *args])
        assert done.exit_code == 2, _failed(done)
        said = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(said) == 1 and "'--wait'" in said[0] and "seconds" in said[0], _failed(done)


@pytest.mark.parametrize(
    ("args", "wait_s"),
    [(["iris", "--wait"], 600.0), (["--wait", "iris"], 600.0), (["iris", "--wait", "2.5"], 2.5)],
)
def test_results_wait_alone_means_the_default_as_in_batch(args: list[str], wait_s: float) -> None:
    from runtime.cli.calls import results

    ctx = results.make_context("results", args)
    assert ctx.params["name"] == "iris" and ctx.params["wait_s"] == wait_s
    assert "--wait alone" in CliRunner().invoke(main, ["results", "--help"]).output


def test_results_on_an_empty_queue_say_so_on_stderr_and_exit_0(mlfn: Mlfn) -> None:
    while mlfn("results", "iris").stdout:  # what earlier tests may have left on the queue
        pass
    done = mlfn("results", "iris", "--wait", "0.2")
    assert done.exit_code == 0, _failed(done)
    assert done.stdout == "" and done.stderr == "no results on iris-results after 0.2s\n"
    at_once = mlfn("results", "iris")
    assert at_once.exit_code == 0 and at_once.stderr == "no results on iris-results\n"
    assert "Exits 0 when there are none" in mlfn("results", "--help").output


def test_invoke_of_an_unknown_endpoint_lists_the_apps_predict_endpoints(
    host: LocalHost, mlfn: Mlfn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"instances": [FLOWER]})
    done = mlfn("invoke", "irs", "--url", host.url, "--data", body)
    assert done.exit_code == 1, _failed(done)
    assert done.stderr == (
        "Error: no endpoint 'irs' in this app answers /api/irs/predict; known: diabetes, iris\n"
    ), _failed(done)
    # Outside an app folder, the app's own answer, in one line.
    monkeypatch.chdir(tmp_path)
    outside = mlfn("invoke", "irs", "--url", host.url, "--data", body)
    assert outside.exit_code == 1, _failed(outside)
    assert outside.stderr == ("Error: no function is registered for /api/irs/predict\n"), _failed(
        outside
    )


def test_invoke_sends_a_json_lines_file_as_instances_as_enqueue_does(
    app: tuple[Path, dict[str, str]], host: LocalHost, mlfn: Mlfn
) -> None:
    app_dir, _ = app
    other = {**FLOWER, "petal_length": 6.0, "petal_width": 2.2}
    (app_dir / "flowers.jsonl").write_text(f"{json.dumps(FLOWER)}\n\n{json.dumps(other)}\n")
    done = mlfn("invoke", "iris", "--url", host.url, "--data", "@flowers.jsonl")
    assert done.exit_code == 0, _failed(done)
    labels = [p["label"] for p in json.loads(done.stdout)["predictions"]]
    assert labels == ["setosa", "virginica"]


@pytest.mark.parametrize("command", ["invoke", "enqueue"])
@pytest.mark.parametrize(
    ("line", "says"), [("{not json", "is not valid JSON: "), ('{"x": NaN}', "holds NaN")]
)
def test_a_bad_line_of_a_json_lines_data_file_is_named_by_its_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, line: str, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flowers.jsonl").write_text(f"{json.dumps(FLOWER)}\n\n{line}\n")
    # Nothing listens at --url: a file sent as it is would fail as unreachable instead.
    url = ["--url", "http://127.0.0.1:9"] if command == "invoke" else []
    done = CliRunner().invoke(main, [command, "iris", *url, "--data", "@flowers.jsonl"])
    assert done.exit_code == 1, _failed(done)
    assert done.stderr.startswith(f"Error: --data @flowers.jsonl line 3 {says}"), _failed(done)
    assert len(done.stderr.splitlines()) == 1, _failed(done)
