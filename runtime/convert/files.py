"""Models saved to disk, as ``mlfn convert FILE`` finds them: which framework wrote the file,
and loading it with that framework's own reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.convert.base import first_line, quiet, require
from runtime.errors import ConversionError

PICKLES = (".joblib", ".pkl", ".pickle")
TORCH = (".pt", ".pth", ".pt2")


def framework_of_file(path: Path) -> str:
    """``sklearn``, ``torch``, ``keras`` or ``sparkml``, from the file's name or folder layout."""
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "keras"
        if (path / "metadata").is_dir() and (path / "stages").is_dir():
            return "sparkml"
        raise ConversionError(
            f"{path} is a folder, but neither a TensorFlow SavedModel (saved_model.pb) nor a Spark "
            "ML pipeline model (metadata/, stages/)"
        )
    if suffix in PICKLES:
        return "sklearn"
    if suffix in TORCH:
        return "torch"
    if suffix in (".keras", ".h5"):
        return "keras"
    raise ConversionError(
        f"cannot tell which framework wrote {path.name}: pass --framework (joblib/pickle files "
        "are scikit-learn, .pt/.pth TorchScript, .pt2 torch.export, .keras Keras)"
    )


def code_warning(path: Path, framework: str) -> str | None:
    """What ``mlfn convert`` says before it touches ``path`` when loading or proving the model
    runs code the file carries (a pickle unpickled; a TorchScript or exported program, a
    TensorFlow graph, a Keras model's layers, Lambda layers' Python included, each run by the
    proof): one sentence, alike for each. None for a Spark ML pipeline, whose stages are
    classes Spark and pyspark already hold, named by the file."""
    suffix = path.suffix.lower()
    if framework == "sklearn":
        done = f"loading {path} unpickles it"
    elif framework == "torch":
        kind = "exported program (torch.export)" if suffix == ".pt2" else "TorchScript program"
        done = f"converting {path} runs its {kind}"
    elif framework == "keras":
        kind = "TensorFlow graph (SavedModel)" if path.is_dir() else "Keras layers"
        done = f"converting {path} runs its {kind}"
    else:
        return None
    return f"warning: {done}, which runs any code the file holds: convert only files you trust"


def load(path: Path, framework: str, spark: Any = None) -> Any:
    """The model object saved at ``path``."""
    if framework == "sklearn":
        joblib = require("joblib", "scikit-learn", "convert-sklearn")
        try:
            return joblib.load(path)
        except Exception as exc:  # unpickling can raise anything the pickled code raises
            raise ConversionError(f"cannot unpickle {path}: {exc}") from None
    if framework == "torch":
        torch = require("torch", "PyTorch", "convert-torch")
        try:
            with quiet():
                if path.suffix.lower() == ".pt2":
                    return torch.export.load(path)
                return torch.jit.load(path, map_location="cpu")
        except Exception as exc:  # torch's readers raise RuntimeError and others
            raise ConversionError(
                f"cannot read {path} as a TorchScript file (torch.jit.save) or a torch.export "
                f"archive (.pt2): {first_line(exc)}; a pickled module "
                "(torch.save) is not taken: save it with torch.export.save or torch.jit.save"
            ) from None
    if framework == "keras":
        tf = require("tensorflow", "Keras/TensorFlow", "convert-keras")
        keras = require("keras", "Keras/TensorFlow", "convert-keras")
        try:
            with quiet("tensorflow"):
                return (
                    tf.saved_model.load(str(path))
                    if path.is_dir()
                    else keras.saving.load_model(path)
                )
        except Exception as exc:  # TensorFlow's and Keras's readers raise many kinds
            raise ConversionError(
                f"cannot read {path} as a Keras model: {first_line(exc)}"
            ) from None
    if framework == "sparkml":
        require("pyspark", "Spark ML", "convert-sparkml")
        from pyspark.ml import PipelineModel

        from runtime.convert.from_sparkml import session

        session()  # PipelineModel.load reads through the active session
        try:
            return PipelineModel.load(str(path))
        except Exception as exc:  # py4j hands back the JVM's exceptions
            raise ConversionError(
                f"cannot read {path} as a Spark ML PipelineModel: {first_line(exc)}"
            ) from None
    raise ConversionError(f"no framework {framework!r}")
