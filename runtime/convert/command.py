"""``mlfn convert FILE --to OUT.onnx``: the command line over ``to_onnx``."""

from __future__ import annotations

from pathlib import Path

import click

from runtime.convert.api import FRAMEWORKS, ROWS, TOLERANCE


@click.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--to", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the ONNX model.",
)  # fmt: skip
@click.option(
    "--framework", type=click.Choice(sorted(FRAMEWORKS)), default=None,
    help="The framework that wrote FILE (default: from its name or folder layout).",
)  # fmt: skip
@click.option(
    "--sample", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Rows to prove the conversion on, a .npy array [rows, ...], or for a scikit-learn "
    "model fitted on a DataFrame a .csv or .parquet file with its columns; PyTorch needs it "
    "unless a torch.export archive carries example inputs.",
)  # fmt: skip
@click.option(
    "--tolerance", type=float, default=TOLERANCE, show_default=True,
    help="The largest difference accepted between the original's answers and the ONNX model's.",
)  # fmt: skip
@click.option(
    "--rows", type=click.IntRange(1), default=ROWS, show_default=True,
    help="Sample rows to synthesise when --sample is not given.",
)  # fmt: skip
@click.option(
    "--classes", default=None,
    help="Class names in the model's class order, comma-separated, stored in its metadata.",
)  # fmt: skip
def convert(
    file: Path,
    out: Path,
    framework: str | None,
    sample: Path | None,
    tolerance: float,
    rows: int,
    classes: str | None,
) -> None:
    """Convert a scikit-learn, PyTorch, Keras/TensorFlow or Spark ML model in FILE to ONNX,
    once it answers sample rows as the original does (exit 1 and write nothing otherwise)."""
    from runtime.convert.api import to_onnx
    from runtime.convert.files import code_warning, framework_of_file, load
    from runtime.errors import HostError

    try:
        framework = framework or framework_of_file(file)
        warning = code_warning(file, framework)
        if warning is not None:
            click.echo(warning, err=True)
        model = load(file, framework)
        rows_given = _read_sample(sample) if sample else None
        options = {"classes": [c.strip() for c in classes.split(",")]} if classes else {}
        done = to_onnx(
            model, out, rows_given, framework=framework, tolerance=tolerance, rows=rows, **options
        )
    except HostError as exc:
        raise click.ClickException(str(exc)) from None
    made_up = "synthesised " if done.synthesised else ""
    besides = (
        f", and {done.missing_rows} copies of them with the optional columns left out"
        if done.missing_rows
        else ""
    )
    click.echo(
        f"onnx checker: passed; {done.rows} {made_up}sample rows answered by both models{besides}"
    )
    for output in done.constant:
        click.echo(
            f"warning: output {output!r} gave one value for every sample row, so the proof "
            "shows little: pass rows like your data with --sample",
            err=True,
        )
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    for difference in done.differences:
        click.echo(f"  {difference}")
    click.echo(f"largest difference {done.largest_difference:.3g} (tolerance {done.tolerance:g})")
    click.echo(f"wrote {out} ({out.stat().st_size:,} bytes)")
    outputs = {d.output for d in done.differences}
    template = " --template classifier" if {"label", "probabilities"} <= outputs else ""
    click.echo(f"next: mlfn new NAME --model {out}{template}")


def _read_sample(path: Path) -> object:
    from runtime.errors import ConversionError

    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        # Named columns, strings among them: rows for a model fitted on a DataFrame.
        try:
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise ConversionError(
                f"reading {path.name} needs pandas: pip install pandas (or pass a .npy array)"
            ) from None
        try:
            return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        except Exception as exc:  # pandas' readers raise many kinds
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConversionError(f"cannot read {path} as a table: {first}") from None
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {path} as a .npy array: {exc}") from None
