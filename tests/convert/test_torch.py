"""PyTorch to an endpoint: a trained network saved as a torch.export archive and as TorchScript,
converted, proven, scaffolded and served."""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from runtime.convert import to_onnx
from runtime.errors import ConversionError, ConverterMissing
from tests.convert.steps import mlfn, refused, served
from tests.support import make_app

# `make test-frameworks` installs torch's CPU wheel from PyTorch's own index (PyPI's is a 4 GB
# CUDA build); where that index cannot be reached these tests are reported skipped.
torch = pytest.importorskip(
    "torch",
    reason="torch is not installed: `make test-frameworks` installs its CPU wheel from "
    "https://download.pytorch.org/whl/cpu, which could not be reached or was not tried",
)


@pytest.fixture(scope="module", autouse=True)
def inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """torch's compiler caches what it builds under /tmp/torchinductor_USER unless told where:
    in the tests' own folder, removed with it."""
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("torchinductor"))
    yield
    if saved is None:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def network() -> Any:
    """A small network trained for a few steps to score 6 features into 3 values."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(dim=1)
    )
    x = torch.randn(256, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(net(x) + 1e-9), y)
        loss.backward()
        optimiser.step()
    return net.eval()


def _answers(net: Any, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(net(torch.from_numpy(rows.astype(np.float32))).numpy())


def test_a_trained_network_converted_and_served_answers_what_torch_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: Any
) -> None:
    app = make_app(tmp_path / "app", {})
    example = torch.randn(8, 6)
    batch = torch.export.Dim("batch")
    torch.export.save(
        torch.export.export(network, (example,), dynamic_shapes=({0: batch},)),
        tmp_path / "net.pt2",
    )
    with warnings.catch_warnings():  # torch deprecates TorchScript; users still have such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(network, example), tmp_path / "net.pt")
    rows = np.random.default_rng(3).standard_normal((24, 6)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)

    # The archive carries its example inputs; a TorchScript file needs --sample.
    exported = mlfn(
        monkeypatch, app, "convert", str(tmp_path / "net.pt2"), "--to", "models/exported.onnx"
    )
    assert exported.exit_code == 0, (exported.output, exported.exc_info)
    # the archive's own example inputs: given with the model, not made up
    assert "onnx checker: passed; 8 sample rows answered by both models" in exported.stdout
    scripted = mlfn(
        monkeypatch, app, "convert", str(tmp_path / "net.pt"), "--to", "models/scripted.onnx",
        "--sample", str(tmp_path / "rows.npy"),
    )  # fmt: skip
    assert scripted.exit_code == 0, (scripted.output, scripted.exc_info)
    assert "24 sample rows answered by both models" in scripted.stdout
    for name in ("exported", "scripted"):
        graph = onnx.load(app / "models" / f"{name}.onnx").graph
        assert [i.name for i in graph.input] == ["input"]
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch axis
        made = mlfn(monkeypatch, app, "new", name, "--model", f"models/{name}.onnx")
        assert made.exit_code == 0, (made.output, made.exc_info)

    body = {"instances": [{"input": r} for r in rows.tolist()]}
    answers = served(app, tmp_path, [("exported", body), ("scripted", body)])
    expected = _answers(network, rows)
    assert len({int(i) for i in expected.argmax(axis=1)}) == 3  # a model that learned something
    for answer in answers:
        got = np.array([p["output"] for p in answer.json()["predictions"]])
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_network_given_class_names_is_served_as_a_classifier_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: Any
) -> None:
    app = make_app(tmp_path / "app", {})
    rows = np.random.default_rng(4).standard_normal((5, 6)).astype(np.float32)
    done = to_onnx(network, app / "net.onnx", rows, classes=["low", "mid", "high"])
    assert done.framework == "torch" and done.rows == 5 and done.largest_difference < 1e-5
    assert [d.output for d in done.differences] == ["label", "probabilities"]
    model = onnx.load(app / "net.onnx")
    assert [o.name for o in model.graph.output] == ["probabilities", "label"]
    assert {p.key: p.value for p in model.metadata_props} == {
        "mlfn.classes": '["low", "mid", "high"]',
        "mlfn.labels": "[0, 1, 2]",  # the label is the argmax: a column number
    }

    made = mlfn(
        monkeypatch, app, "new", "grades", "--model", "net.onnx", "--template", "classifier"
    )
    assert made.exit_code == 0, (made.output, made.exc_info)
    assert "classes from the model's metadata (mlfn.classes): low, mid, high" in made.stdout
    # exported on 5 rows, served 40: the batch axis is not fixed
    many = np.random.default_rng(5).standard_normal((40, 6)).astype(np.float32)
    (answer,) = served(
        app, tmp_path, [("grades", {"instances": [{"input": r} for r in many.tolist()]})]
    )
    expected = _answers(network, many)
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == [
        ["low", "mid", "high"][i] for i in expected.argmax(axis=1)
    ]
    got = np.array([[p["probabilities"][c] for c in ("low", "mid", "high")] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_class_names_need_one_output_of_as_many_scores(tmp_path: Path, network: Any) -> None:
    rows = np.zeros((2, 6), dtype=np.float32)
    with pytest.raises(ConversionError, match="2 class names given; the model scores 3 classes"):
        to_onnx(network, tmp_path / "net.onnx", rows, classes=["a", "b"])
    assert not (tmp_path / "net.onnx").exists()


@pytest.mark.parametrize(
    ("double", "given", "element"),
    [
        (False, np.float64, onnx.TensorProto.FLOAT),  # numpy's default, for a float32 network
        (True, np.float32, onnx.TensorProto.DOUBLE),
    ],
)
def test_a_floating_sample_is_cast_to_the_network_s_float_type(
    tmp_path: Path, network: Any, double: bool, given: Any, element: int
) -> None:
    net = copy.deepcopy(network).double() if double else network
    rows = np.random.default_rng(6).standard_normal((4, 6)).astype(given)
    done = to_onnx(net, tmp_path / "net.onnx", rows)
    assert done.rows == 4 and done.largest_difference < 1e-5
    assert onnx.load(tmp_path / "net.onnx").graph.input[0].type.tensor_type.elem_type == element


def test_a_module_without_a_sample_is_refused_with_what_to_pass(
    tmp_path: Path, network: Any
) -> None:
    with pytest.raises(
        ConversionError, match=r"needs a sample input to convert \(sample=, or --sample FILE.npy\)"
    ):
        to_onnx(network, tmp_path / "net.onnx")
    assert not (tmp_path / "net.onnx").exists()


def test_the_exporter_missing_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: Any
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # torch's exporter needs it
    rows = np.zeros((2, 6), dtype=np.float32)
    with pytest.raises(ConverterMissing, match=r"pip install 'mlfn\[convert-torch\]'"):
        to_onnx(network, tmp_path / "net.onnx", rows)


def test_a_pickled_module_is_refused_with_how_to_save_it_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: Any
) -> None:
    torch.save(network, tmp_path / "whole.pt")
    done = mlfn(monkeypatch, tmp_path, "convert", "whole.pt", "--to", "x.onnx")
    refused(done, "a pickled module (torch.save) is not taken: save it with torch.export.save")
    assert not (tmp_path / "x.onnx").exists()
