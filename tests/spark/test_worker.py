"""What each Spark Python worker keeps: the app's services, once per process (no Spark here)."""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from tests.spark.spark_support import IRIS
from tests.support import ROOT, make_app


def test_a_worker_builds_an_apps_services_once_and_keeps_them(
    tmp_path: Path, isolated_imports: None
) -> None:
    from runtime.spark.worker import services_for

    app = str(make_app(tmp_path / "app", {"spark_iris": IRIS}))
    assert services_for(app) is services_for(app)
    assert sorted(services_for(app).endpoints) == ["spark_iris"]


def test_another_apps_functions_package_is_set_aside_and_put_back(
    tmp_path: Path, isolated_imports: None
) -> None:
    sys.path.insert(0, str(ROOT))  # isolated_imports puts sys.path back
    import functions  # the repository's app, as a notebook or an earlier task left it
    from runtime.spark.worker import discover_app

    app = make_app(tmp_path / "other", {"spark_iris": IRIS})
    assert [b.name for b in discover_app(app)] == ["spark_iris"]
    assert sys.modules["functions"] is functions
    assert Path(functions.__file__ or "").parent == ROOT / "functions"
    assert "functions.spark_iris" not in sys.modules


def test_an_edited_app_is_built_again_and_a_relative_path_is_the_same_app(
    tmp_path: Path, isolated_imports: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.spark.worker import fingerprint, services_for

    app = make_app(tmp_path / "app", {"spark_iris": IRIS})
    monkeypatch.chdir(tmp_path)
    first = services_for(str(app), fingerprint(app))
    assert services_for("app", fingerprint(app)) is first

    endpoint = app / "functions" / "spark_iris" / "endpoint.py"
    endpoint.write_text(endpoint.read_text() + "\nEDITED = True\n")
    again = services_for(str(app), fingerprint(app))
    assert again is not first
    predict = again.rows.endpoint("spark_iris").endpoint.predict_fn
    assert predict is not None and predict.__globals__.get("EDITED") is True


def test_maps_at_any_depth_reach_the_input_model_as_dicts_whatever_the_pyarrow() -> None:
    import pyarrow as pa

    from runtime.spark.worker import _dicts, _python

    kind = pa.list_(pa.struct([("m", pa.map_(pa.string(), pa.map_(pa.string(), pa.int64())))]))
    column = pa.array([[{"m": [("a", [("x", 1)])]}], None, [{"m": None}]], type=kind)
    want = [[{"m": {"a": {"x": 1}}}], None, [{"m": None}]]
    assert _python(column) == want
    as_dicts = _dicts(kind)  # the walk for a pyarrow without maps_as_pydicts
    assert as_dicts is not None and [as_dicts(v) for v in column.to_pylist()] == want


def _zipped(app: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(app.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(app))
    return archive


def test_a_zipped_app_is_unpacked_once_into_a_private_folder(
    tmp_path: Path, isolated_imports: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.spark.worker import app_root

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    archive = _zipped(make_app(tmp_path / "app", {"spark_iris": IRIS}), tmp_path / "app.zip")
    root = app_root(str(archive))
    assert (root / "functions" / "spark_iris" / "endpoint.py").read_text() == IRIS
    assert root.stat().st_mode & 0o777 == 0o700
    assert app_root(str(archive)) == root
    assert [p.name for p in tmp.iterdir()] == [root.name]  # nothing half-unpacked left beside it


@pytest.mark.parametrize("planted", ["another user's folder", "a folder open to all", "a link"])
def test_an_app_planted_where_the_zip_unpacks_is_refused_and_never_run(
    tmp_path: Path, isolated_imports: None, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    # The folder's name comes from the zip's digest, and mlfn pack's zips are reproducible:
    # anyone on an executor's machine can put an app there before the job's first task.
    from runtime.digest import sha256_file
    from runtime.errors import DiscoveryError
    from runtime.spark.worker import services_for

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    archive = _zipped(make_app(tmp_path / "app", {"spark_iris": IRIS}), tmp_path / "app.zip")
    marker = tmp_path / "ran"
    leaves_a_mark = IRIS + f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    theirs = make_app(tmp_path / "theirs", {"spark_iris": leaves_a_mark})
    target = tmp / f"mlfn-app-{sha256_file(archive)[:16]}"
    if planted == "a link":
        target.symlink_to(theirs, target_is_directory=True)
        reason = "it is a symbolic link"
    elif planted == "a folder open to all":
        theirs.rename(target)
        target.chmod(0o777)
        reason = "others may write to it"
    else:
        if os.getuid() != 0:
            pytest.skip("handing a folder to another user needs root")
        theirs.rename(target)
        os.chown(target, 4242, 4242)
        reason = "it belongs to uid 4242"

    with pytest.raises(DiscoveryError, match=f"refusing the unpacked app at .*: {reason}"):
        services_for(str(archive))
    assert not marker.exists()


WORDS = """
from pydantic import BaseModel

from runtime import Columns, Endpoint, OnnxModel


class Text(BaseModel):
    text: str


class Echo(BaseModel):
    echo: str


endpoint = Endpoint(Text, Echo, model={model!r})


@endpoint.{decorator}
def predict(given, model: OnnxModel):
    if {columnar}:
        return {{"echo": model.run({{"text": given["text"]}})["echo"]}}
    out = model.run({{"text": [r.text for r in given]}})["echo"]
    return [Echo(echo=str(e)) for e in out]
"""


@pytest.mark.parametrize("columnar", [False, True], ids=["rows", "columns"])
def test_a_string_that_is_not_utf8_fails_its_row_alone(
    tmp_path: Path, isolated_imports: None, columnar: bool
) -> None:
    """Spark does not check what a writer stored as a string (``CAST(unhex('FFFE') AS
    STRING)``): such a value failed the whole task; now its row, naming the column."""
    import numpy as np
    import pyarrow as pa

    from runtime.spark.worker import Plan, score_batches
    from tests.models.onnx_builders import strings

    model = strings(tmp_path / "strings.onnx")
    code = WORDS.format(
        model=str(model), columnar=columnar,
        decorator="predict_columns" if columnar else "predict",
    )  # fmt: skip
    app = make_app(tmp_path / "app", {"words": code})
    texts = [b"a", b"\xff\xfe", b"c"]
    offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.int32)
    column = pa.Array.from_buffers(
        pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(texts))]
    )
    batch = pa.RecordBatch.from_arrays([column], names=["text"])
    plan = Plan(
        app_dir=str(app), name="words", inputs=((0, "text", False),),
        outputs=(pa.field("echo", pa.string()),), error=pa.field("error", pa.string()),
    )  # fmt: skip
    (scored,) = score_batches(iter([batch]), plan)
    assert scored.column("echo").to_pylist() == ["a", None, "c"]
    errors = scored.column("error").to_pylist()
    assert errors[0] is None and errors[2] is None
    assert "column 'text' cannot be read: UnicodeDecodeError" in errors[1]
