"""One endpoint's requests under its release: each routed to a version's scorer (its own model,
runs and batcher), watched by the guardrails, and shadowed by the shadow version after the answer
is given. Only an endpoint with a release document comes here: the warm path without one never
does (``Scorer.predict_body`` checks two attributes)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel

from runtime import telemetry
from runtime.errors import DeadlineExceeded, Overloaded
from runtime.models.registry import ModelRegistry, version_key
from runtime.models.warm import import_in_background
from runtime.releases.document import Version
from runtime.releases.follow import Follower, Routes
from runtime.releases.shadow import Tally, compare
from runtime.scheduling import Deadline
from runtime.scored import Scored

if TYPE_CHECKING:
    from runtime.releases.guard import Figures
    from runtime.services.predict import Scorer

log = logging.getLogger("mlfn.releases")

# Rows waiting for the shadow per endpoint: a shadow at 100% of a busy endpoint compares what
# its one thread can and counts the rest as skipped, rather than starve the live version or
# grow a queue.
MAX_SHADOW_ROWS = 1024
# Rows scored together by the shadow: few, so its Python between model runs (encoding and
# comparing predictions, with the GIL) stays short for the live requests' thread.
SHADOW_BATCH = 4
SHADOW_REST = 19.0
JUDGE_EVERY_S = 1.0
ROLLBACK_RETRY_S = 30.0  # after a rollback that could not be written (a read-only identity)


class Releasing:
    def __init__(self, primary: Scorer, follower: Follower, registry: ModelRegistry) -> None:
        self.primary = primary
        self.follower = follower
        self._registry = registry
        self._versions: dict[str, Scorer] = {}
        self._shadows: dict[str, Scorer] = {}  # the shadow's scorers: sessions of one thread
        self._pruned_for: Routes | None = None
        self._rollback_failed: str | None = None
        self._figures: dict[str, Figures] = {}
        self._figures_of: Routes | None = None
        self._judged_at = 0.0
        self._rolling = False
        self.tally = Tally(primary.name)
        batch = min(SHADOW_BATCH, primary.bound.endpoint.limits.max_batch_size)
        self.shadows = Shadows(self.tally, batch)

    async def route(self, key: str | None) -> Scorer:
        """The scorer of the version the release gives a request; the primary (the code's
        model) while there is no release document. The first request reads it first."""
        if not self.follower.read:
            await first_read(self.follower)
        routes = self._followed()
        return self.primary if routes is None else self._version(routes.pick(key))

    def retry_in(self) -> float:
        """The longest wait before a failed load of one of the versions is tried again."""
        kept = (*self._versions.values(), *self._shadows.values())
        return max((self._registry.retry_in(s.model_key) for s in kept), default=0.0)

    def _prune(self, routes: Routes) -> None:
        """A new release: versions it no longer has (or points elsewhere) unloaded, once their
        last request ends."""
        self._pruned_for = routes
        for kept in (self._versions, self._shadows):
            for label, scorer in list(kept.items()):
                if routes.versions.get(label) != scorer.made_for:
                    del kept[label]
                    self._registry.unload(scorer.model_key)

    def stable(self) -> Scorer:
        """The scorer of the release's stable version (the bulk paths'), on a thread that may
        block for the document's first read."""
        self.follower.wait_first_read()
        routes = self._followed()
        return self.primary if routes is None else self._version(routes.stable)

    def _followed(self) -> Routes | None:
        """The release as followed now (read again in the background when due); the versions
        it no longer has unloaded once, when it changes."""
        routes = self.follower.current()
        if routes is None:
            self._unreleased()
        elif routes is not self._pruned_for:
            self._prune(routes)
        return routes

    async def predict(
        self,
        instances: list[BaseModel],
        key: str | None,
        bounded: bool,
        deadline: Deadline | None = None,
        bulk: bool = False,
    ) -> Scored:
        """Score validated instances with the version the release gives them: by ``key`` (a
        request's header), else the endpoint's ``route_key`` field of the first instance."""
        field = self.primary.bound.endpoint.route_key
        if key is None and field is not None:
            value = getattr(instances[0], field, None)
            key = None if value is None else str(value)
        target = await self.route(key)
        routes = self.follower.routes
        if routes is None:
            return await target.batcher.submit(
                instances, bounded=bounded, deadline=deadline, bulk=bulk
            )
        label = target.version
        tel = telemetry.current()
        if tel.on:
            tel.set("mlfn.model.version", label)
            invocation = telemetry.current_invocation()
            if invocation is not None:
                invocation.version = label
        watched = routes.release.guardrails is not None
        started = time.perf_counter()
        try:
            scored = await target.batcher.submit(
                instances, bounded=bounded, deadline=deadline, bulk=bulk
            )
        except BaseException as exc:
            if watched:
                self._observe(routes, label, _versions_fault(exc), started)
            raise
        if watched:
            self._observe(routes, label, False, started)
        shadow = routes.release.shadow
        if shadow is not None and shadow.version != label and random.random() < shadow.share:
            self._shadow(routes.versions[shadow.version], label, instances, scored)
        return scored

    def _version(self, version: Version, shadow: bool = False) -> Scorer:
        """The scorer of one version, made on its first request: the primary's validation
        shared, its own model, runs and batcher. A label whose model changed in the document
        is a new one; the old is unloaded once idle. A shadow's is a session of its own with
        one thread (``Model(threads=1)``, so another ``NAME@LABEL#HASH``): its runs never
        contend with the live version's thread pool, whose spinning threads would otherwise
        share the CPUs with it."""
        primary = self.primary
        kept = self._shadows if shadow else self._versions
        found = kept.get(version.label)
        if found is not None and found.made_for is version:  # every request: no Model made
            return found
        ref = version.model(primary.model_ref.providers)
        if shadow:
            ref = dataclasses.replace(ref, threads=1)
        if found is not None and found.model_ref == ref:
            found.made_for = version
            return found
        if not self._versions and not self._shadows:  # the release takes over from the code's
            self._registry.unload(primary.model_key)
        made = copy.copy(primary)
        made.release, made.made_for = None, version
        made.quiet = shadow  # the shadow's failures are the tally's, said once
        made.serve(version_key(primary.name, version.label, ref), ref)
        kept[version.label] = made
        if found is not None:
            self._registry.unload(found.model_key)
        return made

    def _unreleased(self) -> None:
        """The release document gone: its versions' models unloaded once idle."""
        for kept in (self._versions, self._shadows):
            while kept:
                _, dropped = kept.popitem()
                self._registry.unload(dropped.model_key)

    def _observe(self, routes: Routes, label: str, failed: bool, started: float) -> None:
        """Count a request of ``label`` for the guardrails; judge at most once a second."""
        rails = routes.release.guardrails
        assert rails is not None
        now = time.monotonic()
        if self._figures_of is not routes:  # a new release: judged on its own requests
            self._figures, self._figures_of = {}, routes
        figures = self._figures.get(label)
        if figures is None:
            from runtime.releases.guard import Figures  # a release with guardrails only

            figures = self._figures[label] = Figures(rails.window_s)
        figures.record(now, failed, time.perf_counter() - started)
        if now - self._judged_at < JUDGE_EVERY_S or self._rolling:
            return
        self._judged_at = now
        from runtime.releases.guard import verdict

        seen = {name: f.summary(now) for name, f in self._figures.items()}
        found = verdict(routes.release, seen)
        if found is not None:
            self._rolling = True
            threading.Thread(
                target=self._roll_back, args=found, name="mlfn-rollback", daemon=True
            ).start()

    def _roll_back(self, canary: str, reason: str) -> None:
        from runtime.releases.guard import rollback

        try:
            rollback(self.follower.source(), canary, reason, self.primary.name)
            self.follower.refresh()  # this instance at once; the others within their check
            self._rollback_failed = None
        except Exception as exc:  # tried again after a rest, said once per reason
            said = f"rolling back {canary} of {self.primary.name} failed: {exc}"
            if said != self._rollback_failed:
                log.error("%s; tried again every %g s", said, ROLLBACK_RETRY_S)
            self._rollback_failed = said
            self._judged_at = time.monotonic() + ROLLBACK_RETRY_S
        else:
            telemetry.current().rolled_back(self.primary.name, canary)
        finally:
            self._rolling = False

    def _shadow(
        self, version: Version, live: str, instances: list[BaseModel], scored: Scored
    ) -> None:
        """Hand ``instances`` and their answer to the shadow's thread, after this request is
        answered."""
        self.shadows.offer(self._version(version, shadow=True), live, instances, scored.predictions)


class _Shadowed(NamedTuple):
    scorer: Scorer
    live: str
    instances: list[BaseModel]
    predictions: list[bytes]


class Shadows:
    """The shadow's work of one endpoint: one thread, started when there is work and ending
    when there is none, scoring the waiting requests' rows together (up to the endpoint's batch
    size) and comparing each request's with its answer. At most MAX_SHADOW_ROWS rows wait;
    a request beyond that is not shadowed and is counted as skipped, so a shadow at 100% of a
    busy endpoint takes one thread's share of the machine, never a growing queue."""

    def __init__(self, tally: Tally, batch: int) -> None:
        self.tally = tally
        self.idle = threading.Event()  # no work waiting or running (for tests and tools)
        self.idle.set()
        self._batch = batch
        self._waiting: deque[_Shadowed] = deque()
        self._rows = 0
        self._running = False
        self._lock = threading.Lock()

    def offer(
        self, scorer: Scorer, live: str, instances: list[BaseModel], predictions: list[bytes]
    ) -> None:
        with self._lock:
            if self._rows + len(instances) > MAX_SHADOW_ROWS:
                self.tally.skip()
                return
            self._waiting.append(_Shadowed(scorer, live, instances, predictions))
            self._rows += len(instances)
            if self._running:
                return
            self._running = True
            self.idle.clear()
        try:
            threading.Thread(target=self._drain, name="mlfn-shadow", daemon=True).start()
        except BaseException:  # no thread to be had: the next offer tries again
            with self._lock:
                self._running = False
            raise

    def _drain(self) -> None:
        try:
            self._drain_waiting()
        finally:  # whatever happened, the next offer starts a thread again
            with self._lock:
                self._running = False
                self._waiting.clear()
                self._rows = 0
                self.idle.set()

    def _drain_waiting(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    return
                group = [self._waiting.popleft()]
                rows = len(group[0].instances)
                while (
                    self._waiting
                    and self._waiting[0].scorer is group[0].scorer
                    and rows + len(self._waiting[0].instances) <= self._batch
                ):
                    group.append(self._waiting.popleft())
                    rows += len(group[-1].instances)
                self._rows -= rows
            self._score(group)

    def _score(self, group: list[_Shadowed]) -> None:
        other = group[0].scorer
        started = time.perf_counter()
        try:
            other.load()  # a first load is not work to rest after
            started = time.perf_counter()
            self._compare(group, other.run_sync([i for item in group for i in item.instances]))
        except Exception as exc:
            for item in group:
                self.tally.fail(item.live, other.version, exc)
        finally:
            # At most a twentieth of one CPU (its run too): asleep 19 times as long as the
            # group took. The shadow's Python holds the GIL the live requests' thread needs: a
            # quarter moved the live p50 in process by 12 %, a tenth at 16 connections by 18 %,
            # a twentieth by 1-7 % (bench/release_shadow.py). Rows it has no time for are
            # skipped, and counted: on a busy endpoint it compares a sample.
            time.sleep(min(SHADOW_REST * (time.perf_counter() - started), 1.0))

    def _compare(self, group: list[_Shadowed], shadowed: Scored) -> None:
        start = 0
        for item in group:
            time.sleep(0)  # the GIL to the live requests' thread between pieces of Python
            end = start + len(item.instances)
            try:
                compared = compare(item.predictions, shadowed.predictions[start:end])
            except Exception as exc:  # answers that cannot be paired: the shadow's failure
                self.tally.fail(item.live, group[0].scorer.version, exc)
            else:
                self.tally.add(item.live, group[0].scorer.version, compared)
            start = end


async def first_read(follower: Follower) -> None:
    """The document's first read awaited without a thread of this loop's pool (concurrent
    first requests share one read), for at most ``first_wait_s``."""
    if follower.read or follower.is_late:
        return
    # The model's load comes after the read: what it needs is imported meanwhile, as a load
    # imports it while it fetches (a cold start pays the read's round trip, not the import).
    import_in_background("onnxruntime")
    try:
        await asyncio.wait_for(
            asyncio.shield(asyncio.wrap_future(follower.first_read())), follower.first_wait_s
        )
    except TimeoutError:
        follower.late()


def _versions_fault(exc: BaseException) -> bool:
    """A failure the version answers for: any, but a full queue, a deadline the caller set,
    or a cancelled request. The
    request was valid (validation comes before routing), so a model that refuses it (a 400
    from onnxruntime) fails where the stable one may not: both are judged alike."""
    return isinstance(exc, Exception) and not isinstance(exc, Overloaded | DeadlineExceeded)
