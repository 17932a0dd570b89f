"""What a person types and sees: ``mlfn`` commands run in an app folder, the app served over
HTTP by a local host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from runtime.cli import main
from tests.support import LocalHost


def mlfn(monkeypatch: pytest.MonkeyPatch, folder: Path, *args: str) -> Result:
    """``mlfn ARGS`` typed in ``folder``, run in this process."""
    monkeypatch.chdir(folder)
    return CliRunner().invoke(main, list(args))


def new_endpoint(
    monkeypatch: pytest.MonkeyPatch, app: Path, name: str, model: str, template: str
) -> tuple[Result, str]:
    """``mlfn new NAME --model MODEL --template TEMPLATE`` in ``app``, which must succeed: what
    it printed, and the endpoint it wrote."""
    made = mlfn(monkeypatch, app, "new", name, "--model", model, "--template", template)
    assert made.exit_code == 0, (made.output, made.exc_info)
    return made, (app / "functions" / name / "endpoint.py").read_text()


def served(app: Path, tmp_path: Path, calls: list[tuple[str, Any]]) -> list[httpx.Response]:
    """POST each (NAME, body) to ``/api/NAME/predict`` of the app served by ``mlfn serve``;
    every answer must be 200."""
    server = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp_path / "cache")}, ("--no-queues",)).start()
    try:
        with server.client() as http:
            answers = [http.post(f"/api/{name}/predict", json=body) for name, body in calls]
    finally:
        server.stop()
    for answer in answers:
        assert answer.status_code == 200, answer.text + server.output()
    return answers


def refused(done: Result, message: str) -> None:
    """The command exited 1 with ``message`` on stderr, as a line, not a traceback."""
    assert done.exit_code == 1, (done.output, done.exc_info)
    assert isinstance(done.exception, SystemExit), done.exc_info
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.output
