"""``mlfn spark-score``: a file scored by an endpoint on Spark (docs/spark.md)."""

from __future__ import annotations

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
    with told():
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
