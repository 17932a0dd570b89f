"""mlfn's metrics, declared once: names, units, descriptions and histogram buckets."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Seconds: a sub-millisecond inline run up to a model load that waits out a slow store.
LATENCY_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LOAD_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BYTES = tuple(float(2**n) for n in range(10, 36, 2))  # 1 KiB .. 32 GiB

Resident = Callable[[], Mapping[str, int]]


class Instruments:
    """The counters, histograms and gauges of one meter."""

    def __init__(self, meter: Any) -> None:
        # Its count is the request count (as OpenTelemetry's http.server.request.duration): a
        # separate counter would cost each request another measurement (~7 µs in the SDK).
        self.duration = meter.create_histogram(
            "mlfn.request.duration",
            unit="s",
            description="Invocations of mlfn's functions and their duration, by function, "
            "endpoint and status (HTTP) or outcome (queue)",
            explicit_bucket_boundaries_advisory=LATENCY_S,
        )
        self.batch_size = meter.create_histogram(
            "mlfn.batch.size",
            unit="{instance}",
            description="Instances in one model call (merged requests)",
            explicit_bucket_boundaries_advisory=SIZES,
        )
        self.batch_wait = meter.create_histogram(
            "mlfn.batch.wait",
            unit="s",
            description="Time a request waited in the batcher before its model call started",
            explicit_bucket_boundaries_advisory=LATENCY_S,
        )
        self.load_duration = meter.create_histogram(
            "mlfn.model.load.duration",
            unit="s",
            description="Model loads: fetch, verify, session and warm-up, by cache outcome",
            explicit_bucket_boundaries_advisory=LOAD_S,
        )
        self.load_bytes = meter.create_histogram(
            "mlfn.model.load.size",
            unit="By",
            description="Size of each loaded model file",
            explicit_bucket_boundaries_advisory=BYTES,
        )
        self.downloaded = meter.create_counter(
            "mlfn.model.downloaded", unit="By", description="Model bytes fetched from stores"
        )
        self.queue_messages = meter.create_counter(
            "mlfn.queue.messages",
            unit="{message}",
            description="Queue messages by outcome: processed, errored (an error result), "
            "retried, poisoned (failed on the last delivery the host allows)",
        )
        self.cold_starts = meter.create_counter(
            "mlfn.cold_starts",
            unit="{process}",
            description="Processes that served their first invocation",
        )
        self.shadow_rows = meter.create_counter(
            "mlfn.shadow.rows",
            unit="{row}",
            description="Rows a release's shadow version scored beside the live one, by "
            "endpoint, versions and whether the two agreed",
        )
        self.shadow_difference = meter.create_histogram(
            "mlfn.shadow.max_difference",
            description="Per shadowed request, the largest difference between a float of the "
            "live version's predictions and the shadow's",
        )
        self.rollbacks = meter.create_counter(
            "mlfn.release.rollbacks",
            unit="{rollback}",
            description="Canaries the guardrails rolled back, by endpoint and version",
        )
        self.log_records = meter.create_counter(
            "mlfn.payload_log.records",
            unit="{record}",
            description="Payload-log records written to their Parquet files, by endpoint",
        )
        self.log_dropped = meter.create_counter(
            "mlfn.payload_log.dropped",
            unit="{record}",
            description="Payload-log records dropped because the buffer was full, by endpoint",
        )
        self._meter = meter
        self._watched: list[tuple[Resident, int | None]] = []
        self._lock = threading.Lock()

    def watch(self, resident: Resident, budget: int | None) -> None:
        """Report ``resident()`` (model name -> bytes in memory) and ``budget`` as gauges."""
        with self._lock:
            first = not self._watched
            self._watched.append((resident, budget))
        if not first:
            return  # one set of gauges; their callbacks read every registry watched
        from opentelemetry.metrics import Observation

        def count(options: Any) -> Iterable[Observation]:
            return [Observation(sum(len(r()) for r, _ in self._watched))]

        def used(options: Any) -> Iterable[Observation]:
            return [Observation(sum(sum(r().values()) for r, _ in self._watched))]

        def budgets(options: Any) -> Iterable[Observation]:
            return [Observation(b) for _, b in self._watched if b is not None]

        gauge = self._meter.create_observable_gauge
        gauge("mlfn.models.resident", [count], unit="{model}", description="Models in memory")
        gauge("mlfn.models.memory.used", [used], unit="By", description="Loaded models' memory")
        gauge(
            "mlfn.models.memory.budget",
            [budgets],
            unit="By",
            description="MLFN_MEMORY_BUDGET_MB, when set",
        )
