"""The hot path, in process: what mlfn adds on top of the model and of any JSON endpoint.

    python -m bench.hot_path [--quick] [--profile DIR]

Calls the app's own HTTP functions with real ``func.HttpRequest``s, one after another on one
event loop, and compares them with what no endpoint can avoid: the "JSON floor" (orjson parse ->
numpy -> ``session.run`` -> orjson dump) and a raw ``session.run`` on a ready array. Models: an
MLP 256->512->512->10 served by a ``mlfn new --model`` tensor endpoint, and the iris example.
Prints a table; ``bench.run`` puts it in bench/RESULTS.md. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import numpy as np
import onnxruntime as ort
import orjson

from runtime.config import Settings
from runtime.registration import build_app
from runtime.scaffold import render_tensor_endpoint
from scripts.build_models import build_all
from tests.models.onnx_builders import mlp
from tests.support import copy_examples

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@dataclass(frozen=True)
class Case:
    label: str
    function: str  # the app's function name
    route: str
    body: bytes
    floor: Callable[[], object] | None  # the JSON floor for the same body (None: V2 binary)
    raw: Callable[[], object]  # session.run on a ready array
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    route_params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    label: str
    app_us: float
    floor_us: float | None
    raw_us: float

    @property
    def ratio(self) -> str:
        if self.floor_us is None:
            return f"{self.app_us / self.raw_us:.2f}x raw"
        return f"{self.app_us / self.floor_us:.2f}x floor"


def _median_us(call: Callable[[], object], seconds: float, at_least: int = 50) -> float:
    samples, deadline = [], time.perf_counter() + seconds
    while len(samples) < at_least or time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def _median_async_us(
    loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[object]], seconds: float
) -> float:
    async def timed() -> list[float]:
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while len(samples) < 50 or time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - started)
        return samples

    return statistics.median(loop.run_until_complete(timed())) * 1e6


def build_cases(tmp: Path) -> tuple[dict[str, Any], list[Case]]:
    """An app with the iris example and an ``mlp`` endpoint rendered by ``mlfn new``."""
    for module in list(sys.modules):  # an earlier app's endpoints, if this runs twice
        if module == "functions" or module.startswith("functions."):
            del sys.modules[module]
    models = build_all(tmp / "models")
    mlp_path = mlp(tmp / "models" / "mlp.onnx")
    app_dir = copy_examples(tmp / "app")
    settings = Settings(model_store=str(tmp / "models"), cache_dir=tmp / "cache")
    render_tensor_endpoint("mlp", str(mlp_path), app_dir, settings)
    app = build_app(app_dir / "functions", settings=settings)
    functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}

    mlp_session = ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"])
    iris_session = ort.InferenceSession(str(models["iris"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    cases = []
    for batch in (1, 32):
        rows = rng.standard_normal((batch, 256)).astype(np.float32)
        body = orjson.dumps({"instances": [{"x": r} for r in rows.tolist()]})

        def mlp_floor(body: bytes = body) -> bytes:
            doc = orjson.loads(body)
            x = np.array([i["x"] for i in doc["instances"]], dtype=np.float32)
            (y,) = mlp_session.run(None, {"x": x})
            return orjson.dumps({"predictions": [{"y": r} for r in y.tolist()]})

        cases.append(
            Case(
                f"MLP, batch {batch}",
                "mlp_predict",
                "mlp/predict",
                body,
                mlp_floor,
                lambda rows=rows: mlp_session.run(None, {"x": rows}),
            )
        )
    x32 = rng.standard_normal((32, 256)).astype(np.float32)
    head = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [32, 256],
                     "parameters": {"binary_data_size": x32.nbytes}}],
         "parameters": {"binary_data_output": True}}
    )  # fmt: skip
    cases.append(
        Case(
            "V2 binary infer, MLP batch 32",
            "v2_model_infer",
            "v2/models/mlp/infer",
            head + x32.tobytes(),
            None,
            lambda: mlp_session.run(None, {"x": x32}),
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(head)),
            },
            route_params={"model_name": "mlp"},
        )
    )
    iris_rows = np.array([list(FLOWER.values())], dtype=np.float32)
    iris_body = orjson.dumps({"instances": [FLOWER]})

    def iris_floor() -> bytes:
        doc = orjson.loads(iris_body)
        x = np.array([list(i.values()) for i in doc["instances"]], dtype=np.float32)
        label, probabilities = iris_session.run(None, {"input": x})
        return orjson.dumps(
            {
                "predictions": [
                    {"label": int(k), "probabilities": p}
                    for k, p in zip(label.tolist(), probabilities.tolist(), strict=True)
                ]
            }
        )

    cases.append(
        Case(
            "iris, batch 1",
            "iris_predict",
            "iris/predict",
            iris_body,
            iris_floor,
            lambda: iris_session.run(None, {"input": iris_rows}),
        )
    )
    return functions, cases


def measure(functions: dict[str, Any], cases: list[Case], seconds: float) -> list[Row]:
    loop = asyncio.new_event_loop()
    rows = []
    try:
        for case in cases:
            fn = functions[case.function]
            url = f"http://localhost/api/{case.route}"

            # The worker builds the request; what is timed is the function's own work.
            request = func.HttpRequest(
                "POST", url, headers=case.headers, route_params=case.route_params, body=case.body
            )

            def call(fn: Any = fn, request: func.HttpRequest = request) -> Awaitable[Any]:
                return fn(req=request)

            response = loop.run_until_complete(call())  # loads the model; checks the answer
            assert response.status_code == 200, response.get_body()[:300]
            app_us = _median_async_us(loop, call, seconds)
            floor_us = _median_us(case.floor, seconds) if case.floor else None
            raw_us = _median_us(case.raw, seconds)
            rows.append(Row(case.label, app_us, floor_us, raw_us))
    finally:
        loop.close()
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| in process, one request at a time | app | JSON floor | raw run | app / floor (raw) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.label} | {r.app_us:.0f} µs "
        f"| {f'{r.floor_us:.0f} µs' if r.floor_us is not None else '-'} | {r.raw_us:.0f} µs "
        f"| {r.ratio} |"
        for r in rows
    ]
    return "\n".join(lines)


def profile(functions: dict[str, Any], cases: list[Case], out_dir: Path) -> None:
    """pyinstrument profiles of the app's function, one per case, as text and HTML."""
    from pyinstrument import Profiler

    out_dir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    try:
        for case in cases:
            fn = functions[case.function]
            request = func.HttpRequest(
                "POST",
                f"http://localhost/api/{case.route}",
                headers=case.headers,
                route_params=case.route_params,
                body=case.body,
            )
            loop.run_until_complete(fn(req=request))

            count = 2000 if "batch 1" in case.label else 400

            async def many(fn: Any = fn, req: func.HttpRequest = request, n: int = count) -> None:
                for _ in range(n):
                    response = await fn(req=req)
                    assert response.status_code == 200, response.get_body()[:300]

            profiler = Profiler(interval=0.0002, async_mode="enabled")
            profiler.start()
            loop.run_until_complete(many())
            profiler.stop()
            stem = case.label.replace(", ", "-").replace(" ", "")
            (out_dir / f"{stem}.txt").write_text(profiler.output_text(unicode=True, show_all=False))
            (out_dir / f"{stem}.html").write_text(profiler.output_html())
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--profile", type=Path, help="write pyinstrument profiles here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlfn-hot-") as tmp:
        functions, cases = build_cases(Path(tmp))
        if args.profile:
            profile(functions, cases, args.profile)
        rows = measure(functions, cases, 0.05 if args.quick else 2.0)
    print(table(rows))


if __name__ == "__main__":
    main()
