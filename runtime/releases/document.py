"""The release document of one endpoint: which versions of its model exist, how requests are
split between them, and which one is stable. JSON in the model store, next to the model::

    {"versions": {"v1": {"uri": "iris.onnx", "sha256": "..."},
                  "v2": {"uri": "iris-v2.onnx"}},
     "stable": "v1",
     "weights": {"v1": 90, "v2": 10}}

A version's ``uri`` is relative to the document's folder unless it is absolute (a scheme or a
leading ``/``). Weights are relative shares (90/10 and 9/1 split alike); a version without one
takes no traffic and is reached only by name (V2's ``versions/VERSION/`` routes). Everything a
document can get wrong is a ``ReleaseInvalid`` naming the field, so a bad edit is refused by
``mlfn release`` and, written by hand, leaves the last good release serving.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.errors import ReleaseInvalid
from runtime.models.reference import SHA256, Model

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_VERSIONS = 16


@dataclass(frozen=True)
class Version:
    """One version of the endpoint's model: its label and where its bytes are."""

    label: str
    uri: str
    sha256: str | None = None

    def model(self, providers: tuple[str, ...] | None = None) -> Model:
        return Model(self.uri, sha256=self.sha256, version=self.label, providers=providers)


@dataclass(frozen=True)
class Shadow:
    """A version that also scores a share of requests, after they are answered, to be
    compared with the version that answered; it never changes an answer."""

    version: str
    share: float = 1.0


@dataclass(frozen=True)
class Guardrails:
    """When a canary (a live version other than the stable one) is rolled back: over the last
    ``window_s`` seconds, with at least ``min_requests`` on both it and the stable version, its
    error rate above the stable one's by more than ``max_error_rate_increase``, or its p99
    latency above ``max_p99_ratio`` times the stable one's and by more than
    ``min_p99_increase_ms`` (a ratio of two sub-millisecond figures is noise)."""

    window_s: float = 60.0
    min_requests: int = 20
    max_error_rate_increase: float = 0.05
    max_p99_ratio: float = 2.0
    min_p99_increase_ms: float = 10.0


@dataclass(frozen=True)
class RolledBack:
    """What the guardrails did last: which version they took traffic from, why, and when."""

    version: str
    reason: str
    at: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Release:
    """A parsed, checked release document."""

    versions: dict[str, Version]
    stable: str
    weights: dict[str, float] = field(default_factory=dict)
    shadow: Shadow | None = None
    guardrails: Guardrails | None = None
    rolled_back: RolledBack | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def live(self) -> list[tuple[str, float]]:
        """The versions that take traffic and their shares of it (summing to 1), in label
        order, so every instance splits the same way."""
        total = sum(self.weights.values())
        return [(label, w / total) for label, w in sorted(self.weights.items()) if w > 0]

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "versions": {
                v.label: {"uri": v.uri, **({"sha256": v.sha256} if v.sha256 else {})}
                for v in self.versions.values()
            },
            "stable": self.stable,
            "weights": {k: _number(w) for k, w in sorted(self.weights.items())},
        }
        if self.shadow is not None:
            doc["shadow"] = {"version": self.shadow.version, "share": _number(self.shadow.share)}
        if self.guardrails is not None:
            doc["guardrails"] = {k: _number(v) for k, v in asdict(self.guardrails).items()}
        if self.rolled_back is not None:
            doc["rolled_back"] = asdict(self.rolled_back)
        return json.dumps(doc, indent=2).encode() + b"\n"


def parse(data: bytes) -> Release:
    """A release document's bytes as a ``Release``; ``ReleaseInvalid`` naming what is wrong."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ReleaseInvalid("(document)", f"holds {len(data)} bytes; at most {MAX_DOCUMENT_BYTES}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested past the stack
        raise ReleaseInvalid("(document)", f"is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReleaseInvalid("(document)", "must be a JSON object")
    unknown = sorted(set(doc) - {*_FIELDS, "rolled_back"})
    if unknown:
        raise ReleaseInvalid(unknown[0], "is not a field of a release document")
    raw_versions = doc.get("versions")
    if not isinstance(raw_versions, dict) or not raw_versions:
        raise ReleaseInvalid("versions", "must be an object of at least one version by label")
    versions = {label: _version(label, raw) for label, raw in raw_versions.items()}
    stable = doc.get("stable")
    if not isinstance(stable, str):
        raise ReleaseInvalid("stable", "must be the label of a version")
    raw_weights = doc.get("weights", {stable: 1})
    if not isinstance(raw_weights, dict):
        raise ReleaseInvalid("weights", "must be an object of version label to share")
    weights = {label: _weight(label, w) for label, w in raw_weights.items()}
    return Release(
        versions,
        stable,
        weights,
        _shadow(doc.get("shadow")),
        _guardrails(doc.get("guardrails")),
        _rolled_back(doc.get("rolled_back")),
    )


_FIELDS = ("versions", "stable", "weights", "shadow", "guardrails")


def _shadow(raw: Any) -> Shadow | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ReleaseInvalid("shadow", 'must be an object {"version": ..., "share": ...}')
    _known("shadow", raw, ("version", "share"))
    version, share = raw.get("version"), raw.get("share", 1.0)
    if not isinstance(version, str):
        raise ReleaseInvalid("shadow.version", "must be the label of a version")
    if not _is_number(share) or not 0 < share <= 1:
        raise ReleaseInvalid("shadow.share", "must be a number above 0, at most 1")
    return Shadow(version, float(share))


def _guardrails(raw: Any) -> Guardrails | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ReleaseInvalid("guardrails", "must be an object")
    _known("guardrails", raw, tuple(Guardrails.__dataclass_fields__))
    made = Guardrails(**raw)
    for name, value in asdict(made).items():
        if not _is_number(value) or not 0 <= value < float("inf"):
            raise ReleaseInvalid(f"guardrails.{name}", "must be a finite number, 0 or more")
    if made.window_s <= 0 or made.max_p99_ratio < 1:
        what = "window_s" if made.window_s <= 0 else "max_p99_ratio"
        raise ReleaseInvalid(f"guardrails.{what}", "window_s above 0, max_p99_ratio 1 or more")
    if made.min_requests != int(made.min_requests):
        raise ReleaseInvalid("guardrails.min_requests", "must be a whole number")
    return made


def _rolled_back(raw: Any) -> RolledBack | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), str) for k in ("version", "reason", "at")
    ):
        raise ReleaseInvalid("rolled_back", "must be an object of version, reason and at (text)")
    _known("rolled_back", raw, ("version", "reason", "at"))
    return RolledBack(raw["version"], raw["reason"], raw["at"])


def _known(where: str, raw: dict[str, Any], fields: tuple[str, ...]) -> None:
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ReleaseInvalid(f"{where}.{unknown[0]}", f"is not a field of {where}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def single(label: str, uri: str, sha256: str | None) -> Release:
    """A release of one version taking every request: where ``mlfn release`` starts."""
    return Release({label: Version(label, uri, sha256)}, label, {label: 1})


def _version(label: Any, raw: Any) -> Version:
    where = f"versions.{label}"
    _label(where, label)
    if not isinstance(raw, dict):
        raise ReleaseInvalid(where, 'must be an object {"uri": ..., "sha256": ...}')
    unknown = sorted(set(raw) - {"uri", "sha256"})
    if unknown:
        raise ReleaseInvalid(f"{where}.{unknown[0]}", "is not a field of a version")
    uri, sha256 = raw.get("uri"), raw.get("sha256")
    if not isinstance(uri, str) or not uri.strip():
        raise ReleaseInvalid(f"{where}.uri", "must be the model's path or URI")
    if sha256 is not None and (not isinstance(sha256, str) or not SHA256.fullmatch(sha256)):
        raise ReleaseInvalid(f"{where}.sha256", "must be 64 lowercase hex digits")
    return Version(label, uri, sha256)


def _label(where: str, label: Any) -> None:
    if not isinstance(label, str) or not LABEL.fullmatch(label):
        raise ReleaseInvalid(
            where,
            "a label is 1-64 letters, digits, '.', '_' or '-', starting with one of the first two",
        )


def _weight(label: Any, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw >= 0:
        raise ReleaseInvalid(f"weights.{label}", "must be a number, 0 or more")
    if raw == float("inf"):
        raise ReleaseInvalid(f"weights.{label}", "must be finite")
    return float(raw)


def _check(release: Release) -> None:
    if not release.versions:
        raise ReleaseInvalid("versions", "must be an object of at least one version by label")
    if len(release.versions) > MAX_VERSIONS:
        raise ReleaseInvalid("versions", f"at most {MAX_VERSIONS} versions")
    for label, version in release.versions.items():
        where = f"versions.{label}"
        _label(where, label)
        if version.label != label:
            raise ReleaseInvalid(where, f"is labelled {version.label!r}")
        if not version.uri.strip():
            raise ReleaseInvalid(f"{where}.uri", "must be the model's path or URI")
        if version.sha256 is not None and not SHA256.fullmatch(version.sha256):
            raise ReleaseInvalid(f"{where}.sha256", "must be 64 lowercase hex digits")
    if release.stable not in release.versions:
        raise ReleaseInvalid("stable", f"{release.stable!r} is not one of the versions")
    for label in release.weights:
        if label not in release.versions:
            raise ReleaseInvalid(f"weights.{label}", "is not one of the versions")
    if not any(w > 0 for w in release.weights.values()):
        raise ReleaseInvalid("weights", "at least one version must take traffic")
    if release.shadow is not None and release.shadow.version not in release.versions:
        raise ReleaseInvalid(
            "shadow.version", f"{release.shadow.version!r} is not one of the versions"
        )


def _number(w: float) -> float | int:
    return int(w) if float(w).is_integer() else float(w)
