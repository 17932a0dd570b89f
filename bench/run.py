"""Every benchmark, one table each, and bench/RESULTS.md.

    make bench            (python -m scripts.azurite run -- python -m bench.run)
    python -m scripts.azurite run -- python -m bench.run --quick --no-write   (the smoke run)

Numbers are from one run on whatever machine runs it, which here is shared and noisy: read
the ratios, measured side by side in the same run, not the absolutes. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import onnxruntime
import pydantic

from bench import (
    batch_load,
    cold_start,
    first_request,
    hot_path,
    http_load,
    latency,
    payload_log,
    queue_load,
    release_shadow,
    spark_load,
)
from tests.support import ROOT, LocalHost, free_port

PROFILE_LINES = 28


def machine() -> str:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else ""
    return (
        f"{os.cpu_count()} cores ({cpu or platform.machine()}), Python {sys.version.split()[0]}, "
        f"onnxruntime {onnxruntime.__version__}, pydantic {pydantic.VERSION}, "
        f"{datetime.date.today().isoformat()}"
    )


def import_time_top(count: int = 10) -> str:
    """``python -X importtime -c "import function_app"``: the most expensive imports, by
    cumulative microseconds (what the Functions worker pays to index the app)."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import function_app"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    top = sorted(rows, reverse=True)[:count]
    return "```\n" + "\n".join(f"{us / 1000:8.1f} ms  {name}" for us, name in top) + "\n```"


def hot_path_profiles() -> str:
    """pyinstrument's top frames for the in-process path (MLP, batch 1 and 32)."""
    with tempfile.TemporaryDirectory(prefix="mlfn-hot-") as tmp:
        out = Path(tmp) / "profiles"
        out.mkdir()
        functions, cases = hot_path.build_cases(Path(tmp))
        hot_path.profile(functions, [c for c in cases if c.label.startswith("MLP")], out)
        parts = []
        for path in sorted(out.glob("*.txt")):
            lines = [line for line in path.read_text().splitlines() if line.strip()][5:]
            parts.append(f"{path.stem}:\n\n```\n" + "\n".join(lines[:PROFILE_LINES]) + "\n```")
    return "\n\n".join(parts)


def hot_path_with_telemetry(quick: bool) -> str:
    """bench/hot_path in a process of its own with OpenTelemetry exporting every trace (the
    variables are read once per process, so the off run above cannot switch it on)."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(port)])
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "bench",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.hot_path", *(["--quick"] if quick else [])],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
    finally:
        sink.terminate()
        sink.wait(10)
    return done.stdout.strip()


def host_profile(seconds: float = 6.0) -> str:
    """py-spy's busiest frames (own time) in mlfn serve while wrk drives it at 16 connections."""
    with tempfile.TemporaryDirectory(prefix="mlfn-spy-") as name:
        tmp = Path(name)
        app, _ = http_load.build_app(tmp)
        host = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp / "cache")}, ("--no-queues",)).start()
        try:
            url = f"{host.url}/api/mlp/predict"
            body = http_load._body()
            http_load.drive(url, body, 1, 0.5)  # loads the model
            assert host.process is not None
            raw = tmp / "host.raw"
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(host.process.pid), "--duration", str(int(seconds)), "--rate", "250",
                 "--format", "raw", "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(0.5)
            http_load.drive(url, body, 16, seconds)
            spy.wait(timeout=seconds + 30)
        finally:
            host.stop()
        if not raw.exists():
            return "(py-spy could not attach here)"
        own: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            own[stack.split(";")[-1]] += int(count)
            total += int(count)
    rows = [f"{n / total * 100:5.1f}%  {frame}" for frame, n in own.most_common(15)]
    return "```\n" + "\n".join(rows) + "\n```"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles")
    args = parser.parse_args()
    quick = args.quick

    with tempfile.TemporaryDirectory(prefix="mlfn-hot-") as tmp:
        functions, cases = hot_path.build_cases(Path(tmp))
        hot = hot_path.table(hot_path.measure(functions, cases, 0.05 if quick else 2.0))
    print(hot, flush=True)
    hot_traced = hot_path_with_telemetry(quick)
    print(hot_traced, flush=True)
    load = http_load.table(*http_load.run(0.5 if quick else 5.0))
    print(load, flush=True)
    shadow = release_shadow.table(*release_shadow.run(quick))
    print(shadow, flush=True)
    logged = payload_log.table(
        *payload_log.run(0.5 if quick else 4.0, 1 if quick else payload_log.ROUNDS)
    )
    print(logged, flush=True)
    queued = queue_load.run(10 if quick else 400)
    queue = queue_load.table(*queued)
    print(queue, flush=True)
    files = batch_load.table(*batch_load.run(5_000 if quick else 1_000_000))
    print(files, flush=True)
    latencies = latency.table(latency.run(quick))
    print(latencies, flush=True)
    spark = spark_load.table(spark_load.missing() or spark_load.run(quick))
    print(spark, flush=True)
    cold, loads = cold_start.run(quick)
    imports = import_time_top()
    print(cold + "\n" + loads + "\n" + imports, flush=True)
    first = first_request.run(quick)
    print(first, flush=True)
    profiles = ""
    if not args.no_profile and not quick:
        profiles = (
            "\n\n## Profiles (this run)\n\nIn process, the app's predict function "
            "(pyinstrument, 0.2 ms sampling):\n\n" + hot_path_profiles() + "\n\n"
            "`mlfn serve` under wrk at 16 connections, busiest frames by own time (py-spy):\n\n"
            + host_profile()
        )
        print(profiles)
    if args.no_write:
        return
    notes = (ROOT / "bench" / "NOTES.md").read_text()
    (ROOT / "bench" / "RESULTS.md").write_text(
        "# Benchmark results\n\n"
        "Reproduce: `make bench` (`python -m scripts.azurite run -- python -m bench.run`).\n"
        f"Machine: {machine()}.\n"
        "Shared and noisy: read the ratios, measured side by side in one run.\n\n"
        f"## In process\n\n{hot}\n\nThe same with OpenTelemetry on (every request traced, "
        f"OTLP/HTTP to a sink in another process):\n\n{hot_traced}\n\n"
        f"## Over HTTP\n\n{load}\n\n## Releases\n\n{shadow}\n\n"
        f"## Payload log\n\n{logged}\n\n## Queues\n\n{queue}\n\n"
        f"## Batch files\n\n{files}\n\n## Latency\n\n{latencies}\n\n## Spark\n\n{spark}\n\n"
        f"## Cold start\n\n{cold}\n\nLoad lines (each load's own breakdown):\n\n{loads}\n\n"
        "The costliest imports of `import function_app` (`python -X importtime`, cumulative; "
        "nothing heavy: no onnxruntime, numpy or storage SDK):\n\n"
        f"{imports}\n\n"
        "## The first request in the Functions worker\n\n"
        "A fresh interpreter indexes the app as the worker does and calls the iris HTTP "
        "function in process, empty cache, model in Azurite (bench/first_request.py):\n\n"
        f"{first}\n\n"
        f"{notes}{profiles}\n"
    )
    print(f"\nwrote {(ROOT / 'bench' / 'RESULTS.md').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
