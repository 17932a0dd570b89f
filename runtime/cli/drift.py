"""``mlfn drift``: an endpoint's logged records of a recent window against a reference set, a
table ordered by drift, an HTML report, and an exit status for CI or a timer (docs/drift.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from runtime.cli.app_folder import connection_option, settings
from runtime.cli.output import plural
from runtime.config import STORAGE_SETTING, Settings

if TYPE_CHECKING:
    from runtime.drift.compare import Drift

EXIT_DRIFTED = 1  # a field's PSI above --threshold
EXIT_UNUSABLE = 2  # the check could not run: click's own usage errors exit 2 too
LOG_SETTING = Settings.variable("payload_log")


@click.command()
@click.argument("name")
@click.option(
    "--reference",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The reference set (training data): Parquet or CSV, columns named like the input "
    "fields (and, optionally, the prediction fields).",
)
@click.option(
    "--logs",
    metavar="ROOT",
    default=None,
    help=f"The payload log: a folder, or az://CONTAINER/PREFIX in the app's storage account. "
    f"Default: {LOG_SETTING}.",
)
@click.option(
    "--since",
    metavar="DURATION",
    default="24h",
    show_default=True,
    help="The window: 30m, 24h, 7d (s, m, h, d).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    default=0.2,
    show_default=True,
    help="Exit 1 when a field's PSI is above this.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the HTML report [drift-NAME.html].",
)
@connection_option(STORAGE_SETTING, " of an az:// ROOT")
def drift(
    name: str,
    reference: Path,
    logs: str | None,
    since: str,
    threshold: float,
    report_path: Path | None,
    connection: str | None,
) -> None:
    """Compare endpoint NAME's recent requests and predictions, as its payload log recorded
    them, with a reference set: the population stability index (PSI) of each field, a table
    ordered by drift, and an HTML report with a chart per field.

    \b
    Exit status:
      0  every field's PSI at or below --threshold
      1  a field above it (named)
      2  the check could not run: a usage error, no records in the window, a reference or
         a log that cannot be read
    """
    import importlib.util

    missing = [m for m in ("pyarrow", "numpy") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(
            f"mlfn drift needs {' and '.join(missing)}, which is not installed: "
            "pip install 'mlfn[payload-log]'"
        )
    from runtime.drift import compare, records
    from runtime.drift import reference as references

    try:
        span = records.duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise click.BadParameter(f"{name!r} is not an endpoint's name", param_hint="NAME")
    with _unusable():
        found = settings(Path.cwd(), {STORAGE_SETTING: connection} if connection else None)
    root_uri = logs or found.payload_log
    if not root_uri:
        raise click.UsageError(
            f"where are {name}'s records? Give --logs ROOT (az://payload-log is where an "
            f"endpoint's log goes by default) or set {LOG_SETTING}"
        )
    window = records.Window.last(span)
    with _unusable():
        ref = references.read(reference)
        root = records.root_of(root_uri, found)
        try:
            result = compare.measure(name, ref, root, window)
        finally:
            root.close()
    for skipped in result.skipped:
        click.echo(f"Warning: skipped {skipped}", err=True)
    if result.files == 0:
        _fail(f"no records of {name} under {root} in the last {since}")
    if result.ok == 0:
        _fail(f"none of the {result.records:,} records of {name} in the last {since} succeeded "
              "(status 200): nothing to compare")  # fmt: skip
    click.echo(_table(result))
    target = report_path or Path(f"drift-{name}.html")
    from runtime.drift import report

    target.write_text(report.html(result, threshold, str(reference)), encoding="utf-8")
    click.echo(
        f"\n{result.ok:,} successful records of {result.records:,} in "
        f"{plural(result.files, 'file')} of the last {since}; report: {target}"
    )
    above = result.above(threshold)
    if above:
        named = ", ".join(f"{f.name} ({f.psi:.3f})" for f in above)
        click.echo(f"Error: drift above {threshold:g} in {named}", err=True)
        sys.exit(EXIT_DRIFTED)


def _table(result: Drift) -> str:
    heads = ("field", "side", "kind", "PSI", "reference n", "recent n", "note")
    rows = [
        (
            f.name,
            f.role or "-",
            f.kind,
            "-" if f.psi is None else f"{f.psi:.3f}",
            f"{f.reference_n:,}",
            f"{f.recent_n:,}",
            f.note,
        )
        for f in result.fields
    ]
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads) - 1)]
    right = {3, 4, 5}  # numbers

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return "\n".join(line(r) for r in [heads, *rows])


@contextmanager
def _unusable() -> Iterator[None]:
    """What stops the check as one line and exit status 2: a reference or log that cannot be
    read, a storage account that cannot be reached or lacks the container, a bad setting."""
    from runtime.errors import HostError, MlfnError, NotFound

    try:
        yield
    except MlfnError as exc:
        _fail(exc.message)
    except HostError as exc:
        _fail(str(exc))
    except NotFound as exc:
        _fail(f"{exc} does not exist")
    except OSError as exc:
        if exc.filename is None:
            raise
        _fail(f"{exc.filename}: {exc.strerror or exc}")


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_UNUSABLE)
