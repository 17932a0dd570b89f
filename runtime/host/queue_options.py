"""``extensions.queues`` of host.json, with the Functions defaults (``QueuesOptions``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from runtime.errors import HostConfigError
from runtime.host_json import HostConfig, parse_timespan
from runtime.protocol.message_encoding import ENCODINGS

MAX_INVISIBLE_S = 7 * 24 * 3600.0  # the queue service's limit on a visibility timeout


def _int(value: Any, key: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HostConfigError(f"host.json {key}={value!r} is not a whole number") from None
    if not low <= number <= high:
        raise HostConfigError(f"host.json {key}={number} is outside {low}..{high}")
    return number


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout_s: float = 0.0
    max_polling_interval_s: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host(cls, config: HostConfig) -> QueueOptions:
        def get(key: str) -> Any:
            return config.get("extensions", "queues", key)

        batch = _int(get("batchSize") or 16, "batchSize", 1, 32)
        raw_threshold = get("newBatchThreshold")
        threshold = (
            _int(raw_threshold, "newBatchThreshold", 0, 10_000)
            if raw_threshold is not None
            else (batch // 2) * (os.cpu_count() or 1)
        )
        polling = get("maxPollingInterval")
        visibility = get("visibilityTimeout")
        encoding = str(get("messageEncoding") or "base64").lower()
        if encoding not in ENCODINGS:
            raise HostConfigError(f'host.json messageEncoding={encoding!r}: use "base64" or "none"')
        visibility_s = (
            parse_timespan(visibility, "visibilityTimeout") if visibility is not None else 0.0
        )
        if visibility_s > MAX_INVISIBLE_S:
            # The service refuses such a release: the message would come back only when its
            # lease lapsed, whatever this says.
            raise HostConfigError(
                f"host.json visibilityTimeout={visibility!r} is over the queue service's limit "
                "of 7 days (7.00:00:00)"
            )
        return cls(
            batch_size=batch,
            new_batch_threshold=threshold,
            max_dequeue_count=_int(get("maxDequeueCount") or 5, "maxDequeueCount", 1, 1_000_000),
            visibility_timeout_s=visibility_s,
            max_polling_interval_s=max(
                0.1, parse_timespan(polling, "maxPollingInterval") if polling is not None else 60.0
            ),
            message_encoding=encoding,
        )
