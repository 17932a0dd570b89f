"""The queue trigger adapter: a ``func.QueueMessage`` in, the jobs service's result text out
through the queue output binding. Transient failures propagate so the host retries the message."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import azure.functions as func

from runtime import telemetry
from runtime.host_json import max_dequeue_count
from runtime.protocol import jobs
from runtime.services import Services
from runtime.telemetry import QUEUE, Function
from runtime.triggers.invocation import DETACHED, Scope

QueueFunction = Callable[[func.QueueMessage, func.Out[str], func.Context], Awaitable[None]]


def queue_function(name: str, queue: str, services: Services) -> QueueFunction:
    """Score one request message of endpoint NAME (from ``queue``) and write its result (or
    error result)."""
    function = Function(
        jobs.queue_function_name(name),
        QUEUE,
        f"{queue} process",
        {"mlfn.endpoint": name, "messaging.destination.name": queue},
    )

    @functools.cache
    def last_delivery() -> int:  # read once, when a message first fails
        return max_dequeue_count(services.app_root)

    async def score_message(
        msg: func.QueueMessage, out: func.Out[str], context: func.Context = DETACHED
    ) -> None:
        scope = Scope(context)
        scope.status = "retried"
        tel = telemetry.current()
        try:
            body = msg.get_body()
            if tel.on:
                scope.begin(function, (jobs.traceparent_of(body), None))  # the producer's trace
                tel.set("messaging.message.id", msg.id or "")
            result = await services.jobs.process(name, body, msg.id)
            if result.error is not None:
                tel.record_error(result.error)
            scope.status = "errored" if result.error is not None else "processed"
            out.set(result.text)
        except BaseException as exc:
            if tel.on:
                tel.record_error(exc)
                if (msg.dequeue_count or 0) >= last_delivery():
                    scope.status = "poisoned"  # the host moves it to the poison queue now
            raise
        finally:
            scope.close()

    return score_message
