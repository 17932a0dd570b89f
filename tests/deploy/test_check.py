"""``mlfn check`` finds what fails on Azure before a publish does; where the Functions worker's
own indexer (azure-functions-runtime, on Python 3.13) decides, the two agree."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runtime.deploy import example_model
from runtime.deploy.check import check
from tests.support import ROOT, WORKER_PROBE, WORKER_PYTHON, declared_functions, needs_worker

HOST_JSON = {
    "version": "2.0",
    "extensionBundle": {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    },
}
FUNCIGNORE = ".git*\n.venv\nlocal.settings.json\ntests\n__pycache__\n.azurite\n"
PLAIN = """
import azure.functions as func

app = func.FunctionApp()


@app.route(route="hello", auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello")


@app.queue_trigger(arg_name="msg", queue_name="jobs", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="jobs-out", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage, out: func.Out[str]) -> None:
    out.set(msg.get_body().decode())
"""


@dataclass
class Case:
    """A broken app: what it changes in the plain app, the finding mlfn check must report, and
    what the worker's indexer does with it (True: refuses; False: loads; None: not its job)."""

    finding: str
    worker_refuses: bool | None
    app: str = PLAIN
    files: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    host_json: dict[str, object] | None = None
    requirements: str = "azure-functions\n"
    funcignore: str | None = FUNCIGNORE
    extra: Callable[[Path], None] | None = None


def _write(app_dir: Path, case: Case) -> Path:
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "function_app.py").write_text(case.app)
    (app_dir / "host.json").write_text(json.dumps(case.host_json or HOST_JSON))
    (app_dir / "requirements.txt").write_text(case.requirements)
    if case.funcignore is not None:
        (app_dir / ".funcignore").write_text(case.funcignore)
    values = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    values.update(case.settings)
    (app_dir / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": values})
    )
    for name, text in case.files.items():
        (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (app_dir / name).write_text(text)
    if case.extra:
        case.extra(app_dir)
    return app_dir


def _replace(old: str, new: str) -> str:
    assert old in PLAIN
    return PLAIN.replace(old, new)


CASES: dict[str, Case] = {
    "no_function_app": Case(
        "Could not find top level function app", True, app="import azure.functions as func\n"
    ),
    "two_function_apps": Case("More than one", True, app=PLAIN + "\nsecond = func.FunctionApp()\n"),
    "duplicate_function_names": Case(
        "unique function name",
        True,
        app=PLAIN + '\n\n@app.function_name("hello")\n@app.route(route="again")\n'
        "def again(req: func.HttpRequest) -> func.HttpResponse:\n"
        '    return func.HttpResponse("again")\n',
    ),
    "no_trigger": Case(
        "trigger",
        True,
        app=PLAIN + '\n\n@app.function_name("orphan")\n'
        '@app.queue_output(arg_name="out", queue_name="q-out", connection="AzureWebJobsStorage")\n'
        "def orphan(out: func.Out[str]) -> None:\n"
        "    pass\n",
    ),
    "parameter_without_binding": Case(
        "have no binding",
        True,
        app=_replace("def work(msg: func.QueueMessage,", "def work(message: func.QueueMessage,"),
    ),
    "output_not_out": Case(
        "must be annotated func.Out", True, app=_replace("out: func.Out[str]", "out: str")
    ),
    "input_annotated_out": Case(
        "annotated func.Out",
        True,
        app=_replace("msg: func.QueueMessage", "msg: func.Out[str]"),
    ),
    "wrong_trigger_type": Case(
        "cannot be a HttpRequest",
        True,
        app=_replace("msg: func.QueueMessage", "msg: func.HttpRequest"),
    ),
    "context_not_context": Case(
        "context must be annotated func.Context",
        True,
        app=_replace(
            "def hello(req: func.HttpRequest)", "def hello(req: func.HttpRequest, context: int)"
        ),
    ),
    # The worker loads this one, then fails every invocation that returns a value
    # (handle_event: "without a $return binding returned a non-None value").
    "return_without_return_binding": Case(
        "has no $return",
        False,
        app=_replace("out: func.Out[str]) -> None:", "out: func.Out[str]) -> str:"),
    ),
    # The worker checks str and bytes returns against the binding's converter too.
    "http_route_returning_bytes": Case(
        "return annotation bytes does not match its http binding",
        True,
        app=_replace(
            "def hello(req: func.HttpRequest) -> func.HttpResponse:",
            "def hello(req: func.HttpRequest) -> bytes:",
        ),
    ),
    # A binding type azure.functions has no converter for takes str and bytes only.
    "generic_output_of_a_dict": Case(
        "binding extra of type madeUpBinding cannot be a dict",
        True,
        app=PLAIN + '\n\n@app.function_name("made_up")\n'
        '@app.queue_trigger(arg_name="msg", queue_name="more", connection="AzureWebJobsStorage")\n'
        '@app.generic_output_binding(arg_name="extra", type="madeUpBinding")\n'
        "def made_up(msg: func.QueueMessage, extra: func.Out[dict]) -> None:\n"
        "    pass\n",
    ),
    "invalid_queue_name": Case(
        "queue name 'jobs_queue' is invalid",
        False,
        app=_replace('queue_name="jobs",', 'queue_name="Jobs_Queue",'),
    ),
    "unresolved_binding_expression": Case(
        "names app settings that are not set",
        False,
        app=_replace('queue_name="jobs",', 'queue_name="%JOBS%",'),
    ),
    "connection_without_setting": Case(
        "connection 'OtherStorage': no setting provides it",
        False,
        app=_replace(
            'queue_name="jobs", connection="AzureWebJobsStorage"',
            'queue_name="jobs", connection="OtherStorage"',
        ),
    ),
    "heavy_import": Case(
        "function_app.py:1: importing the app loads numpy",
        None,
        app="import numpy\n" + PLAIN,
        requirements="azure-functions\nnumpy\n",
    ),
    # The line that imports it, in the module that does (an endpoint's, a helper's).
    "heavy_import_in_a_module": Case(
        "helpers/maths.py:2: importing the app loads numpy",
        None,
        app="import helpers.maths  # noqa: F401\n" + PLAIN,
        files={"helpers/__init__.py": "", "helpers/maths.py": "import json\nimport numpy\n"},
        requirements="azure-functions\nnumpy\n",
    ),
    "host_json_version": Case('"version" must be "2.0"', None, host_json={"version": "1.0"}),
    "no_extension_bundle": Case('needs "extensionBundle"', None, host_json={"version": "2.0"}),
    "queue_batch_size": Case(
        "batchSize=64 is outside 1..32",
        None,
        host_json={**HOST_JSON, "extensions": {"queues": {"batchSize": 64}}},
    ),
    "function_timeout_format": Case(
        "functionTimeout '10 minutes'",
        None,
        host_json={**HOST_JSON, "functionTimeout": "10 minutes"},
    ),
    "requirement_missing": Case(
        "does not name pyyaml (function_app.py imports yaml)",
        None,
        app="import yaml  # noqa\n" + PLAIN,
    ),
    "worker_in_requirements": Case(
        "remove 'azure-functions-worker'",
        None,
        requirements="azure-functions\nazure-functions-worker\n",
    ),
    "no_funcignore": Case(".funcignore: is missing", None, funcignore=None),
    "tests_published": Case(
        "tests/ (tests) would be published",
        None,
        funcignore=".venv\n",
        files={"tests/test_app.py": "pass\n"},
    ),
    "virtualenv_of_any_name": Case(
        "env/ (a virtual environment) would be published",
        None,
        files={
            "env/pyvenv.cfg": "home = /usr/bin\n",
            "env/lib/python3.11/site-packages/tornado/web.py": "import tornado.ioloop\n",
        },
    ),
    "unknown_setting": Case(
        "MLFN_MAX_BATCH is not an mlfn setting", None, settings={"MLFN_MAX_BATCH": "8"}
    ),
    "requirements_missing": Case(
        "requirements.txt: is missing", None, extra=lambda d: (d / "requirements.txt").unlink()
    ),
}


def _mlfn_app(app_dir: Path, model: str, sha256: str | None = None) -> Path:
    """An mlfn app with one endpoint whose model reference is ``model``."""
    _write(
        app_dir,
        Case(
            "",
            None,
            app=(ROOT / "function_app.py").read_text(),
            requirements="--find-links ./wheels\nmlfn\n",
        ),
    )
    (app_dir / "functions").mkdir()
    (app_dir / "functions" / "__init__.py").write_text("")
    (app_dir / "functions" / "linear").mkdir()
    (app_dir / "functions" / "linear" / "__init__.py").write_text("")
    pin = f", sha256={sha256!r}" if sha256 else ""
    (app_dir / "functions" / "linear" / "endpoint.py").write_text(
        "from pydantic import BaseModel\n"
        "from runtime import Endpoint, Model\n\n"
        "class In(BaseModel):\n    x: list[float]\n\n"
        "class Out(BaseModel):\n    y: float\n\n"
        f"endpoint = Endpoint(In, Out, model=Model({model!r}{pin}))\n\n"
        "@endpoint.predict\n"
        "def predict(rows: list[In], model: object) -> list[Out]:\n"
        "    return []\n"
    )
    return app_dir


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_broken_app_gets_its_finding(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    report = check(_write(tmp_path / "app", case), env={})
    assert not report.ok
    assert any(case.finding in str(f) for f in report.findings), [str(f) for f in report.findings]
    # One cause, one line: nothing inside a published venv is read as the app's own imports.
    assert not [f for f in report.findings if "site-packages" in str(f)]


def test_the_plain_app_and_the_repository_pass(tmp_path: Path, isolated_imports: None) -> None:
    plain = check(_write(tmp_path / "app", Case("", False)), env={})
    assert plain.ok, [str(f) for f in plain.findings]
    assert plain.functions == ["hello", "work"]
    repository = check(ROOT, env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert repository.ok, [str(f) for f in repository.findings]
    assert set(repository.functions) == declared_functions(ROOT)
    assert len(repository.functions) == len(set(repository.functions))  # each named once


def test_model_files_must_exist_be_published_and_match_their_pin(tmp_path: Path) -> None:
    missing = check(_mlfn_app(tmp_path / "missing", "./models/nothing.onnx"), env={})
    assert any("models/nothing.onnx does not exist" in str(f) for f in missing.findings)

    ignored = _mlfn_app(tmp_path / "ignored", "./models/linear.onnx")
    (ignored / "models").mkdir()
    (ignored / "models" / "linear.onnx").write_bytes(example_model.build())
    (ignored / ".funcignore").write_text(FUNCIGNORE + "models\n")
    assert any("not in the published package" in str(f) for f in check(ignored, env={}).findings)

    digest = hashlib.sha256(example_model.build()).hexdigest()
    for pin, ok in ((digest, True), ("0" * 64, False)):
        app = _mlfn_app(tmp_path / f"pinned{ok}", "./models/linear.onnx", sha256=pin)
        (app / "models").mkdir()
        (app / "models" / "linear.onnx").write_bytes(example_model.build())
        report = check(app, env={})
        assert report.ok is ok, [str(f) for f in report.findings]
        if not ok:
            assert "does not have the pinned sha256" in str(report.findings)

    outside = tmp_path / "elsewhere" / "linear.onnx"
    outside.parent.mkdir()
    outside.write_bytes(example_model.build())
    for reference in (str(outside), outside.as_uri()):  # a bare path as mlfn new writes it
        far = check(_mlfn_app(tmp_path / f"far{len(reference)}", reference), env={})
        assert any("is not in the published package" in str(f) for f in far.findings), reference
    gone = check(_mlfn_app(tmp_path / "gone", str(tmp_path / "gone.onnx")), env={})
    assert any("gone.onnx does not exist" in str(f) for f in gone.findings)

    store = check(_mlfn_app(tmp_path / "store", "linear.onnx"), env={})
    assert any("MLFN_MODEL_STORE" in str(f) for f in store.findings)


def test_list_files_is_what_publish_would_upload(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from runtime.cli import main

    app = _write(tmp_path / "app", Case("", False, files={"tests/t.py": "", "lib/util.py": ""}))
    (app / ".venv").mkdir()
    (app / ".venv" / "pyvenv.cfg").write_text("")
    (app / ".git").mkdir()
    (app / ".git" / "HEAD").write_text("")
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "x.pyc").write_text("")
    done = CliRunner().invoke(main, ["check", str(app), "--list-files"])
    assert done.exit_code == 0, done.output
    listed = [line for line in done.stdout.splitlines() if line]
    assert listed == ["function_app.py", "host.json", "lib/util.py", "requirements.txt"]


# --- the oracle: the worker's own indexer on Python 3.13 ---------------------------------------


def _worker_refuses(app_dir: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [str(WORKER_PYTHON), str(WORKER_PROBE), str(app_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=app_dir,
    )
    return done.returncode != 0, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


@needs_worker
@pytest.mark.parametrize(
    "name", sorted(n for n, c in CASES.items() if c.worker_refuses is not None)
)
def test_mlfn_check_agrees_with_the_workers_indexer(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    app = _write(tmp_path / "app", case)
    refused, why = _worker_refuses(app)
    assert refused is case.worker_refuses, why
    findings = [str(f) for f in check(app, env={}).findings]
    if case.worker_refuses:
        # What the worker refuses, mlfn check refuses as an indexing finding.
        assert any(f.startswith(("function_app.py:", "function ")) for f in findings), findings


@needs_worker
def test_the_worker_loads_what_mlfn_check_passes(tmp_path: Path) -> None:
    app = _write(tmp_path / "app", Case("", False))
    assert _worker_refuses(app) == (False, "")
    assert check(app, env={}).ok
    shutil.rmtree(app)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.worker_refuses))
def test_the_local_host_refuses_what_the_worker_refuses(tmp_path: Path, name: str) -> None:
    app = _write(tmp_path / "app", CASES[name])
    code = "import sys; from pathlib import Path; from runtime.host.metadata import index_app; index_app(Path(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(app)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode != 0
    assert "IndexingError" in done.stderr, done.stderr


def test_funcignore_is_read_as_core_tools_reads_it_not_as_git(tmp_path: Path) -> None:
    from runtime.deploy.files import FuncIgnore, package

    rules = FuncIgnore("# comment\n/dist\n__pycache__\n*.pyc\n!keep*\nlogs/**/*.txt\n")
    # Prefixes from the root, to a word boundary: "dist" takes dist.txt, not distance.py;
    # "__pycache__" only the root's.
    assert rules.ignores("dist/app.whl") and rules.ignores("dist.txt")
    assert not rules.ignores("distance.py")
    assert rules.ignores("__pycache__/a.pyc") and not rules.ignores("functions/__pycache__/a.pyc")
    assert rules.ignores("a.pyc") and not rules.ignores("functions/a.pyc")
    assert not rules.ignores("keep.pyc")  # a "!" line wins, wherever it stands
    assert rules.ignores("logs/2026/11/run.txt") and not rules.ignores("logs/run.txt")

    app = _write(tmp_path / "app", Case("", False, funcignore="dist\n__pycache__\n"))
    for name in (
        "dist.txt",
        "distance.py",
        "functions/__pycache__/x.pyc",
        "sub/.git/HEAD",
        "sub/Local.Settings.json",
    ):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("")
    files = package(app).files
    assert "dist.txt" not in files and "distance.py" in files
    assert "functions/__pycache__/x.pyc" in files
    assert not any(f.startswith("sub/") for f in files)  # .git anywhere; settings in any case


def test_a_module_the_package_leaves_out_fails_indexing_as_on_azure(tmp_path: Path) -> None:
    app = _write(
        tmp_path / "app",
        Case("", False, app="from helpers import greeting\n" + PLAIN, funcignore="helpers\n"),
    )
    (app / "helpers.py").write_text("greeting = 'hi'\n")
    report = check(app, env={})
    assert any("No module named 'helpers'" in str(f) for f in report.findings), report.findings
    (app / ".funcignore").write_text("tests/\n")
    assert check(app, env={}).ok


def test_an_import_failure_names_the_file_and_line_as_mlfn_serve_does(tmp_path: Path) -> None:
    # The probe runs in its own interpreter, on links to the package's files: the line is the
    # app's own, found through them (runtime.host.metadata.import_failure words it).
    app = _write(tmp_path / "app", Case("", False, app="import helpers\n" + PLAIN))
    (app / "helpers.py").write_text('"""Helpers."""\n\nimport not_a_module_xyz\n')
    report = check(app, env={})
    assert [str(f) for f in report.findings] == [
        "function_app.py: importing function_app.py failed: helpers.py, line 3: "
        "ModuleNotFoundError: No module named 'not_a_module_xyz'"
    ]


def test_a_link_to_nothing_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    app = _write(tmp_path / "app", Case("", False))
    (app / "gone.onnx").symlink_to(tmp_path / "nowhere.onnx")
    report = check(app, env={})
    assert any("gone.onnx: is a link to nothing" in str(f) for f in report.findings)


def test_what_the_host_accepts_is_not_flagged(tmp_path: Path) -> None:
    # Queue names are lowercased by the extension; identity properties are case-insensitive;
    # other extensions have their own identity properties.
    app = PLAIN.replace('queue_name="jobs",', 'queue_name="Jobs",').replace(
        'queue_name="jobs-out", connection="AzureWebJobsStorage"',
        'queue_name="jobs-out", connection="Other"',
    )
    app += (
        '\n\n@app.service_bus_queue_trigger(arg_name="msg", queue_name="orders", connection="SB")\n'
        "def orders(msg: func.ServiceBusMessage) -> None:\n"
        "    pass\n"
    )
    settings = {
        "Other__accountname": "someaccount",
        "SB__fullyQualifiedNamespace": "ns.servicebus.windows.net",
    }
    report = check(_write(tmp_path / "app", Case("", False, app=app, settings=settings)), env={})
    assert [str(f) for f in report.findings if "connection" in str(f) or "queue" in str(f)] == []


def test_requirements_are_read_as_pip_reads_them(tmp_path: Path) -> None:
    app = PLAIN + "\nimport yaml  # noqa\n"
    hashed = "azure-functions\npyyaml==6.0.2 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    report = check(
        _write(tmp_path / "hashed", Case("", False, app=app, requirements=hashed)), env={}
    )
    assert report.ok, [str(f) for f in report.findings]

    included = _write(tmp_path / "included", Case("", False, app=app, requirements="-r base.txt\n"))
    (included / "base.txt").write_text("azure-functions\npyyaml\n")
    assert check(included, env={}).ok

    utf16 = _write(tmp_path / "utf16", Case("", False, app=app))
    (utf16 / "requirements.txt").write_bytes("azure-functions\npyyaml\n".encode("utf-16"))
    assert check(utf16, env={}).ok


def test_optional_and_unknown_imports_are_not_findings(tmp_path: Path) -> None:
    app = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import yaml\n"
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n"
        "import not_installed_anywhere_here  # noqa\n" + PLAIN
    )
    report = check(_write(tmp_path / "app", Case("", False, app=app)), env={})
    assert [f for f in report.findings if "does not name" in str(f)] == []
    assert any("not_installed_anywhere_here" in note for note in report.notes)


def test_a_pinned_digest_is_checked_against_the_store_where_it_is_reachable(
    tmp_path: Path, azurite: Any, models_in_blob: str, example_models: dict[str, Path]
) -> None:
    digest = hashlib.sha256(example_models["iris"].read_bytes()).hexdigest()
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "MLFN_MODEL_STORE": f"az://{models_in_blob}",
    }
    right = check(_mlfn_app(tmp_path / "right", "iris.onnx", sha256=digest), env=env)
    assert right.ok, [str(f) for f in right.findings]
    wrong = check(_mlfn_app(tmp_path / "wrong", "iris.onnx", sha256="1" * 64), env=env)
    assert [str(f) for f in wrong.findings] == [
        "endpoint linear: the model at iris.onnx does not have the pinned sha256"
    ]
    offline = check(
        _mlfn_app(tmp_path / "offline", "iris.onnx", sha256="1" * 64), env=env, fetch=False
    )
    assert offline.ok
    nobody = {
        **env,
        "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=eA==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        "MLFN_STORE_RETRIES": "0",
    }
    unreachable = check(_mlfn_app(tmp_path / "unreachable", "iris.onnx", sha256=digest), env=nobody)
    assert unreachable.ok  # not a finding: said as a note
    assert any("pinned digest not checked" in note for note in unreachable.notes)
