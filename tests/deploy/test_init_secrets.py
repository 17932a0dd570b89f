"""An app `mlfn init` writes keeps its secrets out of a publish by its own .funcignore."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from runtime.cli import main
from runtime.deploy.check import check


def test_an_inited_app_with_env_files_passes_check(tmp_path: Path) -> None:
    wheel = tmp_path / "mlfn-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    app = tmp_path / "app"
    done = CliRunner().invoke(main, ["init", str(app), "--wheel", str(wheel)])
    assert done.exit_code == 0, done.output
    for name in (".env", ".env.production", ".envrc", "local.settings.prod.json"):
        (app / name).write_text("AccountKey=c2VjcmV0\n")

    report = check(app, env={})

    assert report.ok, [str(f) for f in report.findings]
