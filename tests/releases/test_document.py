"""The release document: parsed and checked field by field, written back the same."""

from __future__ import annotations

import json

import pytest

from runtime.errors import ReleaseInvalid
from runtime.releases.document import MAX_DOCUMENT_BYTES, Release, Version, parse, single

SHA = "ab" * 32


def _doc(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "versions": {"v1": {"uri": "iris.onnx", "sha256": SHA}, "v2": {"uri": "iris-v2.onnx"}},
        "stable": "v1",
        "weights": {"v1": 90, "v2": 10},
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def test_a_document_is_parsed_and_written_back_unchanged() -> None:
    release = parse(_doc())
    assert release.versions["v1"] == Version("v1", "iris.onnx", SHA)
    assert release.versions["v2"] == Version("v2", "iris-v2.onnx", None)
    assert release.stable == "v1"
    assert release.live == [("v1", 0.9), ("v2", 0.1)]
    assert parse(release.to_json()) == release


def test_weights_are_relative_shares_and_a_version_without_one_takes_no_traffic() -> None:
    release = parse(_doc(weights={"v1": 3, "v2": 1}))
    assert release.live == [("v1", 0.75), ("v2", 0.25)]
    only = parse(_doc(weights={"v2": 2}))
    assert only.live == [("v2", 1.0)]
    # Without weights, every request goes to the stable version.
    assert parse(_without("weights")).live == [("v1", 1.0)]


def _without(field: str) -> bytes:
    doc = json.loads(_doc())
    del doc[field]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        (b"{not json", "(document)", "is not JSON"),
        (b"[1, 2]", "(document)", "JSON object"),
        (_doc(extra=1), "extra", "not a field"),
        (_doc(versions={}), "versions", "at least one version"),
        (
            _doc(versions={"v 1": {"uri": "a.onnx"}}, stable="v 1", weights={}),
            "versions.v 1",
            "label",
        ),
        (_doc(versions={"v1": "a.onnx"}, weights={}), "versions.v1", "object"),
        (_doc(versions={"v1": {"uri": ""}}, weights={}), "versions.v1.uri", "path or URI"),
        (
            _doc(versions={"v1": {"uri": "a", "sha256": "ABC"}}, weights={}),
            "versions.v1.sha256",
            "hex",
        ),
        (
            _doc(versions={"v1": {"uri": "a", "url": "b"}}, weights={}),
            "versions.v1.url",
            "not a field",
        ),
        (_doc(stable="v9"), "stable", "not one of the versions"),
        (_doc(stable=1), "stable", "label"),
        (_doc(weights={"v1": 1, "v3": 1}), "weights.v3", "not one of the versions"),
        (_doc(weights={"v1": -1}), "weights.v1", "0 or more"),
        (_doc(weights={"v1": True}), "weights.v1", "0 or more"),
        (_doc(weights={"v1": "90"}), "weights.v1", "0 or more"),
        (_doc(weights={"v1": 0, "v2": 0}), "weights", "at least one version must take traffic"),
        (_doc(weights=[90, 10]), "weights", "object"),
        (b" " * (MAX_DOCUMENT_BYTES + 1), "(document)", "at most"),
        (b"[" * 5000 + b"]" * 5000, "(document)", "is not JSON"),  # nested past the stack
    ],
)
def test_what_is_wrong_is_named_by_its_field(data: bytes, field: str, says: str) -> None:
    with pytest.raises(ReleaseInvalid) as caught:
        parse(data)
    assert caught.value.field == field
    assert says in caught.value.message
    assert caught.value.message.startswith(f"{field}: ")


def test_a_release_made_in_code_is_checked_as_a_document_is() -> None:
    assert single("v1", "iris.onnx", None).live == [("v1", 1.0)]
    with pytest.raises(ReleaseInvalid, match="stable"):
        Release({"v1": Version("v1", "a.onnx")}, "v2", {"v1": 1})


def test_a_version_is_a_model_reference_labelled_with_its_version() -> None:
    model = Version("v2", "az://models/iris-v2.onnx", SHA).model(("CPUExecutionProvider",))
    assert (model.uri, model.sha256, model.version) == ("az://models/iris-v2.onnx", SHA, "v2")
    assert model.providers == ("CPUExecutionProvider",)
