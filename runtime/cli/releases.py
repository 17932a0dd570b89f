"""``mlfn release``: an endpoint's release document (``runtime/releases/document.py``) shown
and changed: a version added or removed, the traffic split between versions, one promoted,
all traffic rolled back to the stable one.

Every change reads the document and its ETag, changes it, checks the result as an instance
will read it (it parses; each version taking traffic, and the stable one, has its model in the
store) and writes it back only if the document still has that ETag. Two people releasing at
once get a conflict, never a change silently undone.

Traffic is given in percent: ``split v2=10`` gives v2 10% of requests and the other versions
that take traffic share the other 90% as they shared theirs before.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click

from runtime import redact
from runtime.cli.app_folder import connection_option, index, settings
from runtime.cli.output import progress_bar, told
from runtime.config import STORAGE_SETTING, Settings
from runtime.digest import sha256_file
from runtime.errors import MlfnError, ModelNotInStore, ReleaseInvalid, StoreConflict
from runtime.model_store import ModelSource, locate, resolve_uri
from runtime.models.reference import SHA256, Model
from runtime.releases import edits
from runtime.releases.document import (
    LABEL,
    Guardrails,
    Release,
    Version,
    parse,
)
from runtime.releases.edits import promote, remove, rollback, split
from runtime.releases.follow import document_uri, sibling
from runtime.releases.stored import missing_model, read_release, serving

STORE = Settings.variable("store_connection")


@dataclass(frozen=True)
class Place:
    """Where endpoint ``name``'s release document is, and the model its code names."""

    name: str
    model: Model
    model_uri: str  # the code's model, absolute
    document: str  # NAME.release.json beside it
    settings: Settings
    declared: Release | None = None  # the release the code declares, if any

    def source(self, uri: str) -> ModelSource:
        """The store object at ``uri``: relative to the document's folder unless absolute."""
        return locate(sibling(self.document, uri), self.settings)


def find(name: str, connection: str | None, app_dir: Path) -> Place:
    """Endpoint ``name`` of the app in ``app_dir`` and the place of its release."""
    from runtime.host.metadata import registered_app

    with told():
        found = settings(app_dir, {STORE: connection} if connection else None)
        index(app_dir)  # imports function_app.py, as the worker does
        services = registered_app().services
        bound = services.endpoints.get(name)
        if bound is None:
            known = ", ".join(sorted(services.endpoints)) or "none"
            raise click.ClickException(f"no endpoint {name!r} in this app; known: {known}")
        model = bound.endpoint.model
        # The app root instances resolve against (services.app_root), so the same document.
        model_uri = resolve_uri(model.uri, found, services.app_root)
    document = document_uri(name, model_uri)
    return Place(name, model, model_uri, document, found, bound.endpoint.release)


def read(place: Place) -> tuple[Release | None, str | None]:
    """The endpoint's release and its document's ETag; (None, None) without a document.
    ``ReleaseInvalid`` when instances would not follow it as written."""
    return read_release(place.source(place.document))


def edit(place: Place, change: Callable[[Release | None], Release]) -> tuple[bool, Release]:
    """Read the release, ``change`` it, and write it back only if nobody has meanwhile
    (``StoreConflict`` becomes a one-line error). Whether it was written, and the release."""
    try:
        before, etag = read(place)
    except ReleaseInvalid as exc:
        raise click.ClickException(
            f"{_not_followed(place, exc)}; fix it in the store first"
        ) from None
    try:
        after = change(before)  # a ReleaseInvalid of an edit says what cannot be done
        if after == before:
            return False, after
        data = after.to_json()
        parse(data)  # as instances read it: labels, URIs and pins are checked only there
    except ReleaseInvalid as exc:
        raise click.ClickException(
            f"refused, the release would be invalid: {exc.message}"
        ) from None
    _check_models(place, after)
    try:
        place.source(place.document).write(data, if_match=etag)
    except StoreConflict:
        raise click.ClickException(
            f"the release of {place.name} was changed by someone else since this command "
            f"read it; nothing was written: run the command again"
        ) from None
    return True, after


def _check_models(place: Place, release: Release) -> None:
    """Instances follow no release whose stable or traffic-taking version has no model."""
    missing = missing_model(release.versions, serving(release), place.source)
    if missing is not None:
        raise click.ClickException(
            f"the model of version {missing.label} ({_shown(missing.uri)}) is not in the store: "
            "instances would not follow this release, so it was not written"
        )


# -- the changes -------------------------------------------------------------------------------


def start(place: Place, taken: str) -> Release:
    """Where a first document starts: the release the code declares, if it does; else the
    code's model alone, labelled as the code declares (``Model(version=)``) unless that is
    ``taken`` by the version being added, else ``v1`` (``v0`` if taken)."""
    if place.declared is not None:
        return place.declared
    declared = place.model.version
    candidates = [declared] if declared and LABEL.fullmatch(declared) else []
    label = next(c for c in (*candidates, "v1", "v0") if c != taken)
    uri = _relative(place.document, place.model_uri)
    return Release({label: Version(label, uri, place.model.sha256)}, label, {label: 100.0})


def _relative(document: str, uri: str) -> str:
    """``uri`` as a version of ``document`` names it: by file name when it is in the
    document's folder (as a document beside the model always finds it), else whole."""
    name = urlsplit(uri).path.rsplit("/", 1)[-1]
    return name if name and sibling(document, name) == uri else uri


# -- what a person reads -----------------------------------------------------------------------


def _percent(share: float) -> str:
    p = share * 100
    return f"{p:.0f}%" if math.isclose(p, round(p), abs_tol=0.05) else f"{p:.1f}%"


def describe_split(release: Release) -> str:
    """``v1 90%, v2 10% (stable v1)``."""
    shares = ", ".join(f"{label} {_percent(share)}" for label, share in release.live)
    return f"{shares} (stable {release.stable})"


def _shown(uri: str) -> str:
    return redact.url(uri)  # a SAS in a blob URL is nobody's business on a terminal


def _not_followed(place: Place, exc: ReleaseInvalid) -> str:
    return f"release document {_shown(place.document)} is not followed: {exc.message}"


def _presence(place: Place, uri: str) -> str:
    try:
        place.source(uri).stat()
    except ModelNotInStore:
        return "MISSING"
    except MlfnError as exc:
        return f"unknown ({exc.message})"
    return "in store"


def _show(place: Place) -> None:
    with told():
        try:
            release, _ = read(place)
        except ReleaseInvalid as exc:
            raise click.ClickException(
                f"{_not_followed(place, exc)}; instances keep serving the last good release"
            ) from None
        if release is None and place.declared is not None:
            click.echo(f"{place.name} has no release document: no {_shown(place.document)}")
            click.echo(
                f"it follows the release its code declares: {describe_split(place.declared)}"
            )
            click.echo(f"a document wins once written: mlfn release {place.name} add, split, ...")
            return
        if release is None:
            click.echo(f"{place.name} has no release: no {_shown(place.document)}")
            click.echo(
                f"it serves the model its code names, {place.model.uri} ({_shown(place.model_uri)})"
            )
            click.echo(f"start one: mlfn release {place.name} add LABEL FILE_OR_URI --weight 10")
            return
        shares = dict(release.live)
        rows = [
            (
                label,
                _percent(shares.get(label, 0.0)),
                _shown(v.uri),
                f"sha256 {v.sha256[:12]}" if v.sha256 else "not pinned",
                _presence(place, v.uri),
                "stable" if label == release.stable else "",
            )
            for label, v in sorted(release.versions.items())
        ]
    click.echo(f"release of {place.name}: {_shown(place.document)}")
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo(f"  {'  '.join([*cells, row[5]]).rstrip()}")
    click.echo(f"traffic: {describe_split(release)}")
    for line in _extras(release):
        click.echo(line)
    if place.settings.release_check_s is None:
        click.echo(
            "note: MLFN_RELEASE_CHECK_S=0 here: instances with that setting ignore releases "
            "and serve the code's model"
        )
    # Instances check the stable and live versions' models as this did, and follow no
    # release in which one is missing or cannot be checked.
    for label, _, _, _, presence, stable in rows:
        if presence != "in store" and (label in shares or stable):
            why = "is not in the store" if presence == "MISSING" else f"is {presence}"
            raise click.ClickException(
                f"the model of version {label} {why}: instances do not follow this release "
                "and keep serving the last good one"
            )


def _extras(release: Release) -> list[str]:
    """The shadow, the guardrails and the last rollback, a line each."""
    lines = []
    if release.shadow is not None:
        lines.append(
            f"shadow: {release.shadow.version} on {_percent(release.shadow.share)} of requests"
        )
    rails = release.guardrails
    if rails is not None:
        lines.append(
            f"guardrails: over {rails.window_s:g} s, at least {rails.min_requests} requests: a "
            f"canary's error rate at most {rails.max_error_rate_increase:.1%} above the stable "
            f"one's, its p99 at most {rails.max_p99_ratio:g}x (or "
            f"{rails.min_p99_increase_ms:g} ms more)"
        )
    done = release.rolled_back
    if done is not None:
        lines.append(f"rolled back from {done.version} at {done.at}: {done.reason}")
    return lines


def _changed(place: Place, written: bool, release: Release) -> None:
    if written:
        click.echo(f"wrote {_shown(place.document)}")
    else:
        click.echo("the release already is so: nothing written")
    click.echo(f"{place.name}: {describe_split(release)}")
    for line in _extras(release):
        click.echo(line)


# -- the commands ------------------------------------------------------------------------------

_connection = connection_option(f"{STORE}, else {STORAGE_SETTING},", " (az:// stores)")


@click.group("release", invoke_without_command=True)
@click.argument("name")
@click.pass_context
def release_group(ctx: click.Context, name: str) -> None:
    """Show or change the release of endpoint NAME: the versions of its model side by side
    and how requests are split between them (NAME.release.json beside its model). Alone:
    as show. Traffic is in percent; running instances follow a change within
    MLFN_RELEASE_CHECK_S."""
    ctx.obj = name
    if ctx.invoked_subcommand is None:
        _show(_find(name, None))


def _find(name: str, connection: str | None) -> Place:
    return find(name, connection, Path.cwd())


@release_group.command()
@_connection
@click.pass_obj
def show(name: str, connection: str | None) -> None:
    """Each version (model, pin, whether the store has it), the traffic split and the stable
    version; exit 1 when instances would not follow the document, saying why."""
    _show(_find(name, connection))


def _sha256(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    if value is not None and not SHA256.fullmatch(value):
        raise click.BadParameter("must be 64 lowercase hex digits")
    return value


def _label(_: click.Context, __: click.Parameter, value: str) -> str:
    if not LABEL.fullmatch(value):
        raise click.BadParameter(
            "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


@release_group.command()
@click.argument("label", callback=_label)
@click.argument("source", metavar="FILE_OR_URI")
@click.option(
    "--weight",
    type=click.FloatRange(0, 100),
    default=0,
    help="Percent of requests for it; the other versions share the rest as before. "
    "Default 0: reached by name only, until a split.",
)
@click.option("--sha256", callback=_sha256, help="Pin a store URI's bytes (a FILE is pinned).")
@_connection
@click.pass_obj
def add(
    name: str,
    label: str,
    source: str,
    weight: float,
    sha256: str | None,
    connection: str | None,
) -> None:
    """Add version LABEL: a local FILE, uploaded beside the document as NAME-LABEL-SHA.onnx
    (SHA: its digest's first 12 digits) and pinned by its sha256, or a model already at a
    store URI. The first one starts the release document: from the release the code declares,
    else with the code's model as the stable version."""
    place = _find(name, connection)
    started: list[str] = []

    def change(current: Release | None) -> Release:
        base = current or start(place, label)
        if current is None:
            started.append(base.stable)
        if label in base.versions:
            raise click.ClickException(
                f"{place.name} has a version {label!r} already: remove it first, or choose "
                "another label"
            )
        added = edits.add(base, _version(place, base, label, source, sha256))
        return split(added, {label: weight}) if weight else added

    with told():
        written, now = edit(place, change)
    if started and place.declared is not None:
        click.echo("started the release document from the release the code declares")
    elif started:
        click.echo(f"started the release with the code's model as {started[0]} (stable)")
    _changed(place, written, now)
    if not weight:
        click.echo(f"{label} takes no traffic yet: mlfn release {place.name} split {label}=10")


def _version(
    place: Place, release: Release, label: str, source: str, sha256: str | None
) -> Version:
    """Version ``label`` of ``source``: a local file uploaded beside the document, or a model
    at a store URI (which must exist) recorded as given."""
    path = Path(source)
    if "://" not in source and path.is_file():
        _check_model(place, release, label, path)
        return _upload(place, release, label, path, sha256)
    if "://" not in source and not source.startswith("/"):
        raise click.ClickException(
            f"{source}: no such file, and no store URI (az://, s3://, https://, file:// or an "
            "absolute path)"
        )
    try:
        locate(source, place.settings).stat()
    except ModelNotInStore:
        raise click.ClickException(
            f"{_shown(source)} does not exist: upload it first (mlfn upload), or give a local file"
        ) from None
    with _local(place, source) as here:
        if sha256 is not None and sha256_file(here) != sha256:
            raise click.ClickException(
                f"{_shown(source)} has sha256 {sha256_file(here)}, not the --sha256 given"
            )
        _check_model(place, release, label, here)
    return Version(label, source, sha256)


def _check_model(place: Place, release: Release, label: str, path: Path) -> None:
    """The new version's model loads in onnxruntime and takes and gives what the stable
    version's does (names and types): else every request sent to it would fail."""
    new = _signature(path, f"version {label}'s model")
    with _local(place, release.versions[release.stable].uri) as stable_path:
        old = _signature(stable_path, f"the stable version {release.stable}'s model")
    if new != old:
        raise click.ClickException(
            f"version {label}'s model has inputs {new[0]} and outputs {new[1]}; the stable "
            f"version {release.stable}'s has {old[0]} and {old[1]}: its requests would fail"
        )


def _signature(path: Path, what: str) -> tuple[list[str], list[str]]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types: not JSON, not ONNX, an op unknown
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"{what} is not a model onnxruntime loads: {first}") from None
    return (
        [f"{i.name}:{i.type}" for i in session.get_inputs()],
        [f"{o.name}:{o.type}" for o in session.get_outputs()],
    )


@contextlib.contextmanager
def _local(place: Place, uri: str) -> Iterator[Path]:
    """The model at ``uri`` (beside the document unless absolute) as a file on this machine:
    itself in a local store, else a download that is deleted after."""
    source = place.source(uri)
    here = source.local_path()
    if here is not None:
        yield here
        return
    with tempfile.TemporaryDirectory(prefix="mlfn-release-") as tmp:
        target = Path(tmp) / "model.onnx"
        with target.open("wb") as into:
            source.download(into)
        yield target


def _upload(place: Place, release: Release, label: str, path: Path, sha256: str | None) -> Version:
    digest = sha256_file(path)
    if sha256 is not None and sha256 != digest:
        raise click.ClickException(f"{path} has sha256 {digest}, not the --sha256 given")
    # Named by its content too: an upload never replaces other bytes (another version's, a
    # model uploaded by hand), and one again after a lost race writes the same bytes.
    name = f"{place.name}-{label}-{digest[:12]}.onnx"
    target = place.source(name)
    here = target.local_path()
    with progress_bar(f"uploading {path.name}") as progress:
        if here is None:
            target.upload(path, on_progress=progress, sha256=digest)  # type: ignore[attr-defined]
        elif here.resolve() != path.resolve():
            target.upload(path)  # type: ignore[attr-defined]
    shown = _shown(sibling(place.document, name))
    click.echo(f"uploaded {path} ({path.stat().st_size} bytes) to {shown}")
    return Version(label, name, digest)


def _percents(_: click.Context, __: click.Parameter, value: tuple[str, ...]) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in value:
        label, sep, number = item.partition("=")
        try:
            percent = float(number)
        except ValueError:
            percent = math.nan
        if not sep or not 0 <= percent <= 100:
            raise click.BadParameter(f"{item!r}: give LABEL=PERCENT, a number from 0 to 100")
        if label in found:
            raise click.BadParameter(f"{label} is named twice")
        found[label] = percent
    return found


@release_group.command("split")
@click.argument("weights", nargs=-1, required=True, metavar="LABEL=PERCENT...", callback=_percents)
@_connection
@click.pass_obj
def split_command(name: str, weights: dict[str, float], connection: str | None) -> None:
    """Give versions their percent of requests: those not named that take traffic share the
    rest as before (split v2=10: v2 10%, the others 90%)."""
    _apply(name, connection, lambda r: split(r, weights))


@release_group.command("promote")
@click.argument("label")
@_connection
@click.pass_obj
def promote_command(name: str, label: str, connection: str | None) -> None:
    """Make LABEL the stable version, taking all requests."""
    _apply(name, connection, lambda r: promote(r, label))


@release_group.command("rollback")
@_connection
@click.pass_obj
def rollback_command(name: str, connection: str | None) -> None:
    """Send all requests back to the stable version."""
    _apply(name, connection, rollback)


@release_group.command("remove")
@click.argument("label")
@_connection
@click.pass_obj
def remove_command(name: str, label: str, connection: str | None) -> None:
    """Remove version LABEL (not the stable one); its model stays in the store."""
    _apply(name, connection, lambda r: remove(r, label))


def _apply(name: str, connection: str | None, change: Callable[[Release], Release]) -> None:
    """``change`` made to endpoint NAME's release, which must exist, and the split told."""
    place = _find(name, connection)

    def existing(release: Release | None) -> Release:
        release = release or place.declared  # a first document starts from the code's release
        if release is None:
            raise click.ClickException(
                f"{name} has no release yet: start one with mlfn release {name} add"
            )
        return change(release)

    with told():
        written, now = edit(place, existing)
    _changed(place, written, now)


@release_group.command("shadow")
@click.argument("label", required=False)
@click.option(
    "--percent",
    type=click.FloatRange(0, 100, min_open=True),
    default=100,
    show_default=True,
    help="Percent of requests the shadow scores too.",
)
@click.option("--stop", is_flag=True, help="Stop the shadow.")
@_connection
@click.pass_obj
def shadow_command(
    name: str, label: str | None, percent: float, stop: bool, connection: str | None
) -> None:
    """Score PERCENT of requests with version LABEL too, after each is answered, and compare
    its predictions with the answer's (one log line a period on each instance, and metrics);
    it never changes an answer. --stop ends it."""
    if stop == (label is not None):
        raise click.UsageError("give a LABEL to shadow, or --stop")
    _apply(name, connection, lambda r: edits.shadow(r, None if stop else label, percent))


@release_group.command("guard")
@click.option("--window-s", type=click.FloatRange(0, min_open=True), default=60, show_default=True)
@click.option("--min-requests", type=click.IntRange(1), default=20, show_default=True)
@click.option(
    "--max-error-rate-increase", type=click.FloatRange(0, 100), default=5, show_default=True,
    help="Percentage points a canary's error rate may exceed the stable version's.",
)  # fmt: skip
@click.option(
    "--max-p99-ratio", type=click.FloatRange(1), default=2, show_default=True,
    help="How many times the stable version's p99 latency a canary's may reach.",
)  # fmt: skip
@click.option(
    "--min-p99-increase-ms", type=click.FloatRange(0), default=10, show_default=True,
    help="How much slower (p99) a canary must also be, in milliseconds, to be rolled back.",
)  # fmt: skip
@click.option("--off", is_flag=True, help="No guardrails.")
@_connection
@click.pass_obj
def guard_command(
    name: str,
    window_s: float,
    min_requests: int,
    max_error_rate_increase: float,
    max_p99_ratio: float,
    min_p99_increase_ms: float,
    off: bool,
    connection: str | None,
) -> None:
    """Roll a canary back on its own when, over the last WINDOW_S seconds on an instance, its
    error rate or p99 latency is worse than the stable version's by more than allowed: that
    instance rewrites the release (all traffic to the stable version, and why), and every
    instance follows."""
    rails = Guardrails(
        window_s, min_requests, max_error_rate_increase / 100, max_p99_ratio, min_p99_increase_ms
    )
    _apply(name, connection, lambda r: edits.guard(r, None if off else rails))
