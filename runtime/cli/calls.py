"""The commands that call a running app's endpoints: ``mlfn invoke`` over HTTP, ``mlfn
enqueue`` and ``mlfn results`` through its queues."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runtime.cli.app_folder import (
    TRIGGER_CONNECTION,
    connection_option,
    index,
    read_data,
    settings,
    storage_account,
)
from runtime.cli.output import pretty, storage, told
from runtime.config import HostSettings
from runtime.config.client import ClientSettings, app_url
from runtime.config.client import read as client_settings

if TYPE_CHECKING:
    from runtime.storage.queues import EndpointQueues


@click.command()
@click.argument("name")
@click.option("--data", required=True, help='JSON body, or @FILE: {"instances": [...]}.')
@click.option(
    "--url",
    default=None,
    help=f"The app's base URL. Default: {ClientSettings.variable('url')} from the environment "
    f"(make serve prints it when it serves elsewhere), else {ClientSettings().url}.",
)
@click.option(
    "--key",
    default=None,
    envvar=HostSettings.variable("function_key"),
    help="Function key, if needed.",
)
def invoke(name: str, data: str, url: str | None, key: str | None) -> None:
    """POST a predict request to endpoint NAME and print the response. Exits 1 when the app
    answers with an error (its body on stderr) or cannot be reached."""
    body = read_data(data)
    with told():
        base = app_url("--url", url) if url else client_settings().url
    request = urllib.request.Request(
        f"{base}/api/{name}/predict",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **({"x-functions-key": key} if key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        click.echo(pretty(payload), err=True)
        raise SystemExit(1) from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {base}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # reset, timed out, hung up mid-answer
        raise click.ClickException(
            f"{base} did not answer: {exc or type(exc).__name__}; is the app running (mlfn serve)?"
        ) from None
    click.echo(pretty(payload))


def _endpoint_queues(name: str, connection: str | None) -> EndpointQueues:
    """The queues of endpoint NAME of the app in the current folder, as the app declares them;
    on the account ``connection`` names, else the one its trigger's setting does."""
    from runtime.host.queue_options import QueueOptions
    from runtime.host_json import HostConfig
    from runtime.protocol.jobs import endpoint_of_queue_function, queue_function_name
    from runtime.storage.queues import EndpointQueues

    app_dir = Path.cwd()
    with told():
        settings(app_dir)  # local.settings.json Values: the app's own code may read them
        functions = index(app_dir)
        info = functions.get(queue_function_name(name))
        if info is None:
            known = sorted(filter(None, map(endpoint_of_queue_function, functions)))
            raise click.ClickException(f"no queue-triggered endpoint {name!r}; known: {known}")
        results = next(b for b in info.outputs if b.type == "queue").raw["queueName"]
        setting = info.trigger.connection
        conn, found = storage_account(app_dir, setting, connection)
        encoding = QueueOptions.from_host(HostConfig.load(app_dir, os.environ)).message_encoding
    return EndpointQueues(
        conn, info.trigger.raw["queueName"], results, encoding, setting=setting, settings=found
    )


@click.command()
@click.argument("name")
@click.option(
    "--data", required=True, help='JSON {"instances": [...]} or a list, or @FILE (.json, .jsonl).'
)
@click.option("--id", "job_id", default=None, help="The request's id (default: a new uuid).")
@click.option(
    "--traceparent",
    default=None,
    help="W3C trace parent the job's scoring continues (default: a new trace).",
)
@connection_option(TRIGGER_CONNECTION)
def enqueue(
    name: str, data: str, job_id: str | None, traceparent: str | None, connection: str | None
) -> None:
    """Send a scoring request to endpoint NAME's request queue."""
    from runtime.protocol import json_input
    from runtime.protocol.jobs import check_job_id
    from runtime.telemetry import trace_context

    try:
        text = read_data(data).decode()
    except UnicodeDecodeError:
        raise click.ClickException(
            f"--data {data}: is not UTF-8 text (JSON or JSON Lines)"
        ) from None
    # What the endpoint would refuse (NaN, a bad id) is refused here, before it is queued.
    with told():
        if job_id is not None:
            check_job_id(job_id)
        if traceparent is not None and trace_context.parse(traceparent) is None:
            raise click.ClickException(
                f"--traceparent {traceparent!r} is not a W3C trace parent (00-<32 hex>-<16 hex>-01)"
            )
        if data.startswith("@") and data.endswith(".jsonl"):
            lines = [line for line in text.splitlines() if line.strip()]
            instances = [json_input.loads(line, "a line of --data") for line in lines]
        else:
            doc = json_input.loads(text, "--data")
            instances = doc["instances"] if isinstance(doc, dict) and "instances" in doc else doc
    if not isinstance(instances, list):
        raise click.ClickException('--data must be {"instances": [...]} or a list of instances')
    queues = _endpoint_queues(name, connection)
    with told(), storage("the request queue"):
        sent = queues.send(name, instances, job_id, traceparent)
    via = f" (instances in blob {sent.instances_blob})" if sent.instances_blob else ""
    parent = trace_context.parse(sent.traceparent)
    trace = f", trace {parent.trace_id}" if parent else ""
    click.echo(f"queued {sent.id} on {sent.queue}{via}{trace}")


@click.command()
@click.argument("name")
@click.option(
    "--wait", "wait_s", type=float, default=0.0, help="Seconds to wait for a first result."
)
@click.option("--keep", is_flag=True, help="Leave the messages on the queue.")
@connection_option(TRIGGER_CONNECTION)
def results(name: str, wait_s: float, keep: bool, connection: str | None) -> None:
    """Print (and remove) the result messages of endpoint NAME, one JSON document a line."""
    queues = _endpoint_queues(name, connection)
    with told(), storage("the result queue"):
        for doc in queues.receive(wait_s=wait_s, delete=not keep):
            click.echo(json.dumps(doc))
