"""The invocation a piece of work belongs to: a batch's run is its first request's, whichever
task runs it, and the worker's thread-local storage names it while predict runs."""

from __future__ import annotations

import asyncio
import threading

from runtime import telemetry
from runtime.scheduling import Batcher
from runtime.telemetry import Invocation, InvocationOnThread

# What the Functions worker hands a function as context.thread_local_storage: one for the
# process, each thread seeing its own attributes.
WORKER_STORAGE = threading.local()


def test_a_merged_run_is_its_first_requests_whichever_task_runs_it() -> None:
    seen: list[tuple[str | None, str | None]] = []
    a_runs, release = threading.Event(), threading.Event()

    def run(instances: list[str]) -> list[str]:
        if instances == ["a"]:
            a_runs.set()
            release.wait(5)  # "a" runs alone while "b" and "c" arrive and wait
        with InvocationOnThread():
            current = telemetry.current_invocation()
            seen.append((current.id if current else None, WORKER_STORAGE.invocation_id))
        return instances

    batcher: Batcher[str, list[str]] = Batcher(run, lambda out, s, n: out[s : s + n], 8)

    async def request(name: str) -> list[str]:
        token = telemetry.enter(Invocation(f"id-{name}", WORKER_STORAGE))
        try:
            return await batcher.submit([name])
        finally:
            telemetry.leave(token)

    async def main() -> list[list[str]]:
        first = asyncio.ensure_future(request("a"))
        await asyncio.to_thread(a_runs.wait, 5)  # "a"'s task leads the batches from here on
        rest = [asyncio.ensure_future(request(n)) for n in ("b", "c")]
        for _ in range(1000):  # a few loop iterations: both are waiting, not yet in a batch
            if batcher.stats.requests == 3:
                break
            await asyncio.sleep(0)
        assert batcher.stats.requests == 3
        release.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [["a"], ["b"], ["c"]]
    # The second run, of "b" and "c", was led by "a"'s task, and is "b"'s.
    assert seen == [("id-a", "id-a"), ("id-b", "id-b")]


def test_the_threads_value_is_set_for_the_block_and_then_restored() -> None:
    storage = threading.local()
    storage.invocation_id = "the-loops-own"  # the worker's, for an invocation on the loop
    token = telemetry.enter(Invocation("mine", storage))
    try:
        with InvocationOnThread():
            assert storage.invocation_id == "mine"
    finally:
        telemetry.leave(token)
    assert storage.invocation_id == "the-loops-own"
