"""The deploy side of the ``mlfn`` command: ``init``, ``check``, ``pack`` and ``publish``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runtime.errors import HostError, MlfnError

if TYPE_CHECKING:
    from runtime.deploy.files import Package

CORE_TOOLS_MISSING = (
    "`func` (Azure Functions Core Tools) is not on PATH, so this command would not run: install "
    "it (https://learn.microsoft.com/azure/azure-functions/functions-run-local), or upload a "
    "`mlfn pack` zip with the Azure CLI (docs/deploy.md)"
)
CORE_TOOLS_HELP = (
    "Azure Functions Core Tools (`func`) is not on PATH. Install it "
    "(https://learn.microsoft.com/azure/azure-functions/functions-run-local), then run:"
)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-example", is_flag=True, help="Leave out the example endpoint and its model.")
@click.option(
    "--wheel",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The mlfn wheel the app installs (default: the one this mlfn was installed from).",
)
def init(directory: Path, no_example: bool, wheel: Path | None) -> None:
    """Create a new app in DIRECTORY: host.json, function_app.py, requirements.txt, local
    settings, .funcignore and an example endpoint."""
    from runtime.deploy.init import init_app

    try:
        made = init_app(directory, with_example=not no_example, wheel=wheel)
    except HostError as exc:
        raise click.ClickException(str(exc)) from None
    except MlfnError as exc:
        raise click.ClickException(exc.message) from None
    for note in made.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"Created an mlfn app in {directory}/. Next:")
    click.echo(f"  cd {shlex.quote(str(directory))}")
    click.echo(
        "  mlfn serve          # queue triggers need Azurite: npx azurite --skipApiVersionCheck"
    )
    click.echo("  mlfn new NAME --model path/to/model.onnx")
    click.echo("  mlfn check && mlfn publish YOUR_FUNCTION_APP")


@click.command()
@click.argument(
    "directory", default=".", type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--list-files",
    is_flag=True,
    help="Print the files mlfn pack takes: what publish uploads, less secret-looking files "
    "(named on stderr, as publish would upload them).",
)
@click.option("--offline", is_flag=True, help="Do not fetch remote models to check pinned digests.")
def check(directory: Path, list_files: bool, offline: bool) -> None:
    """Is the app in DIRECTORY ready to publish? Exit 1 with one line per finding."""
    if list_files:
        from runtime.deploy.files import package

        pkg = package(directory)
        for name in pkg.files:
            click.echo(name)
        click.echo(f"{len(pkg.files)} files mlfn pack takes, {pkg.size:,} bytes", err=True)
        if pkg.secrets:
            click.echo(f"note: not listed, {_secrets_note(pkg)}", err=True)
        return
    _check_or_exit(directory, offline)


def _secrets_note(pkg: Package) -> str:
    """The secret-looking files mlfn leaves out, and the .funcignore lines that keep them from
    Core Tools' publish too."""
    from runtime.deploy.files import funcignore_line

    left = ", ".join(f"{name} ({what})" for name, what in pkg.secrets)
    lines = []
    for name, _ in pkg.secrets:
        folder = pkg.root / name
        inside = None
        if folder.is_dir():
            inside = [p.relative_to(pkg.root).as_posix() for p in folder.rglob("*") if p.is_file()]
        lines.append(f"`{funcignore_line(name, inside)}`")
    return (
        f"as they look like secrets: {left}; mlfn pack leaves them out, func azure "
        f"functionapp publish would upload them: add {_and(lines)} to .funcignore"
    )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _check_or_exit(directory: Path, offline: bool = False) -> None:
    from runtime.deploy.check import check as run_check

    report = run_check(directory, fetch=not offline)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if not report.ok:
        for finding in report.findings:
            click.echo(str(finding))
        raise SystemExit(1)
    click.echo(f"ok: {len(report.functions)} functions, ready to publish", err=True)


@click.command()
@click.argument(
    "directory", default=".", type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The zip to write (default: DIRECTORY/build/package.zip, which .funcignore leaves out).",
)
@click.option(
    "--bytecode/--no-bytecode",
    default=True,
    show_default=True,
    help="Ship each Python file's bytecode, compiled by this Python, so an instance that runs "
    "the same Python version does not compile the app at its first start.",
)
def pack(directory: Path, out: Path | None, bytecode: bool) -> None:
    """Zip the app in DIRECTORY: the files `func azure functionapp publish` would upload, less
    secret-looking files, and no dependencies. Deploy it with a remote build, which installs
    requirements.txt on Azure: `az functionapp deployment source config-zip --src ZIP
    --build-remote true` (docs/deploy.md). It cannot run as it is (`publish --no-build`,
    WEBSITE_RUN_FROM_PACKAGE): those need the dependencies in .python_packages.

    Data files (mlfn check's rule: pickles, arrays, row files from 1 MiB, ...) are packed too,
    as publish would upload them, and named on stderr with the .funcignore lines that leave
    them out; pack exits 0 all the same: mlfn check is what fails on them.

    Each Python file's bytecode rides beside it (hash-checked against the source at import:
    never stale), compiled by the Python that runs mlfn pack: run it with the app's Python
    version on Azure, or the first start compiles from source as without it."""
    from runtime.deploy.files import funcignore, package, write_zip

    pkg = package(directory)
    target = out or directory / "build" / "package.zip"
    if target.resolve().is_relative_to(pkg.root):
        # Inside the app, the zip must be something .funcignore leaves out, or the next
        # publish (and pack) would carry it.
        relative = target.resolve().relative_to(pkg.root).as_posix()
        ignore = funcignore(pkg.root)
        if ignore is None or not ignore.ignores(relative):
            raise click.ClickException(
                f"{target} is in the app and .funcignore does not leave it out: the next publish "
                "would upload it; write it elsewhere (--out) or add it to .funcignore"
            )
    try:
        write_zip(pkg, target, bytecode=bytecode)
    except HostError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror or exc}") from None
    if pkg.secrets:
        click.echo(f"note: left out, {_secrets_note(pkg)}", err=True)
    data = _data_note(pkg)
    if data:
        click.echo(f"note: packed data mlfn check fails on: {data}", err=True)
    for link, folder in pkg.linked_folders:
        click.echo(
            f"note: {link} links to the folder {folder}: packed under {folder} only", err=True
        )
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    shipped = f", bytecode for Python {python}" if bytecode else ""
    click.echo(f"{target}: {len(pkg.files)} files{shipped}, {target.stat().st_size:,} bytes")


def _data_note(pkg: Package) -> str | None:
    """The data files in ``pkg`` by mlfn check's rule, grouped as check groups them, and the
    .funcignore lines that leave them out; None when there are none."""
    from runtime.deploy import check as check_app
    from runtime.deploy import data_check
    from runtime.deploy.files import funcignore_line

    sizes = {f: (pkg.root / f).stat().st_size for f in pkg.files}
    data = check_app.data_files(pkg, sizes)
    if not data:
        return None
    shown, lines = [], []
    for unit, members in data_check.units(data, pkg.files):
        kinds = "; ".join(sorted({data[f] for f in members}))
        size = _size(sum(sizes[f] for f in members))
        if unit in data:
            shown.append(f"{unit} ({kinds}, {size})")
            lines.append(f"`{funcignore_line(unit)}`")
        else:
            # Spelled out, not cli.output.plural: the command line imports deploy, not the
            # reverse, so the two rooms do not import each other.
            files = "1 file" if len(members) == 1 else f"{len(members)} files"
            shown.append(f"{unit}/ ({files}: {kinds}, {size})")
            lines.append(f"`{funcignore_line(unit, members)}`")
    return f"{', '.join(shown)}; add {_and(lines)} to .funcignore"


def _size(count: int) -> str:
    if count < 1 << 10:
        return f"{count} bytes"
    if count < 1 << 20:
        return f"{count / (1 << 10):.0f} KiB"
    return f"{count / (1 << 20):.1f} MiB"


@click.command()
@click.argument("app")
@click.option("--dry-run", is_flag=True, help="Check, then print the command without running it.")
@click.option(
    "--directory",
    default=".",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The app folder.",
)
def publish(app: str, dry_run: bool, directory: Path) -> None:
    """Check the app, then publish it to the function app APP with Core Tools."""
    _check_or_exit(directory)
    command = ["func", "azure", "functionapp", "publish", app, "--python"]
    shown = " ".join(shlex.quote(part) for part in command)
    missing = shutil.which("func") is None
    if dry_run:
        click.echo(shown)
        if missing:
            click.echo(f"note: {CORE_TOOLS_MISSING}", err=True)
        return
    if missing:
        click.echo(CORE_TOOLS_HELP, err=True)
        click.echo(f"  cd {shlex.quote(str(directory))} && {shown}")
        raise SystemExit(1)
    raise SystemExit(subprocess.run(command, cwd=directory).returncode)


@click.command()
@click.option("--image", default=None, help="Image to run (default: NAME:latest).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("k8s"),
    show_default=True,
    help="Folder for kubernetes.yaml.",
)
@click.option("--name", default=None, help="Kubernetes name of the app (default: the folder's).")
@click.option(
    "--force", is_flag=True, help="Overwrite a Dockerfile/.dockerignore mlfn did not write."
)
def kube(image: str | None, out_dir: Path, name: str | None, force: bool) -> None:
    """Write a Dockerfile and Kubernetes manifests (a KEDA ScaledObject per queue trigger) for
    the app in the current folder."""
    from runtime.deploy.kube import write_kube
    from runtime.host.local_settings import apply_local_settings

    app_dir = Path.cwd()
    env = dict(os.environ)
    try:
        apply_local_settings(app_dir, env)
        written = write_kube(app_dir, out_dir, image, env=env, name=name, overwrite=force)
    except HostError as exc:
        raise click.ClickException(str(exc)) from None
    except MlfnError as exc:
        raise click.ClickException(exc.message) from None
    for path in written:
        shown = (
            path.resolve().relative_to(app_dir) if path.resolve().is_relative_to(app_dir) else path
        )
        click.echo(f"wrote {shown}")
