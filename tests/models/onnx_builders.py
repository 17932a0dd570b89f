"""Tiny ONNX models built with onnx.helper for scenarios the example models do not cover."""

from __future__ import annotations

import itertools
from pathlib import Path

import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="mlfn tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def multi_io(path: Path) -> Path:
    """Inputs ``features:0`` float [N,2,2], ``count`` int64 [N], ``mask`` bool [N,2]; outputs
    ``doubled`` = features*2, ``next`` = count+1, ``not_mask`` = not mask."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["features:0", "two"], ["doubled"]),
            helper.make_node("Add", ["count", "one"], ["next"]),
            helper.make_node("Not", ["mask"], ["not_mask"]),
        ],
        "multi_io",
        [
            helper.make_tensor_value_info("features:0", TensorProto.FLOAT, ["N", 2, 2]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["N", 2, 2]),
            helper.make_tensor_value_info("next", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("not_mask", TensorProto.BOOL, ["N", 2]),
        ],
        initializer=[two, one],
    )
    return _save(graph, path)


def fixed_batch(path: Path, batch: int = 8) -> Path:
    """Identity over float [batch, 3]: a model exported without a dynamic batch dimension."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "fixed_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
    )
    return _save(graph, path)


def heavy(path: Path, seed: int, megabytes: int = 24) -> Path:
    """``y[N] = sum(x[N,4] @ W)`` with a random float32 ``W`` of about ``megabytes`` MB: a
    model whose memory is dominated by its weights, for memory-budget tests."""
    import numpy as np

    columns = megabytes * 1024 * 1024 // (4 * 4)
    weights = np.random.default_rng(seed).standard_normal((4, columns), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("ReduceSum", ["xw", "axes"], ["y"], keepdims=0),
        ],
        f"heavy_{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        initializer=[
            onnx.numpy_helper.from_array(weights, "W"),
            onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="mlfn tests")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def strings(path: Path) -> Path:
    """A BYTES model: ``echo`` is the string input ``text`` [N] as given, ``count`` its size."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["text"], ["echo"]),
            helper.make_node("Size", ["text"], ["count"]),
        ],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [
            helper.make_tensor_value_info("echo", TensorProto.STRING, ["N"]),
            helper.make_tensor_value_info("count", TensorProto.INT64, []),
        ],
    )
    return _save(graph, path)


def mlp(path: Path, sizes: tuple[int, ...] = (256, 512, 512, 10), seed: int = 0) -> Path:
    """A multi-layer perceptron ``x`` float [N, sizes[0]] -> ``y`` float [N, sizes[-1]]: MatMul,
    Add and Relu per layer, weights drawn from a seeded generator (the same bytes every run)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    nodes, initializers, current = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        initializers += [
            onnx.numpy_helper.from_array(w, f"w{i}"),
            onnx.numpy_helper.from_array(b, f"b{i}"),
        ]
        last = i == len(sizes) - 2
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if last else f"a{i}"]),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            current = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
        initializer=initializers,
    )
    return _save(graph, path)


def adder(path: Path) -> Path:
    """``sum`` = ``x`` + ``y``, both float [N, 2]: a model whose inputs must agree on N."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["sum"])],
        "adder",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2])],
    )
    return _save(graph, path)
