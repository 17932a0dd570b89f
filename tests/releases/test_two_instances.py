"""Issue 25's first must-show: two ``mlfn serve`` processes on one store, under load, follow a
weight change written by ``mlfn release`` within the check interval, with no failed request.

The store is Azurite (``az://CONTAINER``), the deployment's shape: both hosts read the release
document and the models from one blob container, each with its own disk cache, as two Function
App instances do. The load is 16 concurrent requests, each worker alternating between the two
hosts, for LOAD_S seconds; the release moves all traffic to v2 at its middle.

LOAD_S is the issue's 30 s; the write at 15 s leaves far more than the CHECK_S + SLACK_S
bound within which both hosts must answer with v2.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from runtime.digest import sha256_file
from scripts.build_models import build_iris
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, Mlfn, app_env, copy_examples, mlfn_in

LOAD_S = 30.0  # as the issue names it; the switch is written at the middle
CONNECTIONS = 16
CHECK_S = 1.0  # MLFN_RELEASE_CHECK_S of both hosts
SLACK_S = 3.0  # the document read, v2 loaded from Azurite: on 2 busy cores
REQUEST_TIMEOUT_S = 10.0
FLOWER = {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 4.5, "petal_width": 1.5}


@dataclass(frozen=True)
class Answer:
    """One request of the load, times by ``time.monotonic()``."""

    host: int
    sent: float
    received: float
    status: int | None  # None: a transport error (``problem`` says which)
    version: str | None = None
    sha256: str | None = None
    problem: str = ""


@dataclass
class Hosts:
    pair: tuple[LocalHost, LocalHost]
    mlfn: Mlfn
    second: Path  # v2's model file

    def logs(self) -> str:
        return "\n".join(
            f"--- host {i} ({h.url}) ---\n{h.output()[-4000:]}" for i, h in enumerate(self.pair)
        )


@pytest.fixture
def hosts(
    tmp_path: Path,
    azurite: AzuriteInfo,
    models_in_blob: str,
    monkeypatch: pytest.MonkeyPatch,
    isolated_imports: None,
) -> Iterator[Hosts]:
    """A release of iris (v1 the example's model with all traffic, v2 added at weight 0)
    followed by two hosts of the example app on one container."""
    app = copy_examples(tmp_path / "app")
    second = build_iris(tmp_path / "iris-c.onnx", c=0.01)

    def env(name: str) -> dict[str, str]:
        return app_env(
            azurite.connection_string,
            models_in_blob,
            tmp_path / name,
            MLFN_RELEASE_CHECK_S=str(CHECK_S),
        )

    mlfn = mlfn_in(app, env("cli"), monkeypatch)
    added = mlfn("release", "iris", "add", "v2", str(second), "--weight", "0")
    assert added.exit_code == 0, (added.output, added.exc_info)
    pair = (
        LocalHost(app, env("a"), ("--no-queues",)),
        LocalHost(app, env("b"), ("--no-queues",)),
    )
    try:
        for host in pair:
            host.start()
        yield Hosts(pair, mlfn, second)
    finally:
        for host in pair:
            host.stop()


async def _load(hosts: Hosts) -> tuple[list[Answer], float, float]:
    """CONNECTIONS workers posting for LOAD_S seconds, each alternating between the hosts;
    ``split v2=100`` written at the middle, from a thread. The answers and the write's start
    and end."""
    answers: list[Answer] = []
    # A connection idle as long as the host keeps one (uvicorn's 5 s, httpx's default too) may
    # be closed by the host just as the client sends on it, a ReadError that is no release's
    # doing: the client drops idle connections well before.
    limits = httpx.Limits(
        max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS, keepalive_expiry=1.0
    )
    clients = [
        httpx.AsyncClient(base_url=h.url, timeout=REQUEST_TIMEOUT_S, limits=limits)
        for h in hosts.pair
    ]
    deadline = time.monotonic() + LOAD_S

    async def worker(n: int) -> None:
        while time.monotonic() < deadline:
            which = n % 2
            n += 1
            sent = time.monotonic()
            try:
                r = await clients[which].post("/api/iris/predict", json={"instances": [FLOWER]})
                if r.status_code != 200:
                    problem = r.text[:500]
                    answers.append(
                        Answer(which, sent, time.monotonic(), r.status_code, problem=problem)
                    )
                    continue
                model = r.json()["model"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                answers.append(Answer(which, sent, time.monotonic(), None, problem=repr(exc)))
                continue
            answers.append(
                Answer(which, sent, time.monotonic(), 200, model["version"], model["sha256"])
            )

    try:
        workers = asyncio.gather(*(worker(i) for i in range(CONNECTIONS)))
        await asyncio.sleep(LOAD_S / 2)
        write_start = time.monotonic()
        split = await asyncio.wait_for(
            asyncio.to_thread(hosts.mlfn, "release", "iris", "split", "v2=100"), 60
        )
        write_end = time.monotonic()
        assert split.exit_code == 0, (split.output, split.exc_info)
        await asyncio.wait_for(workers, LOAD_S + REQUEST_TIMEOUT_S + 5)
    finally:
        for client in clients:
            await client.aclose()
    return answers, write_start, write_end


def test_two_hosts_follow_a_weight_change_under_load_with_no_failed_request(
    hosts: Hosts,
) -> None:
    for host in hosts.pair:  # v1's model loaded on both before the load starts
        with host.client() as http:
            warm = http.post("/api/iris/predict", json={"instances": [FLOWER]})
        assert warm.status_code == 200 and warm.json()["model"]["version"] == "v1", warm.text

    answers, write_start, write_end = asyncio.run(_load(hosts))

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} failed: {failed[:5]}\n{hosts.logs()}"
    before = {a.version for a in answers if a.received < write_start}
    assert before == {"v1"}, before
    models = {(a.version, a.sha256) for a in answers}
    assert ("v2", sha256_file(hosts.second)) in models and len(models) == 2, models

    bound = write_end + CHECK_S + SLACK_S
    summary = [f"{len(answers)} requests; split written in {write_end - write_start:.2f}s"]
    for which in (0, 1):
        mine = [a for a in answers if a.host == which]
        v2 = [a.received for a in mine if a.version == "v2"]
        assert v2, f"host {which} never answered with v2\n{hosts.logs()}"
        switched = min(v2)
        late = [a for a in mine if a.sent >= bound]
        assert late and {a.version for a in late} == {"v2"}, (
            f"host {which}: requests sent {CHECK_S + SLACK_S}s after the write answered by "
            f"{sorted({a.version or '' for a in late})}"
        )
        # A request sent after the host answered with v2 is routed after it: v2 as well.
        back = [a for a in mine if a.version == "v1" and a.sent > switched]
        assert not back, f"host {which} answered v1 after v2: {back[:5]}"
        last_v1 = max((a.received for a in mine if a.version == "v1"), default=write_start)
        slowest = max((a for a in mine if a.received >= write_start), key=_took)
        summary.append(
            f"host {which}: {len(mine)} requests, first v2 {switched - write_end:+.2f}s and "
            f"last v1 {last_v1 - write_end:+.2f}s from the write's end; the slowest request "
            f"after the write took {_took(slowest) * 1000:.0f} ms, sent at "
            f"{slowest.sent - write_end:+.2f}s ({slowest.version})"
        )
    print("\n".join(summary))


def _took(answer: Answer) -> float:
    return answer.received - answer.sent
