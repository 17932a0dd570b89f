"""The benchmarks stay runnable: every one of them, with tiny counts, end to end (nothing here
looks at a time; bench/RESULTS.md is written by make bench)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import AzuriteInfo
from tests.support import ROOT


def test_every_benchmark_runs_and_prints_its_table(azurite: AzuriteInfo) -> None:
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "AZURITE_LOG": str(azurite.log_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-write"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    headings = (
        "| in process",
        "| MLP over HTTP",
        "| queue scoring",
        "| batch file",
        "| Spark scoring",
    )
    for heading in (*headings, "| cold start"):
        assert heading in done.stdout, done.stdout[-3000:]
    assert "nan" not in done.stdout.lower()
