"""``mlfn spark-score``: a file scored by an endpoint on Spark (docs/spark.md)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import click

from runtime.cli.app_folder import settings
from runtime.cli.output import plural, told

_FORMATS = click.Choice(["parquet", "json", "csv"])


@click.command("spark-score")
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
    help="Send the app to the executors as a zip (the files mlfn pack takes, less data); "
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
    zips: list[Path] = []

    def pack(leave_out: Sequence[Path]) -> Path:
        zips.append(app_zip(app_dir, leave_out))
        return zips[-1]

    with told(), _removed(zips):
        require_pyspark()
        settings(app_dir)  # local.settings.json Values: the local workers inherit them
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
            pack=pack,
            ship=ship_app,
        )
    click.echo(
        f"scored {plural(summary.rows, 'row')} ({plural(summary.errors, 'error')}) into {target} "
        f"in {summary.seconds:.1f}s"
    )


@contextlib.contextmanager
def _removed(zips: list[Path]) -> Iterator[None]:
    """The zips made for the job, and their folders, removed once it is over (Spark served
    them to the executors while it ran)."""
    try:
        yield
    finally:
        for archive in zips:
            shutil.rmtree(archive.parent, ignore_errors=True)


def app_zip(app_dir: Path, leave_out: Sequence[Path] = ()) -> Path:
    """The app as publish would upload it, zipped in one pass for Spark to ship (a fresh name:
    files Spark ships are kept by name for the job), less the files under ``leave_out`` (the
    job's INPUT and OUTPUT) and the data ``mlfn check`` finds (said on stderr, in one line)."""
    import tempfile
    import uuid

    from runtime.deploy import data_check
    from runtime.deploy.check import data_files
    from runtime.deploy.files import package, write_zip

    whole = package(app_dir)
    root = whole.root
    inside = [p.resolve() for p in leave_out if p.resolve().is_relative_to(root)]
    job = [p.relative_to(root).as_posix() for p in inside if p != root]

    def the_job_s(relative: str) -> bool:
        return any(relative == j or relative.startswith(f"{j}/") for j in job)

    files = [f for f in whole.files if not the_job_s(f)]
    data = data_files(replace(whole, files=tuple(files)))
    if data:
        shown = [u if u in data else f"{u}/" for u, _ in data_check.units(data, files)]
        click.echo(
            f"spark-score: left out of the app zip as data (mlfn check's rule): "
            f"{', '.join(shown)} (docs/spark.md)",
            err=True,
        )
    kept = replace(whole, files=tuple(f for f in files if f not in data))
    out = Path(tempfile.mkdtemp(prefix="mlfn-spark-")) / f"mlfn-app-{uuid.uuid4().hex[:12]}.zip"
    return write_zip(kept, out)
