"""The proof's comparison, on a graph whose answers are known: Identity, so what goes in is what
the ONNX model answers, and the 'original' is whatever the test says it answered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.convert import api
from runtime.convert.base import Converted
from runtime.errors import ConversionError, ConversionMismatch


def _identity(element: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", element, [None, 2])],
        [helper.make_tensor_value_info("output", element, [None, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _convert(
    monkeypatch: pytest.MonkeyPatch, rows: np.ndarray, answered: np.ndarray, element: int
) -> None:
    """Make ``to_onnx(framework="sklearn")`` convert anything to Identity, the original having
    ``answered``."""
    converted = Converted(_identity(element), {"input": rows}, {"output": answered})
    monkeypatch.setattr(api, "_converters", lambda: {"sklearn": lambda *_: converted})


def test_numbers_are_compared_absolutely_below_one_and_relatively_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.array([[0.5, 300.0]], dtype=np.float32)
    _convert(monkeypatch, rows, rows + np.array([[2e-5, 3e-3]]), TensorProto.FLOAT)
    done = api.to_onnx(None, tmp_path / "a.onnx", framework="sklearn", tolerance=1e-4)
    assert done.largest_difference == pytest.approx(2e-5, rel=1e-2)  # 3e-3 / 300 = 1e-5


def test_a_nan_the_original_did_not_give_is_refused_and_shared_nans_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.array([[np.nan, 1.0]], dtype=np.float32)
    _convert(monkeypatch, rows, rows.copy(), TensorProto.FLOAT)
    assert api.to_onnx(None, tmp_path / "same.onnx", framework="sklearn").largest_difference == 0
    _convert(monkeypatch, rows, np.array([[0.0, 1.0]]), TensorProto.FLOAT)
    with pytest.raises(ConversionMismatch, match="output: largest difference inf"):
        api.to_onnx(None, tmp_path / "nan.onnx", framework="sklearn")
    assert not (tmp_path / "nan.onnx").exists()


def test_labels_are_counted_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.array([["cat", "dog"], ["eel", "cat"]], dtype=object)
    _convert(monkeypatch, rows, np.array([["cat", "dog"], ["eel", "dog"]]), TensorProto.STRING)
    with pytest.raises(ConversionMismatch, match="output: 1 of 4 values differ"):
        api.to_onnx(None, tmp_path / "labels.onnx", framework="sklearn")


def test_an_answer_of_another_size_is_an_error_not_a_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.ones((3, 2), dtype=np.float32)
    _convert(monkeypatch, rows, np.ones(3), TensorProto.FLOAT)
    with pytest.raises(ConversionError, match=r"output 'output' has shape \[3, 2\] in ONNX"):
        api.to_onnx(None, tmp_path / "shape.onnx", framework="sklearn")


def test_a_graph_whose_batch_size_is_baked_in_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exporter that bakes the sample's batch size into a Reshape: the model answers the
    sample's 4 rows, and nothing else."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [4, 2])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "baked",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 2])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    converted = Converted(model, {"input": rows}, {"output": rows})
    monkeypatch.setattr(api, "_converters", lambda: {"sklearn": lambda *_: converted})
    with pytest.raises(ConversionError, match="batch axis is not dynamic"):
        api.to_onnx(None, tmp_path / "a.onnx", framework="sklearn")
    assert not (tmp_path / "a.onnx").exists()


def test_one_flipped_label_is_refused_whatever_the_tolerance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.array([[1, 2]] * 32, dtype=np.int64)
    answered = rows.copy()
    answered[7, 0] = 9
    _convert(monkeypatch, rows, answered, TensorProto.INT64)
    with pytest.raises(ConversionMismatch, match="output: 1 of 64 values differ"):
        api.to_onnx(None, tmp_path / "a.onnx", framework="sklearn", tolerance=0.5)
    # Classes fitted as booleans come back from ONNX as 0 and 1: the same answers.
    _convert(monkeypatch, rows % 2, (rows % 2).astype(bool), TensorProto.INT64)
    assert api.to_onnx(None, tmp_path / "b.onnx", framework="sklearn").largest_difference == 0
    with pytest.raises(ConversionError, match="tolerance must be a number >= 0"):
        api.to_onnx(None, tmp_path / "c.onnx", framework="sklearn", tolerance=float("nan"))
