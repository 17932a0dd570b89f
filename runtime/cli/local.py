"""The commands of a person building an app on this machine: ``mlfn serve``, ``mlfn new`` and
``mlfn upload``."""

from __future__ import annotations

from pathlib import Path

import click

from runtime.cli.app_folder import connection_option, settings
from runtime.cli.output import progress_bar, told
from runtime.config import STORAGE_SETTING, Settings


@click.command()
@click.option("--port", default=7071, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--no-queues", is_flag=True, help="Serve HTTP only; do not run queue or blob triggers."
)
def serve(port: int, host: str, no_queues: bool) -> None:
    """Serve the Functions app in the current folder on a local host."""
    from runtime.host.serve import serve as run

    with told():
        run(Path.cwd(), host=host, port=port, queues=not no_queues)


@click.command()
@click.argument("name")
@click.option("--model", "source", required=True, help="A local .onnx file or a store URI.")
@click.option(
    "--template",
    type=click.Choice(["tensor", "classifier", "regressor"]),
    default="tensor",
    show_default=True,
    help="tensor: a field per model output; classifier: the class name and a probability per "
    "class; regressor: a float per target.",
)
@click.option(
    "--labels",
    default=None,
    help="Class names in the model's class order, comma-separated (classifier).",
)
def new(name: str, source: str, template: str, labels: str | None) -> None:
    """Create functions/NAME/ from a model's inputs and outputs (never overwrites)."""
    from runtime.scaffold import render_endpoint

    app_dir = Path.cwd()
    if not (app_dir / "function_app.py").is_file():
        raise click.ClickException(
            f"{app_dir} has no function_app.py: run mlfn new in an app folder (mlfn init DIR "
            "makes one)"
        )
    names = [n.strip() for n in labels.split(",")] if labels is not None else None
    with told(), progress_bar(f"fetching {source.rsplit('/', 1)[-1]}") as progress:
        made = render_endpoint(
            name, source, app_dir, settings(app_dir), template, labels=names, progress=progress
        )
    click.echo(f"created {made.path.relative_to(app_dir)}")
    for note in made.notes:
        click.echo(note)
    click.echo("next (a running mlfn serve reads the app at start: restart it):")
    for command in made.next_commands(_app_url()):
        click.echo(f"  {command}")
    if "://" not in source and not (app_dir / source).resolve().is_relative_to(app_dir.resolve()):
        click.echo(
            "note: the model file is outside the app folder, so a publish will not carry it: "
            "copy it into the app (say models/) and reference ./models/..., or upload it "
            "(mlfn upload) and reference that URI"
        )


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("uri")
@connection_option(
    f"{Settings.variable('store_connection')}, else {STORAGE_SETTING},", " (az:// URIs)"
)
def upload(file: Path, uri: str, connection: str | None) -> None:
    """Upload a model FILE to URI (az://, s3://, a blob URL or a path) and print its sha256.
    A URI ending in / keeps the file's name (az://models/ is az://models/FILE's name)."""
    from runtime.digest import sha256_file
    from runtime.model_store import locate, resolve_uri

    app_dir = Path.cwd()
    digest = sha256_file(file)
    total = file.stat().st_size
    store = Settings.variable("store_connection")
    if "://" in uri and uri.endswith("/"):
        uri += file.name
    with told():
        found = settings(app_dir, {store: connection} if connection else None)
        try:
            target = locate(resolve_uri(uri, found, app_dir), found)
        except ValueError as exc:  # a URI no store reads (az://container alone, say)
            raise click.ClickException(str(exc)) from None
        with progress_bar(f"uploading {file.name}") as progress:
            if target.local_path() is not None:
                target.upload(file)  # type: ignore[attr-defined]
            else:
                target.upload(file, on_progress=progress, sha256=digest)  # type: ignore[attr-defined]
    click.echo(f"uploaded {file} ({total} bytes) to {target.uri}")
    click.echo(f"sha256 {digest}")
    click.echo(f'pin it: Model("{uri}", sha256="{digest}")')


def _app_url() -> str:
    """Where the printed commands reach the app: MLFN_URL's, else mlfn serve's default."""
    from runtime.config.client import DEFAULT_URL, read
    from runtime.errors import ConfigError

    try:
        return read().url
    except ConfigError:  # a bad MLFN_URL: the commands that read it say so
        return DEFAULT_URL
