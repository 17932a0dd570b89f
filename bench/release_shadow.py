"""What a shadow costs the live version: p50 latency with a release's shadow scoring every
request (100 %) against the same release without one.

    python -m bench.release_shadow [--quick]

The MLP 256->512->512->10 served by a ``mlfn new --model`` tensor endpoint from a store
folder, its release two versions (the live one and a shadow of other weights, so the comparison
counts differences). In process (the app's function called one request at a time, as the
Functions worker calls it: the shadow's thread runs beside it) and over HTTP (``mlfn serve``
under wrk at 1 and 16 connections). Off and on alternate ROUNDS times; the best of each is kept.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
import numpy as np
import orjson

from bench.http_load import Load, drive
from runtime.config import Settings
from runtime.registration import build_app
from runtime.scaffold import render_tensor_endpoint
from tests.models.onnx_builders import mlp
from tests.support import LocalHost, make_app

SHADOW = {"version": "v2", "share": 1.0}
ROUNDS = 4  # off and on alternate this many times; the best of each is kept (a noisy machine)


def _release(store: Path, shadow: bool) -> None:
    doc: dict[str, Any] = {
        "versions": {"v1": {"uri": "mlp.onnx"}, "v2": {"uri": "mlp-v2.onnx"}},
        "stable": "v1",
        "weights": {"v1": 1},
    }
    if shadow:
        doc["shadow"] = SHADOW
    (store / "mlp.release.json").write_text(json.dumps(doc))


def _app(tmp: Path) -> tuple[Path, Path]:
    store = tmp / "models"
    store.mkdir()
    mlp(store / "mlp.onnx", seed=0)
    mlp(store / "mlp-v2.onnx", seed=1)
    app = make_app(tmp / "app", {})
    render_tensor_endpoint("mlp", "mlp.onnx", app, Settings(model_store=str(store)))
    return app, store


def _body() -> bytes:
    row = np.random.default_rng(0).standard_normal(256).astype(np.float32).tolist()
    return orjson.dumps({"instances": [{"x": row}]})


def in_process(
    app: Path, store: Path, tmp: Path, seconds: float, rounds: int = ROUNDS
) -> dict[str, float]:
    """Median µs of the app's function, one request at a time, without and with the shadow."""
    for module in list(sys.modules):
        if module == "functions" or module.startswith("functions."):
            del sys.modules[module]
    settings = Settings(model_store=str(store), cache_dir=tmp / "cache-in", release_check_s=3600)
    built = build_app(app / "functions", settings=settings)
    fn = next(
        f.get_user_function()
        for f in built.get_functions()
        if f.get_function_name() == "mlp_predict"
    )
    releasing = built.services.predict.scorer("mlp").release  # type: ignore[attr-defined]
    request = func.HttpRequest("POST", "http://localhost/api/mlp/predict", headers={}, body=_body())
    loop = asyncio.new_event_loop()

    def median_us() -> float:
        async def timed() -> list[float]:
            samples, deadline = [], time.perf_counter() + seconds
            while len(samples) < 50 or time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await fn(req=request)
                samples.append(time.perf_counter() - started)
                assert response.status_code == 200
            return samples

        return statistics.median(loop.run_until_complete(timed())) * 1e6

    best: dict[str, float] = {}
    try:
        for _ in range(rounds):
            for label, shadow in (("off", False), ("on", True)):
                _release(store, shadow)
                releasing.follower.refresh()
                loop.run_until_complete(fn(req=request))  # loads both versions
                releasing.shadows.idle.wait(10)
                best[label] = min(best.get(label, float("inf")), median_us())
                releasing.shadows.idle.wait(30)
    finally:
        loop.close()
    best["rounds"] = rounds
    best["compared"] = releasing.tally.total.rows
    best["skipped"] = releasing.tally.skipped
    return best


def over_http(
    app: Path, store: Path, tmp: Path, seconds: float, rounds: int = ROUNDS
) -> dict[tuple[str, int], Load]:
    body = _body()
    env = {"MLFN_MODEL_STORE": str(store), "MLFN_CACHE_DIR": str(tmp / "cache"),
           "MLFN_RELEASE_CHECK_S": "0.5"}  # fmt: skip
    host = LocalHost(app, env, ("--no-queues",)).start()
    url = f"{host.url}/api/mlp/predict"
    best: dict[tuple[str, int], Load] = {}
    try:
        for _ in range(rounds):
            for label, shadow in (("off", False), ("on", True)):
                _release(store, shadow)
                time.sleep(1.2)  # followed within the check interval
                for _ in range(3):  # loads both versions
                    r = httpx.post(url, content=body, headers={"content-type": "application/json"})
                    assert r.status_code == 200, r.text
                for connections in (1, 16):
                    load = drive(url, body, connections, seconds)
                    key = (label, connections)
                    if key not in best or load.p50_ms < best[key].p50_ms:
                        best[key] = load
    finally:
        host.stop()
    return best


def table(inproc: dict[str, float], http: dict[tuple[str, int], Load]) -> str:
    lines = [
        "| shadow at 100 % (MLP, batch 1) | p50 off | p50 on | on / off | req/s off | req/s on |",
        "|---|---:|---:|---:|---:|---:|",
        f"| in process, one request at a time | {inproc['off']:.0f} µs | {inproc['on']:.0f} µs "
        f"| {inproc['on'] / inproc['off']:.2f}x | | |",
    ]
    for connections in (1, 16):
        off, on = http[("off", connections)], http[("on", connections)]
        lines.append(
            f"| mlfn serve, {connections} connections (wrk) | {off.p50_ms:.2f} ms | "
            f"{on.p50_ms:.2f} ms | {on.p50_ms / off.p50_ms:.2f}x | {off.requests_per_s:.0f} | "
            f"{on.requests_per_s:.0f} |"
        )
    lines.append(
        f"| in process: rows compared {inproc['compared']:.0f}, skipped as busy "
        f"{inproc['skipped']:.0f}; the best of {inproc['rounds']:.0f} alternating runs of "
        "each | | | | | |"
    )
    return "\n".join(lines)


def run(quick: bool) -> tuple[dict[str, float], dict[tuple[str, int], Load]]:
    seconds = 0.3 if quick else 3.0
    with tempfile.TemporaryDirectory(prefix="mlfn-shadow-") as name:
        tmp = Path(name)
        app, store = _app(tmp)
        rounds = 1 if quick else ROUNDS
        return (
            in_process(app, store, tmp, seconds, rounds),
            over_http(app, store, tmp, seconds, rounds),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    print(table(*run(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
