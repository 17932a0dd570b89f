"""Benchmarks: each prints a table; ``python -m bench.run`` writes bench/RESULTS.md."""

import runtime  # noqa: F401 - first: onnxruntime's telemetry off, in every process the bench starts
