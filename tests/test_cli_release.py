"""``mlfn release``: an endpoint's release document shown and changed from its app folder, in
a local-folder model store and in Azurite, with every change a conditional write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result

from runtime.cli import releases
from runtime.config import Settings
from runtime.digest import sha256_file
from runtime.models.reference import Model
from runtime.releases.document import Release
from runtime.releases.follow import document_uri
from scripts.build_models import build_iris
from tests.conftest import AzuriteInfo
from tests.support import Mlfn, copy_examples, free_port, make_app, mlfn_in


@pytest.fixture(scope="module")
def second_iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another iris model: another version of the example's."""
    return build_iris(tmp_path_factory.mktemp("release-models") / "iris-c.onnx", c=0.01)


@pytest.fixture
def store(tmp_path: Path, example_models: dict[str, Path]) -> Path:
    """A local-folder model store holding the example's iris.onnx."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(example_models["iris"], folder / "iris.onnx")
    return folder


def _env(store: Path | str, tmp_path: Path) -> dict[str, str]:
    return {"MLFN_MODEL_STORE": str(store), "MLFN_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture
def mlfn(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> Mlfn:
    """``mlfn ARGS`` in a copy of the repository's app, its models in ``store``."""
    return mlfn_in(copy_examples(tmp_path / "app"), _env(store, tmp_path), monkeypatch)


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exc_info)
    return result


def _refused(result: Result) -> str:
    """The one-line error of a command that exited 1 with a message, not a crash."""
    assert result.exit_code == 1, (result.output, result.exc_info)
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    return result.stderr


def _document(store: Path) -> dict[str, Any]:
    return json.loads((store / "iris.release.json").read_bytes())  # type: ignore[no-any-return]


def test_show_without_a_release_says_the_code_model_serves_and_how_to_start(
    mlfn: Mlfn, store: Path
) -> None:
    shown = _ok(mlfn("release", "iris"))
    assert shown.stdout.splitlines() == [
        f"iris has no release: no {store}/iris.release.json",
        f"it serves the model its code names, iris.onnx ({store}/iris.onnx)",
        "start one: mlfn release iris add LABEL FILE_OR_URI --weight 10",
    ]
    assert _ok(mlfn("release", "iris", "show")).stdout == shown.stdout
    assert not (store / "iris.release.json").exists()
    assert "no endpoint 'tulips' in this app; known: diabetes, iris" in _refused(
        mlfn("release", "tulips")
    )


def test_adding_a_file_starts_the_release_with_the_code_model_stable_and_pins_the_upload(
    mlfn: Mlfn, store: Path, second_iris: Path
) -> None:
    digest = sha256_file(second_iris)
    uploaded = f"iris-v2-{digest[:12]}.onnx"  # named by its content: it never replaces others
    added = _ok(mlfn("release", "iris", "add", "v2", str(second_iris), "--weight", "10"))
    assert (store / uploaded).read_bytes() == second_iris.read_bytes()
    assert _document(store) == {
        "versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": uploaded, "sha256": digest}},
        "stable": "v1",
        "weights": {"v1": 90, "v2": 10},
    }
    assert added.stdout.splitlines() == [
        f"uploaded {second_iris} ({second_iris.stat().st_size} bytes) to {store}/{uploaded}",
        "started the release with the code's model as v1 (stable)",
        f"wrote {store}/iris.release.json",
        "iris: v1 90%, v2 10% (stable v1)",
    ]
    again = mlfn("release", "iris", "add", "v2", str(second_iris))
    assert "iris has a version 'v2' already" in _refused(again)


@pytest.mark.parametrize(
    ("declared", "added", "code_label"),
    [("2024-06", "v2", "2024-06"), ("v2", "v2", "v1"), (None, "v1", "v0")],
)
def test_the_code_model_is_labelled_by_its_declared_version_unless_that_is_taken(
    tmp_path: Path,
    store: Path,
    second_iris: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_imports: None,
    declared: str | None,
    added: str,
    code_label: str,
) -> None:
    pin = sha256_file(store / "iris.onnx")
    model = Model("iris.onnx", sha256=pin, version=declared)
    app = make_app(
        tmp_path / "app",
        {"iris": f"from runtime import Endpoint, Model\nendpoint = Endpoint(model={model!r})\n"},
    )
    mlfn = mlfn_in(app, _env(store, tmp_path), monkeypatch)
    _ok(mlfn("release", "iris", "add", added, str(second_iris)))
    document = _document(store)
    assert document["versions"][code_label] == {"uri": "iris.onnx", "sha256": pin}
    assert document["stable"] == code_label and document["weights"] == {code_label: 100}


def test_split_promote_rollback_and_remove_rewrite_the_document_and_print_the_split(
    mlfn: Mlfn, store: Path, second_iris: Path
) -> None:
    added = _ok(mlfn("release", "iris", "add", "v2", str(second_iris)))
    assert _document(store)["weights"] == {"v1": 100}
    assert "v2 takes no traffic yet: mlfn release iris split v2=10" in added.stdout

    def run(*args: str) -> tuple[str, dict[str, Any]]:
        done = _ok(mlfn("release", "iris", *args))
        return done.stdout.splitlines()[-1], _document(store)

    said, doc = run("split", "v2=25")
    assert said == "iris: v1 75%, v2 25% (stable v1)" and doc["weights"] == {"v1": 75, "v2": 25}
    # A model already in a store is recorded as named (a URI, not a file), pinned when asked.
    pin, uri = sha256_file(store / "iris.onnx"), (store / "iris.onnx").as_uri()
    said, doc = run("add", "v3", uri, "--sha256", pin, "--weight", "10")
    assert doc["versions"]["v3"] == {"uri": uri, "sha256": pin}
    assert said == "iris: v1 67.5%, v2 22.5%, v3 10% (stable v1)"
    assert doc["weights"] == {"v1": 67.5, "v2": 22.5, "v3": 10}
    said, doc = run("split", "v1=50", "v2=50")
    assert said == "iris: v1 50%, v2 50% (stable v1)" and doc["weights"] == {"v1": 50, "v2": 50}
    said, doc = run("promote", "v2")
    assert said == "iris: v2 100% (stable v2)"
    assert doc["stable"] == "v2" and doc["weights"] == {"v2": 100}
    said, doc = run("split", "v1=10")
    assert said == "iris: v1 10%, v2 90% (stable v2)"
    said, doc = run("rollback")
    assert said == "iris: v2 100% (stable v2)" and doc["weights"] == {"v2": 100}
    before = (store / "iris.release.json").stat()
    unchanged = _ok(mlfn("release", "iris", "rollback"))
    assert "the release already is so: nothing written" in unchanged.stdout
    assert (store / "iris.release.json").stat().st_mtime_ns == before.st_mtime_ns
    assert "v2 is the stable version: promote another one first" in _refused(
        mlfn("release", "iris", "remove", "v2")
    )
    said, doc = run("remove", "v3")
    assert set(doc["versions"]) == {"v1", "v2"} and said == "iris: v2 100% (stable v2)"
    assert (store / "iris.onnx").exists()  # a removed version's model stays in the store


def test_splits_that_leave_traffic_to_nobody_or_name_unknown_versions_are_refused(
    mlfn: Mlfn, store: Path, second_iris: Path
) -> None:
    _ok(mlfn("release", "iris", "add", "v2", str(second_iris), "--weight", "10"))
    written = _document(store)
    assert "more than 100%" in _refused(mlfn("release", "iris", "split", "v1=60", "v2=50"))
    assert "leaves 20% to no version" in _refused(
        mlfn("release", "iris", "split", "v1=40", "v2=40")
    )
    refused = _refused(mlfn("release", "iris", "split", "v9=5"))
    assert "weights.v9: no such version in this release; versions: v1, v2" in refused
    bad = mlfn("release", "iris", "split", "v2=ten")
    assert bad.exit_code == 2 and "give LABEL=PERCENT" in bad.stderr
    assert _document(store) == written


def test_a_live_version_whose_model_is_missing_is_refused_and_shown(
    mlfn: Mlfn, store: Path, second_iris: Path
) -> None:
    _ok(mlfn("release", "iris", "add", "v2", str(second_iris)))
    uploaded = f"iris-v2-{sha256_file(second_iris)[:12]}.onnx"
    (store / uploaded).unlink()
    refused = _refused(mlfn("release", "iris", "split", "v2=10"))
    assert f"the model of version v2 ({uploaded}) is not in the store" in refused
    assert _document(store)["weights"] == {"v1": 100}
    shown = _ok(mlfn("release", "iris"))  # not live: instances follow it
    lines = shown.stdout.splitlines()
    assert lines[0] == f"release of iris: {store}/iris.release.json"
    assert lines[1].split() == ["v1", "100%", "iris.onnx", "not", "pinned", "in", "store", "stable"]
    assert lines[2].split()[:4] == ["v2", "0%", uploaded, "sha256"]
    assert lines[2].split()[-1] == "MISSING"
    assert lines[3] == "traffic: v1 100% (stable v1)"
    # Written by hand, live: show says why instances keep the last good release.
    document = _document(store)
    document["weights"] = {"v1": 50, "v2": 50}
    (store / "iris.release.json").write_text(json.dumps(document))
    live = mlfn("release", "iris")
    assert "MISSING" in live.stdout
    assert "model of version v2 is not in the store: instances do not follow" in _refused(live)


def test_an_invalid_document_makes_show_exit_1_naming_the_field_and_changes_refuse_it(
    mlfn: Mlfn, store: Path, second_iris: Path
) -> None:
    _ok(mlfn("release", "iris", "add", "v2", str(second_iris), "--weight", "10"))
    document = _document(store)
    document["weights"]["v2"] = -1
    (store / "iris.release.json").write_text(json.dumps(document))
    said = _refused(mlfn("release", "iris"))
    assert f"release document {store}/iris.release.json is not followed" in said
    assert "weights.v2: must be a number, 0 or more" in said
    assert "instances keep serving the last good release" in said
    assert "weights.v2: must be a number" in _refused(mlfn("release", "iris", "rollback"))
    assert _document(store) == document
    (store / "iris.release.json").write_text("{not json")
    assert "(document): is not JSON" in _refused(mlfn("release", "iris", "show"))


def test_a_change_that_loses_a_race_says_so_and_leaves_the_other_change(
    mlfn: Mlfn, store: Path, second_iris: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ok(mlfn("release", "iris", "add", "v2", str(second_iris), "--weight", "10"))
    place = _place(f"{store}/iris.onnx", Settings())
    split = releases.split

    def raced(release: Release, percents: dict[str, float]) -> Release:
        # Another person's promote lands between this command's read and its write.
        releases.edit(place, lambda r: releases.promote(_there(r), "v2"))
        return split(release, percents)

    monkeypatch.setattr(releases, "split", raced)
    said = _refused(mlfn("release", "iris", "split", "v2=50"))
    assert "the release of iris was changed by someone else since this command read it" in said
    assert "nothing was written: run the command again" in said
    assert _document(store)["stable"] == "v2" and _document(store)["weights"] == {"v2": 100}


def test_two_first_adds_at_once_make_one_release(
    mlfn: Mlfn, store: Path, second_iris: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = _place(f"{store}/iris.onnx", Settings())
    start = releases.start

    def raced(place_: releases.Place, taken: str) -> Release:
        releases.edit(place, lambda r: start(place, "v9"))  # someone else started it meanwhile
        return start(place_, taken)

    monkeypatch.setattr(releases, "start", raced)
    said = _refused(mlfn("release", "iris", "add", "v2", str(second_iris)))
    assert "changed by someone else" in said
    assert _document(store) == {
        "versions": {"v1": {"uri": "iris.onnx"}},
        "stable": "v1",
        "weights": {"v1": 100},
    }


def _there(release: Release | None) -> Release:
    assert release is not None
    return release


def _place(model_uri: str, settings: Settings) -> releases.Place:
    return releases.Place(
        "iris", Model("iris.onnx"), model_uri, document_uri("iris", model_uri), settings
    )


def test_a_release_in_azurite_through_connection_with_a_conflict(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    second_iris: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_imports: None,
) -> None:
    from azure.storage.blob import ContainerClient

    for name in ("AzureWebJobsStorage", "MLFN_MODEL_STORE_CONNECTION"):
        monkeypatch.delenv(name, raising=False)  # only --connection names the account
    container = ContainerClient.from_connection_string(azurite.connection_string, models_in_blob)
    mlfn = mlfn_in(
        copy_examples(tmp_path / "app"), _env(f"az://{models_in_blob}", tmp_path), monkeypatch
    )

    def document() -> dict[str, Any]:
        return json.loads(container.download_blob("iris.release.json").readall())  # type: ignore[no-any-return]

    conn = azurite.connection_string
    no_account = _refused(mlfn("release", "iris"))
    assert "MLFN_MODEL_STORE_CONNECTION is not set" in no_account
    added = _ok(mlfn("release", "iris", "add", "v2", str(second_iris), "--connection", conn))
    digest = sha256_file(second_iris)
    uploaded = f"iris-v2-{digest[:12]}.onnx"
    assert f"to az://{models_in_blob}/{uploaded}" in added.stdout
    blob = container.get_blob_client(uploaded)
    assert blob.download_blob().readall() == second_iris.read_bytes()
    assert blob.get_blob_properties().metadata == {"sha256": digest}
    assert document() == {
        "versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": uploaded, "sha256": digest}},
        "stable": "v1",
        "weights": {"v1": 100},
    }
    split = _ok(mlfn("release", "iris", "split", "v2=30", "--connection", conn))
    assert split.stdout.splitlines()[-1] == "iris: v1 70%, v2 30% (stable v1)"
    assert document()["weights"] == {"v1": 70, "v2": 30}

    settings = Settings.from_mapping({"MLFN_MODEL_STORE_CONNECTION": conn})
    place = _place(f"az://{models_in_blob}/iris.onnx", settings)

    def raced(release: Release | None) -> Release:
        assert release is not None
        releases.edit(place, lambda r: releases.rollback(_there(r)))
        return releases.promote(release, "v2")

    with pytest.raises(click.ClickException, match="changed by someone else"):
        releases.edit(place, raced)
    assert document()["stable"] == "v1" and document()["weights"] == {"v1": 100}

    shown = _ok(mlfn("release", "iris", "show", "--connection", conn))
    assert (
        shown.stdout.splitlines()[0] == f"release of iris: az://{models_in_blob}/iris.release.json"
    )
    assert [line.split()[-2:] for line in shown.stdout.splitlines()[1:3]] == [
        ["store", "stable"],
        ["in", "store"],
    ]


def test_show_on_a_store_that_cannot_be_reached_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> None:
    port = free_port()  # nothing listens there
    account = "devstoreaccount1"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    env = {
        "MLFN_MODEL_STORE": "az://models",
        "MLFN_MODEL_STORE_CONNECTION": (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{account};"
        ),
        "MLFN_STORE_RETRIES": "0",
        "MLFN_STORE_CONNECT_TIMEOUT_S": "2",
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
    }
    run = mlfn_in(copy_examples(tmp_path / "app"), env, monkeypatch)
    refused = _refused(run("release", "iris", "show"))
    assert "az://models/iris.release.json" in refused
    assert "cannot be reached" in refused or "failed" in refused, refused
    assert key not in refused


def test_a_release_declared_in_code_is_shown_and_a_first_change_starts_from_it(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> None:
    from tests.releases.test_release_app import DECLARED

    build_iris(store / "iris-v2.onnx", c=0.01)
    run = mlfn_in(
        make_app(tmp_path / "app", {"iris": DECLARED}), _env(store, tmp_path), monkeypatch
    )
    shown = _ok(run("release", "iris"))
    assert "it follows the release its code declares: v1 50%, v2 50% (stable v1)" in shown.stdout
    _ok(run("release", "iris", "split", "v2=10"))
    assert _document(store) == {
        "versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": "iris-v2.onnx"}},
        "stable": "v1",
        "weights": {"v1": 90, "v2": 10},
    }


def test_a_version_must_be_a_model_that_takes_what_the_stable_one_takes(
    mlfn: Mlfn, store: Path, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    not_a_model = tmp_path / "notes.onnx"
    not_a_model.write_text("# not a model\n")
    refused = _refused(mlfn("release", "iris", "add", "v2", str(not_a_model)))
    assert "version v2's model is not a model onnxruntime loads:" in refused
    refused = _refused(mlfn("release", "iris", "add", "v2", str(example_models["diabetes"])))
    assert "version v2's model has inputs ['input:tensor(float)'] and outputs" in refused
    assert "the stable version v1's has" in refused and "its requests would fail" in refused
    assert not (store / "iris.release.json").exists()  # nothing written
    assert sorted(p.name for p in store.iterdir()) == ["iris.onnx"]  # nothing uploaded


def test_a_store_uri_pinned_by_a_wrong_digest_is_refused(
    mlfn: Mlfn, store: Path, second_iris: Path
) -> None:
    shutil.copy(second_iris, store / "later.onnx")
    uri = (store / "later.onnx").as_uri()
    refused = _refused(mlfn("release", "iris", "add", "v2", uri, "--sha256", "a" * 64))
    assert f"has sha256 {sha256_file(second_iris)}, not the --sha256 given" in refused
    _ok(mlfn("release", "iris", "add", "v2", uri, "--sha256", sha256_file(second_iris)))
    assert _document(store)["versions"]["v2"] == {"uri": uri, "sha256": sha256_file(second_iris)}


def test_promoting_the_shadow_ends_the_shadow(mlfn: Mlfn, store: Path, second_iris: Path) -> None:
    _ok(mlfn("release", "iris", "add", "v2", str(second_iris)))
    _ok(mlfn("release", "iris", "shadow", "v2", "--percent", "50"))
    assert _document(store)["shadow"] == {"version": "v2", "share": 0.5}
    promoted = _ok(mlfn("release", "iris", "promote", "v2"))
    assert "shadow" not in _document(store)
    assert "shadow:" not in promoted.stdout
