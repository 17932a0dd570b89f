"""The loaded model handed to ``predict``: one onnxruntime session and its tensor metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.element_types import BY_ONNX
from runtime.errors import ModelInputRefused
from runtime.models.session import SessionConfig, SessionInfo
from runtime.models.session import create as create_session

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime


def _filled(value: Any, text: str) -> Any:
    """A string input's values with each missing one (None, NaN, pandas' NA: what a predict
    using pandas may hold) as ``text``; a copy where one is missing."""
    import numpy as np

    try:
        array = np.asarray(value, dtype=object)
    except (ValueError, TypeError):
        return value  # ragged rows, say: run refuses them as it does any
    empty = np.frompyfunc(_is_missing, 1, 1)(array).astype(bool)
    if not empty.any():
        return array
    array = array.copy()
    array[empty] = text
    return array


def _refuse_unknown(
    model: str, closed: dict[str, tuple[list[Any], frozenset[Any]]], arrays: dict[str, Any]
) -> None:
    """ModelInputRefused naming the input and the value, for a value of an input with closed
    categories that is not one of them. A missing one (NaN, None) is refused only where no
    imputer takes it: ``known`` then holds neither."""
    for name, (categories, known) in closed.items():
        array = arrays.get(name)
        if array is None:
            continue
        try:
            values = set(array.ravel().tolist())
        except TypeError:  # unhashable values (lists in an object array): the model refuses
            continue
        for value in values - known:
            if value != value and _NAN in known:  # NaN: missing, and the model imputes it
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # an integer category, fed as the model's float
            shown = ", ".join(map(repr, categories[:10]))
            raise ModelInputRefused(
                model,
                f"input {name!r}: {value!r} is not a category the model was fitted on "
                f"({shown}{', ...' if len(categories) > 10 else ''})",
            )


_NAN = object()  # stands for NaN in a set of known values (NaN equals nothing, itself neither)


def _is_missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and value != value)
        or type(value).__name__ == "NAType"  # pandas.NA, without importing pandas
    )


def _refused_input(exc: Exception) -> bool:
    """onnxruntime's own verdict that the inputs do not fit the graph (INVALID_ARGUMENT, or
    FAIL while running a node: e.g. two inputs whose batch sizes disagree)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

    return isinstance(exc, InvalidArgument | Fail)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` uses None for dynamic dimensions; ``element_type``
    is the ONNX name (``float``, ``int64``, ``string``...), or None for non-tensor values
    such as sequences of maps."""

    name: str
    element_type: str | None
    shape: tuple[int | None, ...] | None
    onnx_type: str

    @classmethod
    def from_node_arg(cls, arg: Any) -> TensorSpec:
        onnx_type: str = arg.type
        element = None
        if onnx_type.startswith("tensor(") and onnx_type.endswith(")"):
            element = onnx_type[len("tensor(") : -1]
        shape = None
        if arg.shape is not None and element is not None:
            shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
        return cls(arg.name, element, shape, onnx_type)

    @property
    def dtype(self) -> str | None:
        known = BY_ONNX.get(self.element_type or "")
        return known.numpy if known else None


@dataclass(frozen=True)
class LoadReport:
    """Where a cold start went: seconds per phase, bytes, and what the disk cache did
    (``miss``, ``revalidated``, ``stale`` or ``local``)."""

    source_uri: str
    bytes: int
    cache: str
    downloaded_bytes: int
    fetch_s: float
    verify_s: float
    session_s: float
    warmup_s: float
    total_s: float
    memory_bytes: int
    provider: str = "CPUExecutionProvider"
    optimized: str = "off"  # the optimised-graph cache: hit, saved or off

    @property
    def downloaded(self) -> bool:
        return self.downloaded_bytes > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class OnnxModel:
    """An ONNX model ready to run. ``run`` is thread-safe (onnxruntime sessions are)."""

    def __init__(
        self,
        name: str,
        session: onnxruntime.InferenceSession,
        *,
        sha256: str,
        version: str,
        report: LoadReport | None = None,
    ) -> None:
        self.name = name
        self.sha256 = sha256
        self.version = version
        self.report = report
        self._session = session
        self.inputs = [TensorSpec.from_node_arg(a) for a in session.get_inputs()]
        self.outputs = [TensorSpec.from_node_arg(a) for a in session.get_outputs()]
        self._input_by_name = {spec.name: spec for spec in self.inputs}
        # What every run needs, looked up once: on the warm path.
        import numpy as np  # onnxruntime's own import brought it

        self._dtypes = {
            spec.name: np.dtype(spec.dtype) if spec.dtype else None for spec in self.inputs
        }
        self._ndarray = np.ndarray
        self._output_names = [spec.name for spec in self.outputs]
        self.session_info: SessionInfo | None = None
        # On the CPU provider alone, onnxruntime's C session is called as its Python wrapper
        # calls it, without the wrapper's checks, which ``run`` makes its own (each input fed,
        # a numpy array of its type) or which do not apply (OrtValues of another session, a
        # GPU's graph capture, a fallback to other providers): 2-3 us of a 64-row bulk call
        # of ~15. Any other provider, or a wrapper without a C session: the wrapper's run.
        native = getattr(session, "_sess", None)
        cpu_only = session.get_providers() == ["CPUExecutionProvider"]
        self._run: Any = native.run if native is not None and cpu_only else session.run
        self._meta_columns = self._columns()  # read once: the session holds a copy each ask
        self._missing = {
            name: text for name, text in self._missing_texts().items() if name in self._dtypes
        }
        self._closed = self._closed_categories()

    @classmethod
    def load(
        cls,
        name: str,
        path: Path,
        *,
        sha256: str,
        version: str,
        config: SessionConfig | None = None,
    ) -> OnnxModel:
        created, info = create_session(name, path, sha256, config or SessionConfig())
        model = cls(name, created, sha256=sha256, version=version)
        model.session_info = info
        return model

    def warm_up(self) -> bool:
        """Run the model once on zeros (dynamic dimensions as 1), so the first real request
        does not pay for lazy allocations. Returns False if the model refused dummy inputs."""
        import numpy as np

        feeds: dict[str, Any] = {}
        texts = self._known_texts()
        for spec in self.inputs:
            if spec.dtype is None or spec.shape is None:
                return False
            shape = tuple(d if d is not None else 1 for d in spec.shape)
            feeds[spec.name] = (
                np.zeros(shape, dtype=spec.dtype)
                if spec.dtype != "object"
                else np.full(shape, texts.get(spec.name, ""), dtype=object)
            )
        try:
            self._session.run(None, feeds)
        except Exception:  # some models reject zeros (e.g. index inputs); warm-up is optional
            return False
        return True

    def _known_texts(self) -> dict[str, str]:
        """A category each text column takes, by input, from the metadata ``mlfn convert``
        writes: an encoder that refuses unknown categories refuses ""."""
        try:
            return {
                str(c["name"]): str(c["categories"][0])
                for c in self._meta_columns
                if c.get("type") == "str" and c.get("categories")
            }
        except (TypeError, KeyError, IndexError):
            return {}

    def _columns(self) -> list[dict[str, Any]]:
        """The named columns ``mlfn convert`` recorded in the metadata (``mlfn.columns``)."""
        import json

        try:
            meta = self._session.get_modelmeta().custom_metadata_map
            columns = json.loads(meta.get("mlfn.columns", "[]"))
        except (ValueError, TypeError, AttributeError):
            return []
        if not isinstance(columns, list):
            return []
        return [c for c in columns if isinstance(c, dict)]

    def _missing_texts(self) -> dict[str, str]:
        """The text each optional string column's input takes for a missing value (None), by
        input: the model imputes it (``mlfn convert``: ``missing``)."""
        return {
            str(c.get("name")): c["missing"]
            for c in self._meta_columns
            if c.get("type") == "str" and isinstance(c.get("missing"), str)
        }

    def _closed_categories(self) -> dict[str, tuple[list[Any], frozenset[Any]]]:
        """The values each input whose encoder refuses others (``mlfn convert``'s ``closed``)
        takes, by input: its categories in their order, and as a set with what an imputer
        before the encoder replaces (``replaced``). An ONNX OrdinalEncoder has no such
        refusal (an unknown value is encoded as something), and a OneHotEncoder's names no
        column: ``run`` refuses an unknown one itself, as scikit-learn does. A model whose
        metadata does not say what its imputers replace (converted before it did) is left
        to refuse what it refuses."""
        closed = {}
        for c in self._meta_columns:
            name, categories, replaced = str(c.get("name")), c.get("categories"), c.get("replaced")
            if (
                c.get("closed") is True
                and isinstance(categories, list)
                and isinstance(replaced, list)
                and name in self._dtypes
            ):
                try:
                    known = frozenset(categories) | frozenset(replaced)
                except TypeError:  # not plain values: left to the model
                    continue
                missing = self._missing.get(name)  # the imputer's text: the model's own
                if missing is not None:
                    known |= {missing}
                if c.get("optional") is True:  # a missing value is the imputer's to replace
                    known |= {None, _NAN}
                closed[name] = (categories, known)
        return closed

    def run(
        self, feeds: Mapping[str, Any], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model. Feed values may be arrays or nested lists; each is converted to its
        input's element type. Returns every output (or those named) by name."""
        dtypes = self._dtypes
        if feeds.keys() != dtypes.keys():
            missing = [name for name in self._input_by_name if name not in feeds]
            unknown = [name for name in feeds if name not in self._input_by_name]
            raise ValueError(
                f"model {self.name!r} takes inputs {sorted(self._input_by_name)}; "
                f"feeds miss {missing} and add unknown {unknown}"
            )
        arrays = {}
        texts = self._missing
        for name, value in feeds.items():
            dtype = dtypes[name]
            if texts and name in texts:
                value = _filled(value, texts[name])
            # An array of the input's type already (a bulk call's, mostly) goes as it is.
            if dtype is None or (type(value) is self._ndarray and value.dtype is dtype):
                arrays[name] = value
                continue
            import numpy as np

            try:
                arrays[name] = np.asarray(value, dtype=dtype)
            except (ValueError, TypeError, OverflowError) as exc:  # ragged rows, say
                raise ModelInputRefused(self.name, f"input {name!r}: {exc}") from None
        if self._closed:
            _refuse_unknown(self.name, self._closed, arrays)
        names = list(output_names) if output_names else self._output_names
        try:
            results = self._run(names, arrays, None)
        except UnicodeEncodeError as exc:  # a lone surrogate (JSON's "\ud800") in a string input
            bad = exc.object[exc.start : exc.end]
            reason = f"a string holds {bad!r}, which UTF-8 cannot encode ({exc.reason})"
            raise ModelInputRefused(self.name, reason) from None
        except Exception as exc:
            if _refused_input(exc):
                raise ModelInputRefused(self.name, str(exc).strip().splitlines()[0]) from None
            raise
        return dict(zip(names, results, strict=True))

    def __repr__(self) -> str:
        return f"OnnxModel({self.name!r}, version={self.version!r})"
