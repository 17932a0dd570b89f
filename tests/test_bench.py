"""The benchmarks stay runnable: every one of them, with tiny counts, end to end (nothing here
looks at a time; bench/RESULTS.md is written by make bench)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import spark_load
from tests.conftest import AzuriteInfo
from tests.support import ROOT


@pytest.mark.slow  # a minute or more: every benchmark, Spark's too where pyspark is installed
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
    headings = ("| in process", "| MLP over HTTP", "| shadow at 100 %", "| payload log", "| queue scoring",
                "| batch file", "| batching and a latency target")  # fmt: skip
    for heading in (*headings, "| cold start"):
        assert heading in done.stdout, done.stdout[-3000:]
    # A skipped Spark benchmark prints "| Spark scoring |" and a reason; only a run that
    # scored prints its row count after the heading.
    skipped = spark_load.missing()
    if skipped is None:
        assert "| Spark scoring, " in done.stdout, done.stdout[-3000:]
    else:
        assert f"| skipped: {skipped} |" in done.stdout, done.stdout[-3000:]
    assert "nan" not in done.stdout.lower()
