"""``mlfn check`` on data in the package: files a publish, ``mlfn pack`` and ``spark-score
--ship-app`` would carry that an app does not need to run, and that make every deployment and
every Spark job larger (docs/deploy.md lists the rules).

- Formats that hold data or training artefacts, at any size: pickles (joblib too), NumPy arrays,
  Parquet, Arrow/Feather, ORC, Avro, HDF5, TFRecord, framework checkpoints.
- Row files (CSV, TSV, JSON Lines) from 1 MiB: a smaller one is more likely a lookup table the
  app reads.
- ``mlfn spark-score`` and ``mlfn batch`` output: folders with Spark's ``_SUCCESS`` marker or its
  ``part-*`` files, and ``*.results.*`` / ``*.errors.*`` files.
- Any other file over 10 MiB that no endpoint names as its model.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Iterable
from pathlib import PurePosixPath

from runtime.deploy import files
from runtime.deploy.findings import Report

MiB = 1 << 20
LARGE = 10 * MiB
ROWS_LARGE = 1 * MiB
DATA_SUFFIXES = {
    ".joblib": "a joblib pickle",
    ".pkl": "a pickle",
    ".pickle": "a pickle",
    ".npy": "a NumPy array",
    ".npz": "NumPy arrays",
    ".parquet": "Parquet data",
    ".feather": "Feather data",
    ".arrow": "Arrow data",
    ".orc": "ORC data",
    ".avro": "Avro data",
    ".h5": "HDF5 data or a Keras model",
    ".hdf5": "HDF5 data",
    ".tfrecord": "TFRecord data",
    ".tfrecords": "TFRecord data",
    ".pt": "a PyTorch checkpoint",
    ".pth": "a PyTorch checkpoint",
    ".ckpt": "a checkpoint",
    ".safetensors": "model weights",
    ".keras": "a Keras model",
}
ROW_SUFFIXES = {".csv": "CSV rows", ".tsv": "TSV rows", ".jsonl": "JSON Lines rows"}
ROW_SUFFIXES[".ndjson"] = ROW_SUFFIXES[".jsonl"]
_JOB_OUTPUT = re.compile(r".+\.(results|errors)\.[a-z]+", re.IGNORECASE)
_SPARK_PART = re.compile(r"part-\d{5}.*")
SHOWN = 3  # file names a finding lists


def check_data(package: files.Package, models: set[str], report: Report) -> None:
    """A finding for each folder (or lone file) of data in ``package``: ``models`` are the
    files endpoints name, never data."""
    sizes = {f: (package.root / f).stat().st_size for f in package.files}
    flagged = data_files(package, models, sizes)
    for unit, members in units(flagged, package.files):
        kinds = sorted({flagged[f] for f in members})
        total = sum(sizes[f] for f in members)
        if unit in flagged:
            line = files.funcignore_line(unit)
            shown = f"is {kinds[0]} ({total / MiB:.1f} MiB)"
        else:
            line = files.funcignore_line(unit, members)
            names = ", ".join(PurePosixPath(f).name for f in members[:SHOWN])
            more = f" and {len(members) - SHOWN} more" if len(members) > SHOWN else ""
            shown = (
                f"holds {'; '.join(kinds)}: {len(members)} files, {total / MiB:.1f} MiB "
                f"({names}{more})"
            )
        report.add(
            unit,
            f"{shown}, which publish, mlfn pack and spark-score --ship-app would carry: add "
            f"`{line}` to .funcignore",
        )


def data_files(
    package: files.Package, models: set[str], sizes: dict[str, int] | None = None
) -> dict[str, str]:
    """The files of ``package`` that are data by these rules, each with what it is; ``models``
    are the files endpoints name, never data (``sizes``: each file's, when already known)."""
    if sizes is None:
        sizes = {f: (package.root / f).stat().st_size for f in package.files}
    flagged = {f: what for f in package.files if (what := _data(f, sizes[f], models))}
    for folder in _spark_outputs(package.files):
        for f in package.files:
            if f.startswith(f"{folder}/"):
                flagged[f] = "spark-score output"
    return flagged


def _data(relative: str, size: int, models: set[str]) -> str | None:
    if relative in models:
        return None
    name = PurePosixPath(relative).name
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in DATA_SUFFIXES:
        return DATA_SUFFIXES[suffix]
    if _JOB_OUTPUT.fullmatch(name):
        return "mlfn batch output"
    if suffix in ROW_SUFFIXES and size >= ROWS_LARGE:
        return ROW_SUFFIXES[suffix]
    if size > LARGE:
        return "a large file no endpoint names as its model"
    return None


def _spark_outputs(packed: Iterable[str]) -> set[str]:
    """Folders a Spark job wrote: its ``_SUCCESS`` marker or its ``part-NNNNN`` files."""
    found = set()
    for f in packed:
        path = PurePosixPath(f)
        if path.parent != PurePosixPath(".") and (
            path.name == "_SUCCESS" or _SPARK_PART.fullmatch(path.name)
        ):
            found.add(path.parent.as_posix())
    return found


def units(flagged: Collection[str], packed: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Flagged files grouped under the highest folder that holds nothing else (a file alone
    when its folder holds other files too), so that one .funcignore line covers each group."""
    clean: dict[str, bool] = defaultdict(lambda: True)  # folder -> every file in it flagged
    for f in packed:
        for parent in PurePosixPath(f).parents:
            if parent != PurePosixPath(".") and f not in flagged:
                clean[parent.as_posix()] = False
    groups: dict[str, list[str]] = defaultdict(list)
    for f in sorted(flagged):
        unit = f
        for parent in PurePosixPath(f).parents:
            if parent == PurePosixPath(".") or not clean[parent.as_posix()]:
                break
            unit = parent.as_posix()
        groups[unit].append(f)
    return sorted(groups.items())
