"""Models saved to disk, as ``mlfn convert FILE`` finds them: what it warns of before it
loads one."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.convert.files import code_warning, framework_of_file
from tests.convert.steps import mlfn

TAIL = ", which runs any code the file holds: convert only files you trust"


def _saved(tmp_path: Path, name: str) -> Path:
    """A file or folder laid out as the framework saves it (its content is never read here)."""
    path = tmp_path / name
    if name == "savedmodel":
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"")
    elif name == "pipeline":
        (path / "metadata").mkdir(parents=True)
        (path / "stages").mkdir()
    else:
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("name", "told"),
    [
        ("model.joblib", "loading {path} unpickles it"),
        ("model.pkl", "loading {path} unpickles it"),
        ("model.pt", "converting {path} runs its TorchScript program"),
        ("model.pt2", "converting {path} runs its exported program (torch.export)"),
        ("savedmodel", "converting {path} runs its TensorFlow graph (SavedModel)"),
        ("model.keras", "converting {path} runs its Keras layers"),
        ("model.h5", "converting {path} runs its Keras layers"),
    ],
)
def test_every_format_whose_proof_runs_the_file_s_code_is_warned_of_alike(
    tmp_path: Path, name: str, told: str
) -> None:
    path = _saved(tmp_path, name)
    warning = code_warning(path, framework_of_file(path))
    assert warning == "warning: " + told.format(path=path) + TAIL


def test_a_spark_ml_pipeline_names_classes_spark_holds_and_is_not_warned_of(
    tmp_path: Path,
) -> None:
    path = _saved(tmp_path, "pipeline")
    assert framework_of_file(path) == "sparkml" and code_warning(path, "sparkml") is None


def test_mlfn_convert_warns_before_it_loads_a_torchscript_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SavedModel wrote a file (tf.io.write_file) during the proof, a TorchScript program
    # runs too, and only pickles were warned of. The warning comes first, whatever follows:
    # here the file is no TorchScript at all (or torch is not installed).
    (tmp_path / "net.pt").write_bytes(b"not a TorchScript archive")
    done = mlfn(monkeypatch, tmp_path, "convert", "net.pt", "--to", "net.onnx")
    assert done.exit_code == 1
    lines = done.stderr.splitlines()
    assert lines[0] == f"warning: converting net.pt runs its TorchScript program{TAIL}"
    assert lines[-1].startswith("Error: ") and not (tmp_path / "net.onnx").exists()
