"""One endpoint's release as an instance follows it: read from the model store on the first
request, then again (by ETag, so an unchanged document costs a 304) at most every
``MLFN_RELEASE_CHECK_S`` seconds, in the background. A request reads one attribute, ``routes``,
swapped whole when a new document is followed: no lock on the warm path.

A document that cannot be followed (not JSON, a field wrong, a live version whose model is not
in the store) and a store that cannot be reached leave the last good release serving, with one
log line per distinct reason. A deleted document returns the endpoint to its code's model.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from runtime.config import Settings
from runtime.errors import MlfnError, ModelNotInStore, ReleaseInvalid
from runtime.model_store import ModelSource, locate, resolve_uri
from runtime.models.reference import Model
from runtime.releases.document import MAX_DOCUMENT_BYTES, Release, Version, parse
from runtime.releases.stored import missing_model, serving

log = logging.getLogger("mlfn.releases")


def follow_all(
    models: Iterable[tuple[str, Model, Release | None]], settings: Settings, app_root: Path
) -> dict[str, Follower]:
    """Each endpoint's release document, followed; none with ``MLFN_RELEASE_CHECK_S=0``, nor
    for a model whose place cannot be told (a relative path without ``MLFN_MODEL_STORE``: its
    load says so)."""
    every = settings.release_check_s
    if every is None:
        return {}
    found = {}
    for name, ref, declared in models:
        try:
            model_uri = resolve_uri(ref.uri, settings, app_root)
        except MlfnError:
            continue
        document = document_uri(name, model_uri)
        find = lambda uri: locate(uri, settings)  # noqa: E731
        found[name] = Follower(name, document, find, every, settings.load_timeout_s, declared)
    return found


def describe(release: Release) -> str:
    """``v1=90%, v2=10% (stable v1)``, and what else the release holds, for the log."""
    split = ", ".join(f"{label}={share:.0%}" for label, share in release.live)
    said = f"{split} (stable {release.stable})"
    idle = sorted(set(release.versions) - {label for label, _ in release.live})
    if idle:
        said += f"; by name only: {', '.join(idle)}"
    if release.shadow is not None:
        said += f"; shadow {release.shadow.version} on {release.shadow.share:.0%}"
    if release.guardrails is not None:
        said += "; guardrails on"
    return said


def document_uri(endpoint: str, model_uri: str) -> str:
    """Where an endpoint's release document lives: ``NAME.release.json`` in the folder of the
    endpoint's model (its absolute URI; a blob URL keeps its query, the SAS)."""
    return sibling(model_uri, f"{endpoint}.release.json")


def sibling(uri: str, relative: str) -> str:
    """``relative`` resolved against the folder of ``uri``; an absolute one as it is."""
    if "://" in relative or relative.startswith("/"):
        return relative
    parts = urlsplit(uri)
    if not parts.scheme:  # a plain absolute path
        return f"{uri.rsplit('/', 1)[0]}/{relative}"
    folder = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{folder}/{relative}", parts.query, ""))


@dataclass(frozen=True)
class Routes:
    """A followed release: its versions with absolute URIs, and the split as cumulative
    shares, so a pick is one bisection."""

    release: Release
    versions: dict[str, Version]
    labels: tuple[str, ...]
    bounds: tuple[float, ...]

    @classmethod
    def of(cls, release: Release, document: str) -> Routes:
        versions = {
            label: Version(label, sibling(document, v.uri), v.sha256)
            for label, v in release.versions.items()
        }
        labels, bounds, total = [], [], 0.0
        for label, share in release.live:
            total += share
            labels.append(label)
            bounds.append(total)
        return cls(release, versions, tuple(labels), tuple(bounds))

    def pick(self, key: str | None) -> Version:
        """A live version, by its share: the same one for the same key, at random without."""
        if len(self.labels) == 1:
            return self.versions[self.labels[0]]
        unit = _unit(key) if key else random.random()
        i = min(bisect.bisect_right(self.bounds, unit), len(self.labels) - 1)
        return self.versions[self.labels[i]]

    @property
    def stable(self) -> Version:
        return self.versions[self.release.stable]


def _unit(key: str) -> float:
    """A key's fixed place in [0, 1): the same on every instance and every run."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Follower:
    """The release document of one endpoint, followed. ``routes`` is None while there is no
    document (the endpoint serves its code's model)."""

    def __init__(
        self,
        endpoint: str,
        uri: str,
        locate: Callable[[str], ModelSource],
        every_s: float,
        first_wait_s: float = 30.0,
        declared: Release | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.declared = declared  # the code's release: followed while there is no document
        self.uri = uri
        self.routes: Routes | None = None
        self.read = False  # the first request reads the document before it is routed
        self.check_at = 0.0
        self.first_wait_s = first_wait_s
        self._locate = locate
        self._every = every_s
        self._etag: str | None = None
        self._lock = threading.Lock()
        self._lock_first = threading.Lock()
        self._checking = False
        self._first: Future[None] | None = None
        self._late = False
        self._told: str | None = None  # the last reason logged, so each is said once

    def first_read(self) -> Future[None]:
        """The first read of the document, started once, on its own thread, whoever asks
        (single flight: concurrent first requests wait for one read, not a thread each)."""
        with self._lock_first:
            if self._first is None:
                first: Future[None] = Future()
                self._first = first

                def run() -> None:
                    try:
                        self.refresh()
                    finally:
                        first.set_result(None)

                threading.Thread(target=run, name="mlfn-release-first", daemon=True).start()
            return self._first

    def wait_first_read(self) -> None:
        """On a thread that may block: the first read done, or ``first_wait_s`` gone."""
        if self.read or self._late:
            return
        try:
            self.first_read().result(timeout=self.first_wait_s)
        except FutureTimeout:
            self.late()

    @property
    def is_late(self) -> bool:
        return self._late

    def late(self) -> None:
        """The first read took longer than ``first_wait_s`` (a store that does not answer):
        requests stop waiting for it, and the code's model serves until it ends."""
        self._late = True
        self._said(f"release document {self.uri} not read in {self.first_wait_s:g} s")

    def source(self) -> ModelSource:
        """The document in its store, to write (the guardrails' rollback)."""
        return self._locate(self.uri)

    def due(self) -> bool:
        return time.monotonic() >= self.check_at

    def current(self) -> Routes | None:
        """The release as followed now, read again in the background when a read is due (once
        the first read is done: see ``first_read``)."""
        if self.read and self.due():
            self.refresh_soon()
        return self.routes

    def refresh(self) -> None:
        """Read the document now (on a thread that may block), unless another caller is."""
        with self._lock:
            try:
                self._refresh()
            finally:
                self.read = True
                self.check_at = time.monotonic() + self._every
                self._checking = False

    def refresh_soon(self) -> None:
        """Read the document again in the background, if no read is under way."""
        if self._checking:
            return
        self._checking = True
        self.check_at = time.monotonic() + self._every  # no second thread meanwhile
        try:
            threading.Thread(target=self.refresh, name="mlfn-release", daemon=True).start()
        except BaseException:  # no thread to be had: the next request tries again
            self._checking = False
            raise

    def _refresh(self) -> None:
        try:
            found = self._locate(self.uri).read(
                MAX_DOCUMENT_BYTES, self._etag if self.routes else None
            )
        except ModelNotInStore:
            self._undocumented()
            return
        except (MlfnError, ValueError, ImportError) as exc:  # ImportError: a store's extra
            self._said(f"cannot read release document {self.uri}: {exc}")
            return
        if found is None:  # unchanged
            return
        data, stored = found
        try:
            routes = Routes.of(parse(data), self.uri)
            self._check_models(routes)
        except ReleaseInvalid as exc:
            self._said(f"release document {self.uri} not followed: {exc.message}")
            return
        except MlfnError as exc:
            self._said(f"release document {self.uri} not followed: {exc}")
            return
        before = self.routes
        self.routes, self._etag = routes, stored.etag
        self._said(None)
        if before is None or before.release != routes.release:
            log.info("release of %s followed: %s", self.endpoint, describe(routes.release))

    def _undocumented(self) -> None:
        """No document (or no longer one): the release the code declares, else its model."""
        was_documented = self._etag is not None
        self._etag = None
        if self.declared is None:
            if self.routes is not None:
                log.warning(
                    "release document of %s was removed; serving the model its code names",
                    self.endpoint,
                )
            self.routes = None
            self._said(None)
            return
        if self.routes is not None and not was_documented:
            return  # the declared release, followed already
        try:
            routes = Routes.of(self.declared, self.uri)
            self._check_models(routes)
        except MlfnError as exc:
            self._said(f"the release {self.endpoint}'s code declares is not followed: {exc}")
            return
        self.routes = routes
        self._said(None)
        log.info("release of %s followed as its code declares it (no document)", self.endpoint)

    def _check_models(self, routes: Routes) -> None:
        """Every version the release sends work to has its model in the store (those already
        followed are known to be)."""
        known = self.routes.versions if self.routes else None
        missing = missing_model(routes.versions, serving(routes.release), self._locate, known)
        if missing is not None:
            raise ReleaseInvalid(
                f"versions.{missing.label}.uri", f"model {missing.uri} does not exist in its store"
            )

    def _said(self, problem: str | None) -> None:
        if problem is not None and problem != self._told:
            log.error("%s; the last good release keeps serving", problem)
        self._told = problem
