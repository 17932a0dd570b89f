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


def iris_canary(path: Path, fail_from: float | None = None, slow: int = 0) -> Path:
    """An iris-shaped model (input ``input`` float [N,4]; outputs ``label`` int64 [N] and
    ``probabilities`` float [N,3]) that misbehaves as a bad new version would: with
    ``fail_from``, its run fails (a Gather out of bounds) for a row whose first feature is
    ``fail_from`` or more; with ``slow``, each run goes through that many 512x512 layers more."""
    weights = helper.make_tensor(
        "w",
        TensorProto.FLOAT,
        [4, 3],
        [0.5, 0.1, -0.5, 1.0, 0.0, -1.0, -1.0, 0.2, 1.0, -1.0, 0.1, 1.0],
    )
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("MatMul", ["input", "w"], ["logits0"])]
    initializers = [weights, zero]
    last = "logits0"
    if fail_from is not None:
        size = int(fail_from)
        initializers += [
            helper.make_tensor("table", TensorProto.FLOAT, [size], [1.0] * size),
            helper.make_tensor("first", TensorProto.INT64, [1], [0]),
        ]
        nodes += [
            helper.make_node("Gather", ["input", "first"], ["feature"], axis=1),  # [N,1]
            helper.make_node("Floor", ["feature"], ["floored"]),
            helper.make_node("Cast", ["floored"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["looked_up"], axis=0),  # fails here
            helper.make_node("Mul", ["looked_up", "zero"], ["nothing"]),
            helper.make_node("Add", [last, "nothing"], ["logits1"]),
        ]
        last = "logits1"
    if slow:
        initializers += [
            helper.make_tensor("widen", TensorProto.FLOAT, [4, 512], [0.01] * 2048),
            helper.make_tensor("layer", TensorProto.FLOAT, [512, 512], [0.001] * 512 * 512),
        ]
        nodes.append(helper.make_node("MatMul", ["input", "widen"], ["h0"]))
        for i in range(slow):
            nodes += [
                helper.make_node("MatMul", [f"h{i}", "layer"], [f"m{i}"]),
                helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]),
            ]
        nodes += [
            helper.make_node("ReduceSum", [f"h{slow}"], ["total"], keepdims=1),  # [1,1]
            helper.make_node("Mul", ["total", "zero"], ["nil"]),
            helper.make_node("Add", [last, "nil"], ["logits2"]),
        ]
        last = "logits2"
    nodes += [
        helper.make_node("Softmax", [last], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "iris_canary",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
        ],
        initializers,
    )
    return _save(graph, path)
