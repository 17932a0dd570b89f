"""The ``mlfn`` command line."""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runtime.config import STORAGE_SETTING, HostSettings, Settings
from runtime.config.client import ClientSettings, app_url
from runtime.config.client import read as client_settings
from runtime.errors import ConfigError, HostError, MlfnError

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from runtime.config import Connection
    from runtime.host.metadata import FunctionInfo
    from runtime.storage.queues import EndpointQueues
    from runtime.store.base import Progress


def _settings(app_dir: Path, overrides: Mapping[str, str] | None = None) -> Settings:
    """The app folder's settings: local.settings.json Values under the environment's, both
    under ``overrides`` (a command's options)."""
    from runtime.host.local_settings import apply_local_settings

    apply_local_settings(app_dir)
    return Settings.from_mapping({**os.environ, **(overrides or {})})


_TRIGGER_CONNECTION = f"the trigger's connection setting ({STORAGE_SETTING})"


def _connection_option(setting: str, applies: str = "") -> Callable[[F], F]:
    """``--connection``: the storage account of a command that talks to storage, standing in
    for ``setting``, which is otherwise read as ``mlfn serve`` reads it."""
    return click.option(
        "--connection",
        default=None,
        metavar="STRING",
        help=f"Storage connection string{applies}. Default: {setting} from the environment "
        f"(make serve prints export {STORAGE_SETTING}=... when its Azurite is on other ports), "
        "else from local.settings.json Values, as mlfn serve reads it.",
    )


def _read_data(data: str) -> bytes:
    """``--data``: the text itself, or ``@FILE``'s bytes."""
    if not data.startswith("@"):
        return data.encode()
    try:
        return Path(data[1:]).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"--data {data}: {exc.strerror or exc}") from None


def _index(app_dir: Path) -> dict[str, FunctionInfo]:
    """The app's functions by name (an app that fails to import is one line: _told)."""
    from runtime.host.metadata import index_app

    return {f.name: f for f in index_app(app_dir)}


@contextmanager
def _told() -> Iterator[None]:
    """Errors a person can act on, as one line at the prompt rather than a traceback."""
    try:
        yield
    except HostError as exc:
        raise click.ClickException(str(exc)) from None
    except MlfnError as exc:
        raise click.ClickException(exc.message) from None


class _Commands(click.Group):
    """mlfn's commands; a file one of them cannot read or write is one line naming it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.filename is None:  # not about a file a person named: a bug, with its trace
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror or exc}") from None


@click.group(cls=_Commands)
@click.version_option(package_name="mlfn")
def main() -> None:
    """mlfn: ONNX models and predict functions as Azure Functions endpoints."""
    from runtime import redact

    # The client commands log storage URLs and connection errors too (a SAS among them).
    redact.install_in_logging()


@main.command()
@click.option("--port", default=7071, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--no-queues", is_flag=True, help="Serve HTTP only; do not run queue or blob triggers."
)
def serve(port: int, host: str, no_queues: bool) -> None:
    """Serve the Functions app in the current folder on a local host."""
    from runtime.host.serve import serve as run

    with _told():
        run(Path.cwd(), host=host, port=port, queues=not no_queues)


@main.command()
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
    with _told(), _progress_bar(f"fetching {source.rsplit('/', 1)[-1]}") as progress:
        made = render_endpoint(
            name, source, app_dir, _settings(app_dir), template, labels=names, progress=progress
        )
    click.echo(f"created {made.path.relative_to(app_dir)}")
    for note in made.notes:
        click.echo(note)
    click.echo("next (a running mlfn serve reads the app at start: restart it):")
    for command in made.next_commands():
        click.echo(f"  {command}")
    if "://" not in source and not (app_dir / source).resolve().is_relative_to(app_dir.resolve()):
        click.echo(
            "note: the model file is outside the app folder, so a publish will not carry it: "
            "copy it into the app (say models/) and reference ./models/..., or upload it "
            "(mlfn upload) and reference that URI"
        )


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("uri")
@_connection_option(
    f"{Settings.variable('store_connection')}, else {STORAGE_SETTING},", " (az:// URIs)"
)
def upload(file: Path, uri: str, connection: str | None) -> None:
    """Upload a model FILE to URI (az://, s3://, a blob URL or a path) and print its sha256."""
    from runtime.digest import sha256_file
    from runtime.store import locate, resolve_uri

    app_dir = Path.cwd()
    digest = sha256_file(file)
    total = file.stat().st_size
    store = Settings.variable("store_connection")
    with _told():
        settings = _settings(app_dir, {store: connection} if connection else None)
        target = locate(resolve_uri(uri, settings, app_dir), settings)
        with _progress_bar(f"uploading {file.name}") as progress:
            if target.local_path() is not None:
                target.upload(file)  # type: ignore[attr-defined]
            else:
                target.upload(file, on_progress=progress, sha256=digest)  # type: ignore[attr-defined]
    click.echo(f"uploaded {file} ({total} bytes) to {target.uri}")
    click.echo(f"sha256 {digest}")
    click.echo(f'pin it: Model("{uri}", sha256="{digest}")')


@main.command()
@click.argument("name")
@click.option("--data", required=True, help='JSON body, or @FILE: {"instances": [...]}.')
@click.option(
    "--url",
    default=None,
    help=f"The app's base URL. Default: {ClientSettings.variable('url')} from the environment "
    f"(make serve prints it when it serves elsewhere), else {ClientSettings().url}.",
)
@click.option(
    "--key",
    default=None,
    envvar=HostSettings.variable("function_key"),
    help="Function key, if needed.",
)
def invoke(name: str, data: str, url: str | None, key: str | None) -> None:
    """POST a predict request to endpoint NAME and print the response. Exits 1 when the app
    answers with an error (its body on stderr) or cannot be reached."""
    body = _read_data(data)
    with _told():
        base = app_url("--url", url) if url else client_settings().url
    request = urllib.request.Request(
        f"{base}/api/{name}/predict",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **({"x-functions-key": key} if key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        click.echo(_pretty(payload), err=True)
        raise SystemExit(1) from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {base}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # reset, timed out, hung up mid-answer
        raise click.ClickException(
            f"{base} did not answer: {exc or type(exc).__name__}; is the app running (mlfn serve)?"
        ) from None
    click.echo(_pretty(payload))


def _endpoint_queues(name: str, connection: str | None) -> EndpointQueues:
    """The queues of endpoint NAME of the app in the current folder, as the app declares them;
    on the account ``connection`` names, else the one its trigger's setting does."""
    from runtime.host.queue_options import QueueOptions
    from runtime.host_json import HostConfig
    from runtime.protocol.jobs import endpoint_of_queue_function, queue_function_name
    from runtime.storage.queues import EndpointQueues

    app_dir = Path.cwd()
    with _told():
        _settings(app_dir)  # local.settings.json Values: the app's own code may read them
        functions = _index(app_dir)
        info = functions.get(queue_function_name(name))
        if info is None:
            known = sorted(filter(None, map(endpoint_of_queue_function, functions)))
            raise click.ClickException(f"no queue-triggered endpoint {name!r}; known: {known}")
        results = next(b for b in info.outputs if b.type == "queue").raw["queueName"]
        setting = info.trigger.connection
        conn, settings = _storage_account(app_dir, setting, connection)
        encoding = QueueOptions.from_host(HostConfig.load(app_dir, os.environ)).message_encoding
    return EndpointQueues(
        conn, info.trigger.raw["queueName"], results, encoding, setting=setting, settings=settings
    )


def _storage_account(
    app_dir: Path, setting: str, connection: str | None
) -> tuple[Connection, Settings]:
    """The account app setting ``setting`` names (or ``--connection``, standing in for it) and
    the settings read with it."""
    from runtime.storage import clients

    overrides = {setting: connection} if connection else {}
    settings = _settings(app_dir, overrides)
    try:
        return clients.connection(setting, {**os.environ, **overrides}), settings
    except ConfigError as exc:
        raise click.ClickException(
            f"{exc.message} (the environment, local.settings.json Values, or --connection)"
        ) from None


@main.command()
@click.argument("name")
@click.option(
    "--data", required=True, help='JSON {"instances": [...]} or a list, or @FILE (.json, .jsonl).'
)
@click.option("--id", "job_id", default=None, help="The request's id (default: a new uuid).")
@click.option(
    "--traceparent",
    default=None,
    help="W3C trace parent the job's scoring continues (default: a new trace).",
)
@_connection_option(_TRIGGER_CONNECTION)
def enqueue(
    name: str, data: str, job_id: str | None, traceparent: str | None, connection: str | None
) -> None:
    """Send a scoring request to endpoint NAME's request queue."""
    from runtime.protocol import json_input
    from runtime.protocol.jobs import check_job_id
    from runtime.telemetry import trace_context

    try:
        text = _read_data(data).decode()
    except UnicodeDecodeError:
        raise click.ClickException(
            f"--data {data}: is not UTF-8 text (JSON or JSON Lines)"
        ) from None
    # What the endpoint would refuse (NaN, a bad id) is refused here, before it is queued.
    with _told():
        if job_id is not None:
            check_job_id(job_id)
        if traceparent is not None and trace_context.parse(traceparent) is None:
            raise click.ClickException(
                f"--traceparent {traceparent!r} is not a W3C trace parent (00-<32 hex>-<16 hex>-01)"
            )
        if data.startswith("@") and data.endswith(".jsonl"):
            lines = [line for line in text.splitlines() if line.strip()]
            instances = [json_input.loads(line, "a line of --data") for line in lines]
        else:
            doc = json_input.loads(text, "--data")
            instances = doc["instances"] if isinstance(doc, dict) and "instances" in doc else doc
    if not isinstance(instances, list):
        raise click.ClickException('--data must be {"instances": [...]} or a list of instances')
    queues = _endpoint_queues(name, connection)
    with _told(), _storage("the request queue"):
        sent = queues.send(name, instances, job_id, traceparent)
    via = f" (instances in blob {sent.instances_blob})" if sent.instances_blob else ""
    parent = trace_context.parse(sent.traceparent)
    trace = f", trace {parent.trace_id}" if parent else ""
    click.echo(f"queued {sent.id} on {sent.queue}{via}{trace}")


_FORMATS = click.Choice(["parquet", "json", "csv"])


@main.command("spark-score")
@click.argument("name")
@click.argument("source", metavar="INPUT")
@click.argument("target", metavar="OUTPUT")
@click.option(
    "--master",
    default=None,
    help="Spark master; default: spark-submit's when run by it, else local[*].",
)
@click.option("--format", "source_format", type=_FORMATS, help="INPUT's; default by extension.")
@click.option("--output-format", "target_format", type=_FORMATS, help="Default by extension.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per predict call.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option(
    "--ship-app/--no-ship-app",
    default=None,
    help="Send the app to the executors as a zip (the files mlfn pack takes); "
    "default: when the master is not local.",
)
def spark_score(
    name: str,
    source: str,
    target: str,
    master: str | None,
    source_format: str | None,
    target_format: str | None,
    batch_size: int | None,
    overwrite: bool,
    ship_app: bool | None,
) -> None:
    """Score INPUT with endpoint NAME on Spark into OUTPUT (docs/spark.md)."""
    from runtime.spark import require_pyspark
    from runtime.spark.files import run

    app_dir = Path.cwd()
    with _told():
        require_pyspark()
        _settings(app_dir)  # local.settings.json Values: the local workers inherit them
        summary = run(
            name,
            source,
            target,
            app_dir=app_dir,
            master=master,
            source_format=source_format,
            target_format=target_format,
            batch_size=batch_size,
            overwrite=overwrite,
            pack=lambda: _app_zip(app_dir),
            ship=ship_app,
        )
    click.echo(
        f"scored {plural(summary.rows, 'row')} ({plural(summary.errors, 'error')}) into {target} "
        f"in {summary.seconds:.1f}s"
    )


def _app_zip(app_dir: Path) -> Path:
    """The app as publish would upload it, zipped for Spark to ship (a fresh name: files Spark
    ships are kept by name for the job)."""
    import tempfile
    import uuid

    from runtime.deploy.files import package, write_zip

    out = Path(tempfile.mkdtemp(prefix="mlfn-spark-")) / f"mlfn-app-{uuid.uuid4().hex[:12]}.zip"
    return write_zip(package(app_dir), out)


@main.command()
@click.argument("name")
@click.option(
    "--wait", "wait_s", type=float, default=0.0, help="Seconds to wait for a first result."
)
@click.option("--keep", is_flag=True, help="Leave the messages on the queue.")
@_connection_option(_TRIGGER_CONNECTION)
def results(name: str, wait_s: float, keep: bool, connection: str | None) -> None:
    """Print (and remove) the result messages of endpoint NAME, one JSON document a line."""
    queues = _endpoint_queues(name, connection)
    with _told(), _storage("the result queue"):
        for doc in queues.receive(wait_s=wait_s, delete=not keep):
            click.echo(json.dumps(doc))


WAIT_S = 600.0
EXIT_ROWS_FAILED = 3  # the file was scored, but rows failed (all, or any with --fail-on-errors)


class _OptionalWaitCommand(click.Command):
    """A command whose ``--wait`` takes a number when one follows it, else its default: so
    ``--wait FILE`` and ``FILE --wait`` both leave FILE a file (click's optional values
    would take FILE as the number)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _optional_number(args, "--wait", WAIT_S))


def _optional_number(args: list[str], option: str, default: float) -> list[str]:
    """``args`` with a bare ``option`` (no number after it) given ``default`` as its value."""
    given: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return given + args[i:]
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg == option and not _is_number(following):
            arg = f"{option}={default:g}"
        given.append(arg)
    return given


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@main.command(cls=_OptionalWaitCommand)
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--path", "blob_path", default=None, help="Path in the batch container [FILE's name]."
)
@click.option("--wait", "wait_s", type=float, default=WAIT_S, metavar="[SECONDS]",
              help=f"Seconds to wait for the results [{WAIT_S:g}]; 0 to only upload. A number "
              f"right after --wait is its value; --wait alone (before FILE too) means {WAIT_S:g}"
              " (a FILE named like a number: write ./5).")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save the results [FILE.results.EXT beside FILE].")  # fmt: skip
@click.option(
    "--fail-on-errors", is_flag=True, help=f"Exit {EXIT_ROWS_FAILED} when any row failed."
)
@_connection_option(_TRIGGER_CONNECTION)
def batch(
    name: str,
    file: Path,
    blob_path: str | None,
    wait_s: float,
    out: Path | None,
    fail_on_errors: bool,
    connection: str | None,
) -> None:
    """Score FILE (JSON Lines, CSV, Parquet) through endpoint NAME's blob trigger: upload it to
    the batch container, wait for its results, download them.

    \b
    Exit status:
      0  every row scored (or, with --wait 0, the file uploaded)
      1  an error: nothing was scored, or no results in time
      2  a usage error
      3  rows failed: every row, or any with --fail-on-errors
    """
    from runtime.protocol import batch as contract

    container, results, conn, settings = _batch_containers(name, connection)
    path = blob_path or file.name
    with _told():
        contract.format_of(path)  # refused here, not after the upload
    target = out or file.with_name(f"{file.stem}.results{file.suffix}")
    if wait_s > 0:
        _check_writable(target)  # before the upload and the wait, not after
    from runtime.storage import clients

    with _told(), _storage(f"container {container}"):
        source = clients.blob(conn, container, path, settings)
        with _progress_bar(f"uploading {file.name}") as progress, file.open("rb") as f:
            made = source.upload_blob(
                f,
                overwrite=True,
                length=file.stat().st_size,
                progress_hook=lambda done, total: progress(done, total or done),
            )
    etag = str(made["etag"])
    click.echo(f"uploaded {file} to {container}/{path} (ETag {etag})")
    if wait_s <= 0:
        click.echo(f"results will be in {results}/{contract.result_path(path, etag)}")
        return
    summary_blob = clients.blob(conn, results, contract.summary_path(path, etag), settings)
    with _told(), _storage(f"container {results}"):
        doc = _await_summary(summary_blob, path, wait_s)
    if doc is None:
        raise click.ClickException(
            f"no results after {wait_s:g}s: is the app running (mlfn serve), with its blob "
            f"trigger? They will be in {results}/{contract.result_path(path, etag)}"
        )
    if doc.get("error"):
        raise click.ClickException(f"{path} was not scored: {doc['error']['message']}")
    with _told(), _storage(f"container {results}"):
        output = clients.blob(conn, results, doc["output"], settings)
        downloader = output.download_blob()
        with _progress_bar(f"downloading {target.name}") as progress, target.open("wb") as f:
            done = 0
            for chunk in downloader.chunks():
                f.write(chunk)
                done += len(chunk)
                progress(done, downloader.size)
    rows, errors = int(doc["rows"]), int(doc["errors"])
    click.echo(
        f"{plural(rows, 'row')}, {plural(errors, 'error')}, {doc['seconds']} s; results in {target}"
    )
    if errors:
        _tell_errors(target, contract.format_of(doc["output"]), errors)
    if errors and (errors == rows or fail_on_errors):
        every = "every row" if errors == rows else plural(errors, "row")
        click.echo(f"Error: {every} of {file.name} failed", err=True)
        raise SystemExit(EXIT_ROWS_FAILED)


def _check_writable(target: Path) -> None:
    """Refuse an --out the results could not be saved to, before anything is uploaded."""
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise click.ClickException(f"{target}: folder {folder} does not exist")
    if target.is_dir():
        raise click.ClickException(f"{target}: is a folder; name a file with --out")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise click.ClickException(f"{target}: cannot be written (permission denied)")


def _await_summary(blob: Any, path: str, wait_s: float) -> dict[str, Any] | None:
    """The summary the app writes when it has scored ``path``, or None after ``wait_s``;
    saying on stderr that it waits, and how long it has (redrawn on a terminal)."""
    import time

    from azure.core.exceptions import ResourceNotFoundError

    started = time.monotonic()
    terminal = sys.stderr.isatty()
    said = -1.0
    try:
        while True:
            try:
                doc: dict[str, Any] = json.loads(blob.download_blob().readall())
                return doc
            except ResourceNotFoundError:
                pass  # not scored yet
            waited = time.monotonic() - started
            if waited > wait_s:
                return None
            # On a terminal, one line redrawn each second; in a log, a line every 30 s.
            if said < 0 or waited - said >= (1 if terminal else 30):
                line = f"waiting for the app to score {path} ({waited:.0f}s)"
                click.echo(f"\r{line}" if terminal else line, err=True, nl=not terminal)
                said = waited
            time.sleep(0.5)
    finally:
        if terminal and said >= 0:
            click.echo(err=True)


def _tell_errors(target: Path, fmt: Any, errors: int, most: int = 3) -> None:
    """The most frequent error messages of the failed rows, with counts, and where the rest
    are."""
    from runtime.protocol.batch_errors import tally

    with _told():
        found = tally(target, fmt, most)
    for message, count in found.top:
        click.echo(f"  {plural(count, 'row')}: {message}", err=True)
    if found.others:
        click.echo(f"  {plural(found.others, 'row')}: other errors", err=True)
    where = 'an "error" object' if fmt == "jsonl" else "a filled error column"
    failed = (
        "the row that failed carries" if errors == 1 else f"the {errors} rows that failed carry"
    )
    click.echo(f"{failed} {where} in {target}", err=True)


def plural(count: int, noun: str) -> str:
    """``1 row``, ``2 rows``: a count and its noun, agreeing."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _batch_containers(name: str, connection: str | None) -> tuple[str, str, Connection, Settings]:
    """Endpoint NAME's batch and results containers, its storage account and settings."""
    from runtime.host.metadata import registered_app
    from runtime.protocol.batch import batch_function_name

    app_dir = Path.cwd()
    with _told():
        _settings(app_dir)  # local.settings.json Values: the app's own code may read them
        functions = _index(app_dir)
        info = functions.get(batch_function_name(name))
        if info is None:
            known = sorted(n.removesuffix("_batch") for n in functions if n.endswith("_batch"))
            raise click.ClickException(f"no endpoint {name!r} with batch files; known: {known}")
        bound = registered_app().services.endpoints[name]
        conn, settings = _storage_account(app_dir, info.trigger.connection, connection)
    return bound.batch_container, bound.results_container, conn, settings


@contextmanager
def _storage(what: str) -> Iterator[None]:
    """Storage SDK errors as mlfn's (StoreUnavailable names what was being reached)."""
    from runtime.storage.clients import NotFound, storage_errors

    try:
        with storage_errors(what):
            yield
    except NotFound as exc:
        raise click.ClickException(f"{exc} does not exist") from None


@contextmanager
def _progress_bar(label: str) -> Iterator[Progress]:
    """A progress callback (done, total) drawing a bar on stderr once a transfer starts."""
    bar: Any = None
    shown = [0]

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown[0])
        shown[0] = done

    try:
        yield progress
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _pretty(payload: bytes) -> str:
    try:
        return json.dumps(json.loads(payload), indent=2)
    except ValueError:
        return payload.decode(errors="replace")


def _add_deploy_commands() -> None:
    from runtime.deploy import commands

    for command in (commands.init, commands.check, commands.pack, commands.publish, commands.kube):
        main.add_command(command)


_add_deploy_commands()


def _add_convert_command() -> None:
    from runtime.convert.command import convert

    main.add_command(convert)


_add_convert_command()
