"""An endpoint over the tiny ``adder`` model (``sum = x + y``, float [N, 2]) for the services'
own tests: they build ``Services`` in process, as the function app does, with no host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from runtime.config import Settings
from runtime.endpoint import Batch, BoundEndpoint, Endpoint, Limits
from runtime.models.onnx_model import OnnxModel
from runtime.payload_log import Log
from runtime.services import Services


class Pair(BaseModel):
    x: list[float] = Field(min_length=2, max_length=2)
    y: list[float] = Field(min_length=2, max_length=2)


class Sum(BaseModel):
    sum: list[float]


def by_rows(rows: list[Pair], model: OnnxModel) -> list[Sum]:
    out = model.run({"x": [r.x for r in rows], "y": [r.y for r in rows]})["sum"]
    return [Sum(sum=v) for v in out.tolist()]


def by_columns(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    feeds = {name: np.asarray(columns[name], dtype=np.float32) for name in ("x", "y")}
    return {"sum": model.run(feeds)["sum"]}


def pairs(n: int, start: int = 0) -> list[dict[str, list[float]]]:
    """Instances whose sums tell them apart and show their order (no two alike)."""
    return [{"x": [i + 0.5, 2.0 * i], "y": [0.25, -1.0 - i]} for i in range(start, start + n)]


def sums(instances: list[dict[str, list[float]]]) -> list[list[float]]:
    """What the model answers, computed in float32 as onnxruntime does."""
    return [
        (np.asarray(i["x"], dtype=np.float32) + np.asarray(i["y"], dtype=np.float32)).tolist()
        for i in instances
    ]


def services(
    model: str | Path,
    app_root: Path,
    settings: dict[str, str] | None = None,
    *,
    predict: Callable[..., Any] = by_rows,
    columnar: bool = False,
    name: str = "pairs",
    batch: Batch | None = None,
    limits: Limits | None = None,
    log: Log | None = None,
) -> Services:
    """The app's services for one endpoint ``name`` over ``model``, with settings as a mapping
    (no environment read): its cache under ``app_root``."""
    endpoint = Endpoint(Pair, Sum, model=str(model), limits=limits, batch=batch, log=log)
    if columnar:
        endpoint.predict_columns(predict)
    else:
        endpoint.predict(predict)
    env = {"MLFN_CACHE_DIR": str(app_root / "cache"), **(settings or {})}
    return Services([BoundEndpoint(name, endpoint)], app_root, Settings.from_mapping(env))
