"""``mlfn batch``: a file scored through an endpoint's blob trigger, from upload to results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runtime.cli.app_folder import (
    TRIGGER_CONNECTION,
    connection_option,
    index,
    settings,
    storage_account,
)
from runtime.cli.output import plural, progress_bar, storage, told
from runtime.cli.waiting import WAIT_S, OptionalWaitCommand, wait_option

if TYPE_CHECKING:
    from runtime.config import Connection, Settings

EXIT_ROWS_FAILED = 3  # the file was scored, but rows failed (all, or any with --fail-on-errors)


@click.command(cls=OptionalWaitCommand)
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--path", "blob_path", default=None, help="Path in the batch container [FILE's name]."
)
@wait_option(
    "Seconds to wait for the results; 0 to only upload",
    WAIT_S,
    note=" (before FILE too; a FILE named like a number: write ./5)",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save the results [FILE.NAME.results.EXT beside FILE].")  # fmt: skip
@click.option(
    "--fail-on-errors", is_flag=True, help=f"Exit {EXIT_ROWS_FAILED} when any row failed."
)
@connection_option(TRIGGER_CONNECTION)
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

    container, results, conn, found = _batch_containers(name, connection)
    # A gzip file (rows.csv.gz) is stored as what it holds (rows.csv), with the encoding that
    # has it inflated as it is read.
    gzipped = file.suffix.lower() == ".gz"
    inner = Path(file.stem) if gzipped else Path(file.name)
    path = blob_path or inner.name
    with told():
        fmt = contract.format_of(path)  # refused here, not after the upload
    if gzipped and fmt is contract.Format.PARQUET:
        raise click.UsageError(
            f"{file.name}: a Parquet file is read by seeking, which a gzip stream cannot do "
            "(Parquet compresses its own columns): upload it uncompressed"
        )
    # The endpoint in the name: one file scored by two endpoints keeps both results.
    target = out or file.with_name(f"{inner.stem}.{name}.results{inner.suffix}")
    if wait_s > 0:
        _check_writable(target)  # before the upload and the wait, not after
    from runtime.storage import blob_files, clients

    with told(), storage(f"container {container}"):
        source = clients.blob(conn, container, path, found)
        with progress_bar(f"uploading {file.name}") as progress, file.open("rb") as f:
            made = blob_files.upload(
                source,
                f,
                file.stat().st_size,
                lambda done, total: progress(done, total or done),
                content_encoding="gzip" if gzipped else None,
            )
    etag = str(made["etag"])
    click.echo(f"uploaded {file} to {container}/{path} (ETag {etag})")
    if wait_s <= 0:
        click.echo(f"results will be in {results}/{contract.result_path(path, etag)}")
        return
    summary_blob = clients.blob(conn, results, contract.summary_path(path, etag), found)
    with told(), storage(f"container {results}"):
        doc = _await_summary(summary_blob, path, wait_s)
    if doc is None:
        raise click.ClickException(
            f"no results after {wait_s:g}s: is the app running (mlfn serve), with its blob "
            f"trigger? They will be in {results}/{contract.result_path(path, etag)}"
        )
    if doc.get("error"):
        raise click.ClickException(f"{path} was not scored: {doc['error']['message']}")
    with told(), storage(f"container {results}"):
        output = clients.blob(conn, results, doc["output"], found)
        downloader = output.download_blob()
        with progress_bar(f"downloading {target.name}") as progress, target.open("wb") as f:
            done = 0
            for chunk in downloader.chunks():
                f.write(chunk)
                done += len(chunk)
                progress(done, downloader.size)
    rows, errors = int(doc["rows"]), int(doc["errors"])
    click.echo(
        f"{plural(rows, 'row')}, {plural(errors, 'error')}, {doc['seconds']} s; results in {target}"
    )
    absent = doc.get("absent")
    if absent:
        click.echo(
            f"warning: {file.name} has no column for {', '.join(map(str, absent))}: every row "
            "took the default",
            err=True,
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

    from runtime.errors import NotFound
    from runtime.storage.clients import storage_errors

    started = time.monotonic()
    terminal = sys.stderr.isatty()
    said = -1.0
    try:
        while True:
            try:
                with storage_errors(f"container {blob.container_name}"):
                    doc: dict[str, Any] = json.loads(blob.download_blob().readall())
                return doc
            except NotFound:
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

    with told():
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


def _batch_containers(name: str, connection: str | None) -> tuple[str, str, Connection, Settings]:
    """Endpoint NAME's batch and results containers, its storage account and settings."""
    from runtime.host.metadata import registered_app
    from runtime.protocol.batch import batch_function_name

    app_dir = Path.cwd()
    with told():
        settings(app_dir)  # local.settings.json Values: the app's own code may read them
        functions = index(app_dir)
        info = functions.get(batch_function_name(name))
        if info is None:
            known = sorted(n.removesuffix("_batch") for n in functions if n.endswith("_batch"))
            raise click.ClickException(f"no endpoint {name!r} with batch files; known: {known}")
        bound = registered_app().services.endpoints[name]
        conn, found = storage_account(app_dir, info.trigger.connection, connection)
    return bound.batch_container, bound.results_container, conn, found
