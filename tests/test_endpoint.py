"""What a user declares is checked when it is declared, with messages that say the rule."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from runtime.endpoint import BoundEndpoint, Endpoint, Limits, Model, Queues


class In(BaseModel):
    x: float


class Out(BaseModel):
    y: float


@pytest.mark.parametrize("name", ["iris-requests", "abc", "a1-b2-c3", "x" * 63])
def test_valid_queue_names(name: str) -> None:
    assert Queues(requests=name).requests == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "x" * 64,
        "Iris-requests",
        "iris--requests",
        "-iris",
        "iris-",
        "iris_requests",
        "iris-requests\n",  # a trailing newline once passed the end-of-string check
    ],
)
def test_queue_names_follow_azures_rules(name: str) -> None:
    with pytest.raises(ValueError, match="Azure queue names are 3-63 lowercase"):
        Queues(requests=name)


def test_default_queue_names_come_from_the_endpoint_name() -> None:
    bound = BoundEndpoint("credit_risk", Endpoint(In, Out, model="m.onnx"))
    assert (bound.requests_queue, bound.results_queue) == (
        "credit-risk-requests",
        "credit-risk-results",
    )
    custom = BoundEndpoint(
        "iris", Endpoint(In, Out, model="m.onnx", queues=Queues(results="scores"))
    )
    assert (custom.requests_queue, custom.results_queue) == ("iris-requests", "scores")


@pytest.mark.parametrize("name", ["Iris", "1iris", "i", "iris-v2", "x" * 41])
def test_endpoint_names_are_route_function_and_queue_safe(name: str) -> None:
    with pytest.raises(ValueError, match="endpoint name"):
        BoundEndpoint(name, Endpoint(In, Out, model="m.onnx"))


def test_an_endpoint_name_whose_queue_name_would_be_invalid_is_refused() -> None:
    with pytest.raises(ValueError, match="queue name 'a--b-requests'"):
        BoundEndpoint("a__b", Endpoint(In, Out, model="m.onnx"))


def test_model_pins_and_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        Model("m.onnx", sha256="ABC")
    with pytest.raises(ValueError, match="must not be empty"):
        Model(" ")
    with pytest.raises(ValueError, match="max_request_bytes"):
        Limits(max_request_bytes=0)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"latency_target_ms": "20"}, "Limits.latency_target_ms must be a finite number of "
         "milliseconds or None, not '20'"),
        ({"max_batch_wait_ms": None}, "max_batch_wait_ms must be a finite number of "
         "milliseconds, not None"),
        ({"max_batch_size": 8.0}, "Limits.max_batch_size must be an int, not 8.0"),
        ({"max_pending_requests": True}, "max_pending_requests must be an int, not True"),
        ({"timeout_ms": False}, "timeout_ms must be a finite number of milliseconds or None"),
        ({"inline_fast_runs": 0}, "inline_fast_runs must be a bool, not 0"),
    ],
)  # fmt: skip
def test_a_limit_of_the_wrong_kind_is_refused_by_name(given: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        Limits(**given)


def test_limits_of_their_kinds_are_kept_as_pythons_own() -> None:
    limits = Limits(max_batch_wait_ms=2, latency_target_ms=20, timeout_ms=12.5)
    assert (limits.max_batch_wait_ms, limits.latency_target_ms, limits.timeout_ms) == (2, 20, 12.5)
    # numpy's numbers are taken as Python's: an error's JSON names a limit (json refuses int64).
    limits = Limits(
        max_request_bytes=np.int64(300), timeout_ms=np.float32(1.5), inline_fast_runs=np.True_
    )
    assert json.dumps([limits.max_request_bytes, limits.timeout_ms, limits.inline_fast_runs]) == (
        "[300, 1.5, true]"
    )


@pytest.mark.parametrize("name", ["max_batch_wait_ms", "latency_target_ms", "timeout_ms"])
@pytest.mark.parametrize("value", [math.inf, math.nan, 10**400, 86_400_001])
def test_a_limit_of_time_is_finite_and_at_most_a_day(name: str, value: float) -> None:
    # 10**400 overflowed a float (OverflowError, no name); beyond a day, waits overflow.
    with pytest.raises(ValueError, match=f"Limits.{name} must be a finite number.*at most a day"):
        Limits(**{name: value})
    assert getattr(Limits(**{name: 86_400_000}), name) == 86_400_000


def test_a_tensor_only_endpoint_needs_no_schemas_but_predict_does() -> None:
    tensor_only = Endpoint(model="m.onnx")
    assert tensor_only.predict_fn is None and "m.onnx" in repr(tensor_only)
    with pytest.raises(TypeError, match="needs input and output models"):
        tensor_only.predict(lambda rows, model: rows)
    with pytest.raises(TypeError, match="pydantic BaseModel"):
        Endpoint(dict, Out, model="m.onnx")  # type: ignore[arg-type]


def test_batch_containers_default_from_the_name_and_follow_azures_rules() -> None:
    from runtime.endpoint import Batch

    bound = BoundEndpoint("house_prices", Endpoint(In, Out, model="m.onnx"))
    assert (bound.batch_container, bound.results_container) == (
        "house-prices-batch",
        "house-prices-batch-results",
    )
    with pytest.raises(ValueError, match="container name 'Bad_Name' is invalid"):
        Batch(files="Bad_Name")
    # A name whose default container would be invalid says how to name another, or turn off.
    with pytest.raises(ValueError, match=r"Batch\(files=...\), or turn batch files off"):
        BoundEndpoint("ab_", Endpoint(In, Out, model="m.onnx", queues=Queues("ab-q", "ab-r")))
    off = Endpoint(
        In, Out, model="m.onnx", queues=Queues("ab-q", "ab-r"), batch=Batch(enabled=False)
    )
    assert BoundEndpoint("ab_", off).endpoint.batch.enabled is False


def test_batch_results_never_land_where_batch_files_are_picked_up(
    tmp_path: Path, isolated_imports: None
) -> None:
    from pydantic import Field

    from runtime.discovery import discover
    from runtime.endpoint import Batch
    from runtime.errors import DiscoveryError

    with pytest.raises(ValueError, match="both container 'same'"):
        BoundEndpoint("ep", Endpoint(In, Out, model="m", batch=Batch(files="same", results="same")))

    class Clash(BaseModel):
        error: str = Field(description="a field named as the batch files' own column")

    clash = Endpoint(In, Clash, model="m", predict=lambda rows, model: rows)
    with pytest.raises(ValueError, match="output field 'error' clashes"):
        BoundEndpoint("ep", clash)
    quiet = Endpoint(In, Clash, model="m", batch=Batch(enabled=False), predict=lambda r, m: r)
    assert BoundEndpoint("ep", quiet).endpoint.batch.enabled is False

    functions = tmp_path / "looping_functions"  # a package name no other test imports
    for name, batch in (("one", 'Batch(results="two-batch")'), ("two", "Batch()")):
        (functions / name).mkdir(parents=True)
        (functions / name / "endpoint.py").write_text(
            "from pydantic import BaseModel\nfrom runtime import Batch, Endpoint\n"
            "class I(BaseModel):\n    x: float\n"
            f'endpoint = Endpoint(I, I, model="m.onnx", batch={batch}, predict=lambda r, m: r)\n'
        )
    with pytest.raises(DiscoveryError, match="where endpoint 'two' picks up batch files"):
        discover(functions)
