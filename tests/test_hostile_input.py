"""Hostile and unlucky input over real HTTP: every answer is a bounded 4xx with a JSON body that
says what is wrong, never a 500, and the host's memory stays bounded (issue 10)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import adder, multi_io, strings
from tests.support import ROOT, LocalHost, make_app, queue_client

TENSOR_ENDPOINT = "from runtime import Endpoint\n\nendpoint = Endpoint(model={path!r})\n"
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, example_models: dict[str, Path]
) -> Iterator[LocalHost]:
    root = tmp_path_factory.mktemp("hostile")
    iris = (ROOT / "functions" / "iris" / "endpoint.py").read_text()
    endpoints = {
        "iris": iris.replace('model="iris.onnx"', f"model={str(example_models['iris'])!r}"),
        "tensors": TENSOR_ENDPOINT.format(path=str(multi_io(root / "multi.onnx"))),
        "adder": TENSOR_ENDPOINT.format(path=str(adder(root / "adder.onnx"))),
        "words": TENSOR_ENDPOINT.format(path=str(strings(root / "strings.onnx"))),
        "small": "from runtime import Endpoint, Limits\n\nendpoint = Endpoint(model="
        f"{str(root / 'multi.onnx')!r}, limits=Limits(max_request_bytes=1024))\n",
    }
    env = {"MLFN_CACHE_DIR": str(root / "cache")}
    server = LocalHost(make_app(root / "app", endpoints), env, ("--no-queues",)).start()
    with server.client() as http:  # load both models before the hostile part
        assert http.post("/api/iris/predict", json={"instances": [FLOWER]}).status_code == 200
    yield server
    server.stop()


def _peak_rss_mb(host: LocalHost) -> float:
    assert host.process is not None
    status = Path(f"/proc/{host.process.pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if "VmHWM" in line) / 1024


def test_a_megabyte_of_empty_instances_gets_a_short_422_and_memory_stays_bounded(
    host: LocalHost,
) -> None:
    body = b'{"instances": [' + b",".join([b"{}"] * 350_000) + b"]}"  # 1 MiB, 1.4 M errors
    with host.client() as http:
        r = http.post("/api/iris/predict", content=body)
    assert r.status_code == 422
    assert len(r.content) < 32 * 1024
    error = r.json()["error"]
    assert len(error["detail"]) == 100
    assert error["detail"][0]["field"] == "instances[0].sepal_length"
    assert "and 1399995 more (100 listed)" in error["message"]
    assert _peak_rss_mb(host) < 600  # the unbounded report took +1.85 GiB


NESTED = "[" * 100_000 + "]" * 100_000
HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("iris/predict", f'{{"instances": {NESTED}}}', "nested too deeply"),
        ("iris/predict", f'{{"instances": [{{"sepal_length": {HUGE}}}]}}', "not valid JSON"),
        ("iris/predict", '{"instances": [{"sepal_length": NaN, "sepal_width": 3.5, '
         '"petal_length": 1.4, "petal_width": 0.2}]}',
         "NaN, which is not a finite JSON number; a missing value is null"),
        ("iris/predict", '{"instances": [{"sepal_length": 1e999, "sepal_width": 3.5, '
         '"petal_length": 1.4, "petal_width": 0.2}]}', "1e999, which is not a finite JSON"),
        ("v2/models/tensors/infer", '{"inputs": [{"name": "count", "datatype": "FP32", '
         '"shape": [1], "data": [Infinity]}]}', "Infinity, which is not a finite JSON number"),
        ("v2/models/tensors/infer", NESTED, "nested too deeply"),
        ("v2/models/tensors/infer", f'{{"inputs": [], "id": {HUGE}}}', "not valid JSON"),
        ("v2/models/tensors/infer", '{"inputs": [], "parameters": [1]}',
         '"parameters" must be an object'),
        ("v2/models/tensors/infer",
         '{"inputs": [{"name": "count", "datatype": "INT64", "shape": [1], "data": [1],'
         ' "parameters": "binary_data_size"}]}', "input 'count' parameters must be an object"),
        ("v2/models/tensors/infer",
         '{"inputs": [], "outputs": [{"name": "next", "parameters": [true]}]}',
         "output 'next' parameters must be an object"),
        ("v2/models/tensors/infer", '{"inputs": [], "outputs": {"name": "next"}}',
         '"outputs" must be a list'),
        ("v2/models/tensors/infer",
         json.dumps({"inputs": [{"name": "count", "datatype": "INT64", "shape": [1] * 40,
                                 "data": [1]}]}), "at most 32 are read"),
        ("v2/models/tensors/infer",
         json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2_000_000],
                                 "data": []}]}), "at most 1000000 are read"),
        # Batch sizes that disagree: onnxruntime refuses the run itself.
        ("v2/models/adder/infer",
         json.dumps({"inputs": [
             {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [0.0] * 4},
             {"name": "y", "datatype": "FP32", "shape": [3, 2], "data": [1.0] * 6}]}),
         "cannot run on these inputs"),
        # Valid JSON, a valid str to Python, but no UTF-8 bytes for onnxruntime.
        ("v2/models/words/infer",
         '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}',
         "holds '\\ud800', which UTF-8 cannot encode"),
    ],
)  # fmt: skip
def test_client_mistakes_are_4xx_naming_the_problem(
    host: LocalHost, route: str, body: str, message: str
) -> None:
    with host.client() as http:
        r = http.post(f"/api/{route}", content=body.encode())
    assert r.status_code == 400, r.text[:500]
    error = r.json()["error"]
    text = error if isinstance(error, str) else error["message"]
    assert message in text


def test_v2_infer_honours_the_endpoints_byte_limit(host: LocalHost) -> None:
    body = json.dumps({"inputs": [{"name": "count", "datatype": "INT64", "shape": [300_000],
                                   "data": [1] * 300_000}]})  # fmt: skip
    with host.client() as http:
        r = http.post("/api/v2/models/small/infer", content=body.encode())
    assert r.status_code == 413 and "over this endpoint's limit of 1024 bytes" in r.json()["error"]


def test_fuzzing_the_v2_routes_finds_no_server_error(host: LocalHost, tmp_path: Path) -> None:
    """schemathesis over the Open Inference Protocol routes, from the served OpenAPI spec."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "run", f"{host.url}/api/openapi.json",
            "--checks", "not_a_server_error", "--include-path-regex", "/v2/models/",
            "--max-examples", "30", "--seed", "2", "--workers", "1", "--request-timeout", "30",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Server error" not in done.stdout and " passed" in done.stdout
    print(f"host peak RSS after the fuzz: {_peak_rss_mb(host):.0f} MB")


def _hostile_messages() -> list[tuple[str, bytes]]:
    """Queue messages a careless or hostile producer could send: (expected, body). Each
    deserves an answer on the results queue, a result or an error result; none a retry."""
    flower = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    cases: list[tuple[str, object]] = [
        ("result", {"id": "ok-1", "instances": [flower]}),
        ("result", {"id": "ok-2", "instances": [flower] * 300, "extra": {"x": [1, 2]}}),
        ("error", {"id": "bad-1", "instances": [{}] * 5000}),
        ("error", {"id": "bad-2", "instances": []}),
        ("error", {"id": "bad-3", "instances": {"a": 1}}),
        ("error", {"id": "bad-4"}),
        ("error", {"instances": [flower]}),
        ("error", {"id": "../../etc/passwd", "instances": [flower]}),
        ("error", {"id": "x" * 500, "instances": [flower]}),
        ("error", {"id": "bad-5", "instances_blob": "azure-webjobs-secrets/host.json"}),
        ("error", {"id": "bad-6", "instances_blob": "Not_A_Container/x"}),
        ("error", {"id": "bad-7", "instances_blob": "inputs/nothing-here.jsonl"}),
        ("error", {"id": "bad-8", "instances_blob": 42}),
        ("error", {"id": "bad-9", "instances": [flower], "instances_blob": "a/b"}),
        ("error", {"id": "bad-10", "instances": [{**flower, "sepal_length": "many"}]}),
        ("error", [1, 2, 3]),
        ("error", "just a string"),
    ]
    raw: list[tuple[str, bytes]] = [(kind, json.dumps(doc).encode()) for kind, doc in cases]
    raw += [
        ("error", b'{"id": "deep", "instances": ' + b"[" * 17_000 + b"]" * 17_000 + b"}"),
        ("error", b'{"id": "huge", "instances": [' + b"7" * 5000 + b"]}"),
        ("error", b'{"id": "nan", "instances": [{"sepal_length": NaN}]}'),
        # Not text: the Storage extension cannot bind it as a string, so the function never
        # runs; the message is retried, then poisoned (docs/decisions.md, entry 18).
        ("poison", b"\xff\xfe not utf-8"),
        ("error", b""),
        ("error", b"{" * 10),
    ]
    rng = random.Random(7)
    for i in range(20):  # random structures of random depth and type
        raw.append(("error", json.dumps({"id": f"r-{i}", "instances": _junk(rng, 4)}).encode()))
    return raw


def _junk(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(6 if depth else 4)
    if kind == 0:
        return rng.choice([None, True, -1, 2**70, 3.5, ""])
    if kind == 1:
        return "".join(rng.choice("aé\u0000\ud7ff{}[]") for _ in range(rng.randrange(8)))
    if kind == 2:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if kind == 3:
        return {}
    if kind == 4:
        return [_junk(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["sepal_length", "x", ""]): _junk(rng, depth - 1) for _ in range(3)}


def test_hostile_queue_messages_all_end_as_results_or_error_results_bar_non_text(
    tmp_path: Path, example_models: dict[str, Path], azurite: AzuriteInfo
) -> None:
    prefix = f"h{uuid.uuid4().hex[:10]}"
    iris = (ROOT / "functions" / "iris" / "endpoint.py").read_text()
    iris = iris.replace('model="iris.onnx"', f"model={str(example_models['iris'])!r}")
    iris = iris.replace(
        "limits=Limits(", f'queues=Queues("{prefix}-requests", "{prefix}-results"), limits=Limits('
    ).replace("from runtime import Endpoint,", "from runtime import Endpoint, Queues,")
    app = make_app(tmp_path / "app", {"iris": iris})
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["queues"]["visibilityTimeout"] = "00:00:00"  # retry at once
    (app / "host.json").write_text(json.dumps(host_json))
    env = {"AzureWebJobsStorage": azurite.connection_string, "MLFN_CACHE_DIR": str(tmp_path / "c")}
    requests = queue_client(azurite.connection_string, f"{prefix}-requests")
    results = queue_client(azurite.connection_string, f"{prefix}-results")
    poison = queue_client(azurite.connection_string, f"{prefix}-requests-poison")
    messages = _hostile_messages()
    for _, body in messages:
        requests.send_message(base64.b64encode(body).decode())
    host = LocalHost(app, env).start()
    answered = [(kind, body) for kind, body in messages if kind != "poison"]
    poisoned = [body for kind, body in messages if kind == "poison"]
    answers: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            len(answers) < len(answered) or len(poison.peek_messages(32)) < len(poisoned)
        ):
            for message in results.receive_messages(max_messages=32):
                answers.append(json.loads(base64.b64decode(message.content)))
                results.delete_message(message)
            time.sleep(0.2)
        rss = _peak_rss_mb(host)
    finally:
        host.stop()
    assert len(answers) == len(answered), host.output()[-3000:]
    assert [base64.b64decode(m.content) for m in poison.peek_messages(32)] == poisoned
    expected = sorted(kind for kind, _ in answered)
    assert sorted("error" if "error" in a else "result" for a in answers) == expected
    assert all(len(json.dumps(a)) < 48 * 1024 for a in answers)
    assert "Traceback" not in host.output()
    print(f"host peak RSS after {len(messages)} hostile messages: {rss:.0f} MB")
