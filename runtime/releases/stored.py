"""A release document in its store, as every writer reads it (``mlfn release``, the guardrails'
rollback) and as every reader checks its versions' models (those writers, and the instances
that follow it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from runtime.errors import ModelNotInStore, ReleaseInvalid
from runtime.model_store import ModelSource
from runtime.releases.document import MAX_DOCUMENT_BYTES, Release, Version, parse


def read_release(source: ModelSource) -> tuple[Release | None, str | None]:
    """The release and its document's ETag; (None, None) without a document. ``ReleaseInvalid``
    for one that cannot be followed as written."""
    try:
        found = source.read(MAX_DOCUMENT_BYTES)
    except ModelNotInStore:
        return None, None
    except ValueError:  # past the limit: read no further, say it as parse says it
        raise ReleaseInvalid("(document)", f"holds more than {MAX_DOCUMENT_BYTES} bytes") from None
    assert found is not None  # only a read with if_none_match can answer "unchanged"
    data, stored = found
    return parse(data), stored.etag


def missing_model(
    versions: Mapping[str, Version],
    labels: Iterable[str],
    locate: Callable[[str], ModelSource],
    known: Mapping[str, Version] | None = None,
) -> Version | None:
    """The first of ``labels`` whose model is not in its store (those in ``known``, checked
    before, are not asked again); None when every one is there. Instances follow no release
    that would send requests (or its bulk work) to a model that is not there."""
    for label in labels:
        version = versions[label]
        if known is not None and known.get(label) == version:
            continue
        try:
            locate(version.uri).stat()
        except ModelNotInStore:
            return version
    return None


def serving(release: Release) -> list[str]:
    """The versions a release sends work to: the stable one and those taking traffic."""
    return sorted({release.stable, *(label for label, _ in release.live)})
