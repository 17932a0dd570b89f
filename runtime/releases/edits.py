"""The changes a release goes through, as pure functions of a ``Release``: what ``mlfn release``
writes and the guardrails' rollback. Traffic is given in percent: ``split(r, {"v2": 10})`` gives
v2 10% of requests and the other versions that take traffic share the other 90% as they shared
theirs before. What cannot be done is ``ReleaseInvalid``, naming the field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from runtime.errors import ReleaseInvalid
from runtime.releases.document import Guardrails, Release, RolledBack, Shadow, Version

EPSILON = 1e-9  # percentages are floats: 33.3 + 33.3 + 33.4 may not add to exactly 100


def add(release: Release, version: Version) -> Release:
    """``version`` beside the others, taking no traffic yet."""
    if version.label in release.versions:
        raise ReleaseInvalid(
            f"versions.{version.label}", "exists already: remove it first, or choose another label"
        )
    return replace(release, versions={**release.versions, version.label: version})


def split(release: Release, percents: Mapping[str, float]) -> Release:
    """``percents`` of the traffic to the versions named; the versions not named that take
    traffic share the rest in their present proportions."""
    known(release, percents, "weights")
    given = sum(percents.values())
    if given > 100 + EPSILON:
        raise ReleaseInvalid("weights", f"the weights given add to {given:g}%, more than 100%")
    others = {k: w for k, w in release.weights.items() if k not in percents and w > 0}
    rest = 100 - given
    if rest > EPSILON and not others:
        named = " ".join(f"{k}={w:g}" for k, w in percents.items())
        raise ReleaseInvalid(
            "weights",
            f"{named} leaves {rest:g}% to no version: no other version takes traffic, so the "
            "weights must add to 100",
        )
    weights = {k: float(w) for k, w in percents.items() if w > 0}
    if rest > EPSILON:
        total = sum(others.values())
        weights.update({k: round(rest * w / total, 6) for k, w in others.items()})
    return replace(release, weights=weights)


def promote(release: Release, label: str) -> Release:
    """``label`` becomes the stable version and takes all traffic; a shadow of it ends (it
    would shadow the version that answers)."""
    known(release, [label])
    shadow = release.shadow if release.shadow is None or release.shadow.version != label else None
    return replace(release, stable=label, weights={label: 100.0}, shadow=shadow)


def rollback(release: Release, why: RolledBack | None = None) -> Release:
    """All traffic back to the stable version; ``why`` recorded (the guardrails' verdict)."""
    return replace(release, weights={release.stable: 100.0}, rolled_back=why or release.rolled_back)


def remove(release: Release, label: str) -> Release:
    """Version ``label`` gone; the others share its traffic as they share the rest."""
    known(release, [label])
    if label == release.stable:
        raise ReleaseInvalid("stable", f"{label} is the stable version: promote another one first")
    if release.shadow is not None and release.shadow.version == label:
        raise ReleaseInvalid("shadow", f"{label} is the shadow: stop the shadow first")
    kept = {k: w for k, w in release.weights.items() if k != label and w > 0}
    if not kept:
        raise ReleaseInvalid(
            "weights", f"{label} takes all the traffic: rollback or split first, then remove it"
        )
    total = sum(kept.values())
    weights = {k: round(100 * w / total, 6) for k, w in kept.items()}  # percent again
    versions = {k: v for k, v in release.versions.items() if k != label}
    return replace(release, versions=versions, weights=weights)


def shadow(release: Release, label: str | None, percent: float = 100.0) -> Release:
    """``label`` shadows ``percent`` of requests (None: no shadow)."""
    if label is None:
        return replace(release, shadow=None)
    known(release, [label])
    if not 0 < percent <= 100:
        raise ReleaseInvalid("shadow.share", "a percent above 0, at most 100")
    return replace(release, shadow=Shadow(label, round(percent / 100, 6)))


def guard(release: Release, rails: Guardrails | None) -> Release:
    """Guardrails on (or off, with None)."""
    return replace(release, guardrails=rails)


def known(release: Release, labels: Iterable[str], field: str = "versions") -> None:
    unknown = [k for k in labels if k not in release.versions]
    if unknown:
        raise ReleaseInvalid(
            f"{field}.{unknown[0]}",
            f"no such version in this release; versions: {', '.join(release.versions)}",
        )
