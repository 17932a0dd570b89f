"""What leaves the app folder: ``mlfn pack`` (and so ``spark-score --ship-app``), ``mlfn check``
and the image context ``mlfn kube`` describes never take a secret or a file from outside the
folder, read ``.funcignore`` as Core Tools does, and say what they leave out."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import main
from runtime.deploy.check import check
from runtime.deploy.files import FuncIgnore, package, write_zip
from runtime.deploy.kube import dockerignore
from runtime.errors import DeployError
from tests.deploy.test_commands import app  # noqa: F401  (fixture: an app from mlfn init)

SECRETS = {
    ".env.production": "AZURE_KEY=s3cret\n",
    "local.settings.prod.json": '{"Values": {"AzureWebJobsStorage": "AccountKey=s3cret"}}',
    "local.settings.json.bak": "{}",
    ".azure/msal_token_cache.json": "{}",
    "deploy_key.pem": "-----BEGIN PRIVATE KEY-----\n",
    "functions/example/.env": "KEY=s3cret\n",
    "id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    "tls.key": "key",
    "certs/site.pfx": "pfx",
}
AZURITE_DB = ("__azurite_db_blob__.json", "__azurite_db_queue_extent__.json")


def _pack(app_dir: Path) -> tuple[int, str, list[str]]:
    done = CliRunner().invoke(main, ["pack", str(app_dir)])
    zip_path = app_dir / "build" / "package.zip"
    names = zipfile.ZipFile(zip_path).namelist() if zip_path.is_file() else []
    return done.exit_code, done.output, names


def _write(app_dir: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (app_dir / name).write_text(text)


# --- links --------------------------------------------------------------------------------------


def test_a_link_out_of_the_app_is_refused_by_pack_and_found_by_check(
    app: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    outside = tmp_path / "passwd"
    outside.write_text("root:x:0:0\n")
    (app / "functions" / "example" / "labels.txt").symlink_to(outside)

    code, output, names = _pack(app)
    assert code == 1 and not names
    (line,) = [x for x in output.splitlines() if x]
    assert "functions/example/labels.txt is a link to" in line and "outside the app" in line

    report = check(app, env={})
    assert [f.where for f in report.findings] == ["functions/example/labels.txt"]
    # spark-score --ship-app zips with the same function.
    with pytest.raises(DeployError, match="outside the app folder"):
        write_zip(package(app), tmp_path / "ship.zip")

    # A folder link out of the app is refused alike; one inside it is said, not dropped unsaid.
    (app / "functions" / "example" / "labels.txt").unlink()
    (app / "shared").symlink_to(tmp_path, target_is_directory=True)
    assert check(app, env={}).findings[0].where == "shared"
    (app / "shared").unlink()
    (app / "alias").symlink_to(app / "functions", target_is_directory=True)
    report = check(app, env={})
    assert report.ok, [str(f) for f in report.findings]
    assert any(n.startswith("alias is a link to the folder functions") for n in report.notes)
    code, output, names = _pack(app)
    assert code == 0 and "alias links to the folder functions" in output
    assert not any(n.startswith("alias/") for n in names)


# --- secrets ------------------------------------------------------------------------------------


def test_secret_looking_files_are_never_packed_whatever_funcignore_says(app: Path) -> None:  # noqa: F811
    _write(app, SECRETS)
    # A "!" line lets one back in as Core Tools reads the file; mlfn packs it even so never.
    with (app / ".funcignore").open("a") as f:
        f.write("!deploy_key.pem\n")

    code, output, names = _pack(app)
    assert code == 0, output
    assert not [n for n in names if any(n == s or n.startswith(s) for s in SECRETS)], names
    assert "left out, as they look like secrets" in output and "deploy_key.pem" in output
    assert "functions/example/endpoint.py" in names

    # Core Tools' publish does not know the list: check fails until .funcignore leaves them out
    # (mlfn init's leaves out .env* and local.settings* at the root).
    report = check(app, env={})
    found = {f.where: f.message for f in report.findings}
    expected = {
        ".azure",
        "deploy_key.pem",
        "functions/example/.env",
        "id_rsa",
        "tls.key",
        "certs/site.pfx",
    }
    assert set(found) == expected, found
    assert "func azure functionapp publish would upload it" in found["deploy_key.pem"]
    lines = [re.search(r"add `([^`]+)` to \.funcignore", m)[1] for m in found.values()]  # type: ignore[index]
    text = (app / ".funcignore").read_text().replace("!deploy_key.pem\n", "")
    (app / ".funcignore").write_text(text + "\n".join(lines) + "\n")
    after = check(app, env={})
    assert after.ok, [str(f) for f in after.findings]


# --- .funcignore as Core Tools reads it ---------------------------------------------------------


def test_funcignore_stops_at_a_word_boundary_as_core_tools_does() -> None:
    # Core Tools' own GitIgnoreParserTests, on its GitIgnoreParser (a port of gitignore-parser).
    rules = FuncIgnore(
        "/node_modules\n*.log\n/nonexistent\n!/nonexistent/foo\n/foo/*.wat\n/test1\ntest2\n"
        "/othernonexistent/**/what\n!/othernonexistent/**/what/foo\n*.swp\n"
    )
    for denied in ("test.swp", "node_modules/wat.js", "foo/bar.wat", "othernonexistent/b/what"):
        assert rules.ignores(denied), denied
    for denied in ("nonexistent", "nonexistent/bar", "test1", "test2"):
        assert rules.ignores(denied), denied
    for accepted in ("test/index.js", "wat/test/index.js", "test1File.wat", "nonexistent/foo/w"):
        assert not rules.ignores(accepted), accepted
    assert not rules.ignores("othernonexistent/blah/adsasd/whatads")
    # What that means for lines an app writes.
    assert not FuncIgnore("__azurite_db_\n").ignores("__azurite_db_blob__.json")
    assert FuncIgnore("__azurite_db_*\n").ignores("__azurite_db_blob__.json")
    assert not FuncIgnore("node_modules/\n").ignores("node_modules/@azure/core/index.js")
    assert FuncIgnore("node_modules\n").ignores("node_modules/@azure/core/index.js")


# --- the image context ----------------------------------------------------------------------------


def _docker_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker compiles it (moby/patternmatcher, Linux)."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def docker_context(app_dir: Path, text: str) -> set[str]:
    """The files Docker sends as the build context under this .dockerignore: the last pattern
    that matches a path or one of its parent folders decides."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        rules.append((keep, _docker_regex(line.removeprefix("!").strip("/"))))
    sent = set()
    for path in app_dir.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            continue
        relative = path.relative_to(app_dir).as_posix()
        parts = relative.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for keep, regex in rules:
            if any(regex.match(c) for c in candidates):
                excluded = not keep
        if not excluded:
            sent.add(relative)
    return sent


def test_the_image_context_is_what_pack_takes_without_azurite_data_or_secrets(app: Path) -> None:  # noqa: F811
    _write(app, SECRETS)
    _write(app, {name: "{}" for name in AZURITE_DB})
    _write(app, {"dist.txt": "", "distance.py": "", "__azurite_db_notes.md": ""})
    with (app / ".funcignore").open("a") as f:
        f.write("dist\n")
    context = docker_context(app, dockerignore(app))
    assert context == set(package(app).files)
    assert "distance.py" in context and "dist.txt" not in context  # Core Tools' prefixes
    assert not [c for c in context if c.startswith("__azurite_db_")]
    assert not [c for c in context if any(c == s or c.startswith(s) for s in SECRETS)]
    assert "local.settings.json" not in context


def test_check_says_what_the_scaffold_leaves_out_of_azurite_data(app: Path) -> None:  # noqa: F811
    _write(app, {name: "{}" for name in AZURITE_DB})
    report = check(app, env={})
    assert report.ok, [str(f) for f in report.findings]
    (app / ".funcignore").write_text(
        (app / ".funcignore").read_text().replace("__azurite_db_*", "__azurite_db_")
    )
    # Core Tools reads "__azurite_db_" up to a word boundary: it leaves out none of them.
    found = [str(f) for f in check(app, env={}).findings]
    assert any("__azurite_db_blob__.json (Azurite data) would be published" in f for f in found)


# --- data in the app folder -----------------------------------------------------------------------


def test_check_finds_data_files_that_would_be_shipped_and_says_the_line_to_add(app: Path) -> None:  # noqa: F811
    _write(app, {"model.joblib": "pickle", "samples/a.npy": "", "samples/b.npy": ""})
    _write(app, {"scored/_SUCCESS": "", "scored/part-00000-1a2b.csv": "a,b\n"})
    _write(app, {"scores.results.csv": "y\n1\n", "functions/example/labels.csv": "cat\ndog\n"})
    for name, size in (("rows.csv", 2 << 20), ("blob.bin", 11 << 20)):
        with (app / name).open("wb") as sparse:
            sparse.truncate(size)
    with (app / "models" / "example.onnx").open("ab") as model:  # the endpoint's: never data
        model.truncate(12 << 20)

    report = check(app, env={})
    found = {f.where: f.message for f in report.findings}
    assert set(found) == {
        "model.joblib",
        "samples",
        "scored",
        "scores.results.csv",
        "rows.csv",
        "blob.bin",
    }, found
    assert "is a joblib pickle" in found["model.joblib"]
    assert "2 files" in found["samples"] and "a.npy, b.npy" in found["samples"]
    assert "spark-score output" in found["scored"]
    assert "spark-score --ship-app would carry" in found["blob.bin"]
    lines = [re.search(r"add `([^`]+)` to \.funcignore", m)[1] for m in found.values()]  # type: ignore[index]
    with (app / ".funcignore").open("a") as f:
        f.write("\n".join(lines) + "\n")
    after = check(app, env={})
    assert after.ok, [str(f) for f in after.findings]
    assert "functions/example/labels.csv" in package(app).files  # a small table is the app's


# --- what the commands say ------------------------------------------------------------------------


def test_publish_dry_run_says_func_is_missing_beside_the_command(
    app: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    dry = CliRunner().invoke(main, ["publish", "myapp", "--dry-run", "--directory", str(app)])
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.strip() == "func azure functionapp publish myapp --python"
    assert "`func` (Azure Functions Core Tools) is not on PATH" in dry.stderr
    assert "functions-run-local" in dry.stderr


def test_pack_help_says_the_zip_needs_a_remote_build() -> None:
    text = " ".join(CliRunner().invoke(main, ["pack", "--help"]).output.split())
    assert "--build-remote true" in text and "installs requirements.txt" in text
    # The zip holds no dependencies: --no-build would upload an app that cannot import them.
    assert "cannot run as it is (`publish --no-build`" in text
