"""The queue trigger adapter: a ``func.QueueMessage`` in, the jobs service's result text out
through the queue output binding. Transient failures propagate so the host retries the message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import azure.functions as func

from runtime.services import Services

QueueFunction = Callable[[func.QueueMessage, func.Out[str]], Awaitable[None]]


def queue_function(name: str, services: Services) -> QueueFunction:
    """Score one request message of endpoint NAME and write its result (or error result)."""

    async def score_message(msg: func.QueueMessage, out: func.Out[str]) -> None:
        out.set(await services.jobs.process(name, msg.get_body(), msg.id))

    return score_message
