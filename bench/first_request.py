"""The first request on a fresh instance, as the Functions worker pays it: a new interpreter
indexes the app (imports ``function_app``, reads ``app.get_functions()`` and each function's
bindings, as the worker's ``index_function_app`` and ``process_indexed_function`` do), then the
iris HTTP predict function is called in process with a real ``func.HttpRequest``, awaited on an
event loop as the worker awaits an async function. Model in Azurite, empty model cache.

As deployed: only the packages ``requirements.txt`` installs can be imported (its dependency
closure in this venv; the rest, aiohttp among them, as if not installed: the blob SDK imports
aiohttp when present), and the app's own code (``runtime/`` copied beside ``function_app.py``, as
``mlfn pack`` ships it) is compiled from source at each start, as from a read-only package without
``__pycache__`` (.funcignore leaves it out, so ``func azure functionapp publish`` sends none);
one column is the same app as ``mlfn pack`` zips it, its bytecode beside each file, unzipped.

    python -m scripts.azurite run -- python -m bench.first_request [--runs 5] [--importtime]

Prints, for each fresh interpreter and their median: interpreter start (the parent's clock just
before it spawns the child) to indexing done and to the first answer, and inside the first
answer the model's load line (fetch, session). ``--importtime`` adds one run under
``python -X importtime``: what the heavy imports cost, cumulative. Numbers are from one run on
whatever machine runs it: quote medians and ratios, not one sample.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from runtime.deploy.files import package, write_zip
from scripts.build_models import build_all
from tests.support import ROOT, copy_examples

RUNS = 5

# The worker's steps in a fresh interpreter. argv: the app's folder, the parent's time.time()
# just before the spawn. Prints one JSON line.
CHILD = r"""
import sys, time
T0 = float(sys.argv[2])
marks = {"interpreter": time.time() - T0}
import asyncio, importlib, json, logging, os, threading, uuid
lines = []
ABSENT = {n for n in os.environ.get("BENCH_ABSENT", "").split(",") if n}

class Absent:  # packages the deployed app does not install, as if not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

if ABSENT:
    sys.meta_path.insert(0, Absent())

class Lines(logging.Handler):
    def emit(self, record):
        lines.append(self.format(record))

logging.getLogger().addHandler(Lines())
logging.getLogger().setLevel(logging.INFO)  # the worker's own root logger is at INFO
app_dir = sys.argv[1]
sys.path.insert(0, app_dir)  # as the worker has it
os.chdir(app_dir)

t = time.time()
module = importlib.import_module("function_app")
marks["imported"] = time.time() - T0
import azure.functions as func

apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
assert len(apps) == 1, apps
functions = apps[0].get_functions()
for f in functions:  # what process_indexed_function reads of each
    f.get_raw_bindings(), f.get_bindings(), f.get_trigger(), f.get_user_function()
marks["indexed"] = time.time() - T0

class Context(func.Context):
    def __init__(self):
        self._id = str(uuid.uuid4())
        self._local = threading.local()
        self._local.invocation_id = self._id
    invocation_id = property(lambda s: s._id)
    thread_local_storage = property(lambda s: s._local)
    function_name = property(lambda s: "iris_predict")
    function_directory = property(lambda s: app_dir)
    trace_context = property(lambda s: None)
    retry_context = property(lambda s: None)

predict = {f.get_function_name(): f for f in functions}["iris_predict"].get_user_function()
body = json.dumps({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                                  "petal_length": 1.4, "petal_width": 0.2}]}).encode()
request = func.HttpRequest("POST", "http://localhost/api/iris/predict", body=body,
                           headers={"content-type": "application/json"})
loop = asyncio.new_event_loop()  # the worker's loop, running before any invocation
marks["loop"] = time.time() - T0
response = loop.run_until_complete(predict(req=request, context=Context()))
marks["answered"] = time.time() - T0
assert response.status_code == 200, (response.get_body(), lines)
load = next((line for line in lines if line.startswith("model loaded name=iris ")), "")
print(json.dumps({"marks": marks, "load": load}))
"""

LOAD_FIELDS = ("fetch_s", "verify_s", "session_s", "warmup_s", "total_s")
IMPORTS = ("azure.functions", "pydantic", "runtime", "onnxruntime", "numpy", "azure.storage.blob")


@dataclass(frozen=True)
class Run:
    indexed: float  # seconds from the spawn to indexing done
    answered: float  # seconds from the spawn to the first answer
    interpreter: float  # seconds from the spawn to the child's first line
    load: dict[str, float]  # the load line's figures, seconds
    imports: dict[str, float]  # with --importtime: cumulative seconds of IMPORTS


def not_deployed() -> list[str]:
    """The top-level import names of this venv's packages that ``requirements.txt`` does not
    install (nor anything it requires): what a deployed app cannot import."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").open())
    todo = [Requirement(line) for line in lines if line]
    todo = [r for r in todo if r.marker is None or r.marker.evaluate()]
    deployed = {"mlfn"}  # the app's own code, shipped beside function_app.py
    while todo:
        req = todo.pop()
        if canonicalize_name(req.name) in deployed:
            continue
        deployed.add(canonicalize_name(req.name))
        for spec in importlib.metadata.requires(req.name) or []:
            dep = Requirement(spec)
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append(dep)
    names = importlib.metadata.packages_distributions()
    return sorted(
        name
        for name, dists in names.items()
        if not any(canonicalize_name(d) in deployed for d in dists) and name.isidentifier()
    )


def setup(tmp: Path, conn: str) -> tuple[Path, Path, dict[str, str]]:
    """The repository's app in ``tmp`` with ``runtime/`` beside it, without bytecode, and the
    same app as ``mlfn pack`` zips it, unzipped; its models in a new Azurite container; the env
    a child runs in (no cache dir yet)."""
    from azure.storage.blob import ContainerClient

    models = build_all(tmp / "models")
    container = f"first{uuid.uuid4().hex[:8]}"
    client = ContainerClient.from_connection_string(conn, container)
    client.create_container()
    for name, path in models.items():
        client.upload_blob(f"{name}.onnx", path.read_bytes())
    app = copy_examples(tmp / "app")
    shutil.copytree(ROOT / "runtime", app / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    compiled = tmp / "packed"
    with zipfile.ZipFile(write_zip(package(app), tmp / "package.zip", bytecode=True)) as z:
        z.extractall(compiled)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFN_", "OTEL_"))}
    env |= {
        "AzureWebJobsStorage": conn,
        "MLFN_MODEL_STORE": f"az://{container}",
        "PYTHONDONTWRITEBYTECODE": "1",  # each start as the first: nothing written
    }
    return app, compiled, env


def once(
    app: Path,
    env: dict[str, str],
    cache: Path,
    extra: dict[str, str] | None = None,
    *,
    importtime: bool = False,
) -> Run:
    """One fresh interpreter, with an empty cache at ``cache`` (removed afterwards)."""
    shutil.rmtree(cache, ignore_errors=True)
    flags = ["-X", "importtime"] if importtime else []
    try:
        started = time.time()
        done = subprocess.run(
            [sys.executable, *flags, "-c", CHILD, str(app), repr(started)],
            env={**env, **(extra or {}), "MLFN_CACHE_DIR": str(cache)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"the first request failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    marks = found["marks"]
    load = {
        k: float(v) for k, v in re.findall(r"(\w+_s)=([\d.]+)", found["load"]) if k in LOAD_FIELDS
    }
    return Run(marks["indexed"], marks["answered"], marks["interpreter"], load,
               _imports(done.stderr) if importtime else {})  # fmt: skip


def _imports(stderr: str) -> dict[str, float]:
    """The cumulative time of each of IMPORTS, from ``-X importtime``'s lines. A module imported
    by ``importlib.import_module`` (the worker's indexing, the imports ahead) has no line of its
    own, and its imports are printed unnested: those are summed."""
    exact: dict[str, float] = {}
    unnested: dict[str, float] = dict.fromkeys(IMPORTS, 0.0)
    for line in stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name, seconds = parts[2].strip(), int(parts[1]) / 1e6
        if name in IMPORTS:
            exact.setdefault(name, seconds)
        if not parts[2].startswith("  "):
            for root in IMPORTS:
                if name.startswith(root + "."):
                    unnested[root] += seconds
    return {m: max(exact.get(m, 0.0), unnested[m]) for m in IMPORTS}


# The columns: as Core Tools' publish deploys it (nothing started ahead), as mlfn pack does (the
# app's bytecode shipped),
# the warm start, and this venv's every package importable (aiohttp, yarl: the blob SDK imports
# them when present).
DEPLOYED, COMPILED, WARM, DEV = "func publish", "mlfn pack", "WARM_START=models", "dev venv"
VARIANTS = {
    DEPLOYED: {"MLFN_WARM_START": "off"},
    COMPILED: {"MLFN_WARM_START": "off"},
    WARM: {"MLFN_WARM_START": "models"},
    DEV: {"MLFN_WARM_START": "off"},
}


def measure(runs: int, importtime: bool) -> tuple[dict[str, list[Run]], Run | None]:
    conn = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 - Azure's own name
    if not conn or "AZURITE_LOG" not in os.environ:
        raise SystemExit(
            "run under Azurite: python -m scripts.azurite run -- python -m bench.first_request"
        )
    with tempfile.TemporaryDirectory(prefix="mlfn-first-") as name:
        tmp = Path(name)
        app, compiled, env = setup(tmp, conn)
        absent = {"BENCH_ABSENT": ",".join(not_deployed())}
        once(app, env, tmp / "cache")  # the OS's file cache warmed, as on a scaled-out instance
        once(compiled, env, tmp / "cache")
        results: dict[str, list[Run]] = {name: [] for name in VARIANTS}
        for _ in range(runs):  # alternating: the machine's load moves all alike
            for name, extra in VARIANTS.items():
                where = compiled if name == COMPILED else app
                extra = extra if name == DEV else {**extra, **absent}
                results[name].append(once(where, env, tmp / "cache", extra))
        deployed = {**VARIANTS[DEPLOYED], **absent}
        timed = once(app, env, tmp / "cache", deployed, importtime=True) if importtime else None
    return results, timed


def table(results: dict[str, list[Run]], timed: Run | None = None) -> str:
    """Medians, one column per variant."""

    def med(runs: list[Run], value: Callable[[Run], float | None]) -> str:
        found = [v for v in map(value, runs) if v is not None]
        return f"{statistics.median(found) * 1000:.0f} ms" if found else "-"

    rows: list[tuple[str, Callable[[Run], float | None], str]] = [
        ("interpreter start to indexing done", lambda r: r.indexed,
         "import function_app + get_functions(): the worker's indexing"),
        ("interpreter start to first answer", lambda r: r.answered,
         "issue 27's target: <= 500 ms"),
        ("  of which the first invocation", lambda r: r.answered - r.indexed,
         "indexing done to the answer"),
        ("  model load: fetch", lambda r: r.load.get("fetch_s"), "the load line"),
        ("  model load: session", lambda r: r.load.get("session_s"), "the load line"),
        ("  model load: total", lambda r: r.load.get("total_s"),
         "the load line (warm start: in the background)"),
    ]  # fmt: skip
    heads = list(results)
    width = max(len(r[0]) for r in rows)
    lines = [
        f"| {'first request, worker in process':<{width}} | " + " | ".join(heads) + " | note |",
        f"|{'-' * (width + 2)}|" + "|".join("-" * (len(h) + 2) for h in heads) + "|------|",
    ]
    for label, value, note in rows:
        cells = " | ".join(f"{med(runs, value):>{len(h)}}" for h, runs in results.items())
        lines.append(f"| {label:<{width}} | {cells} | {note} |")
    counts = {len(runs) for runs in results.values()}
    each = "; ".join(
        f"{name}: " + ", ".join(f"{r.answered * 1000:.0f}" for r in runs)
        for name, runs in results.items()
    )
    lines.append(
        f"\nMedians of {max(counts)} fresh interpreters each, alternating; "
        f"first answer (ms) {each}."
    )
    if timed is not None and timed.imports:
        cost = ", ".join(f"{m} {s * 1000:.0f} ms" for m, s in timed.imports.items())
        lines.append(f"Imports, func publish (one run, `-X importtime`, cumulative): {cost}.")
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """The table, under the Azurite ``make bench`` or ``scripts.azurite run`` started."""
    results, timed = measure(1 if quick else RUNS, importtime=True)
    return table(results, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--importtime", action="store_true", help="one more run, -X importtime")
    args = parser.parse_args()
    results, timed = measure(args.runs, args.importtime)
    print(table(results, timed))
    for r in (r for runs in results.values() for r in runs):
        print(f"indexed {r.indexed * 1000:.0f} ms, answered {r.answered * 1000:.0f} ms, "
              f"interpreter {r.interpreter * 1000:.0f} ms, load {r.load}")  # fmt: skip


if __name__ == "__main__":
    main()
