"""The commands that call a running app's endpoints: ``mlfn invoke`` over HTTP, ``mlfn
enqueue`` and ``mlfn results`` through its queues."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import urllib.error
import urllib.parse
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
from runtime.cli.waiting import OptionalWaitCommand, wait_option
from runtime.config import HostSettings
from runtime.config.client import ClientSettings, app_url
from runtime.config.client import read as client_settings

if TYPE_CHECKING:
    from runtime.storage.queues import EndpointQueues


@click.command()
@click.argument("name")
@click.option(
    "--data",
    required=True,
    help='JSON body {"instances": [...]}, or @FILE (.json, or .jsonl: one instance a line).',
)
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
    body = read_data(data).encode()
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
        if exc.code == 404:
            raise click.ClickException(_not_found(name, payload, request.full_url)) from None
        click.echo(pretty(payload), err=True)
        raise SystemExit(1) from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {base}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # reset, timed out, hung up mid-answer
        raise click.ClickException(
            f"{base} did not answer: {exc or type(exc).__name__}; is the app running (mlfn serve)?"
        ) from None
    click.echo(pretty(payload))


def _not_found(name: str, payload: bytes, url: str) -> str:
    """Why the app has no ``url``: in an app folder that has no endpoint NAME, the endpoints
    it has; else what the app said, in one line."""
    from runtime.errors import HostError

    known = None
    # An app that cannot be read here: the app's own answer stands.
    with contextlib.suppress(HostError, click.ClickException):
        if (Path.cwd() / "function_app.py").is_file():
            known = _predict_endpoints(Path.cwd())
    if known is not None and name not in known:
        path = urllib.parse.urlsplit(url).path
        return f"no endpoint {name!r} in this app answers {path}; known: {', '.join(known)}"
    try:
        said = json.loads(payload)["error"]["message"]
    except (ValueError, TypeError, KeyError):
        said = None
    return str(said) if said else f"{url}: 404 Not Found"


def _predict_endpoints(app_dir: Path) -> list[str]:
    """The endpoints of the app in ``app_dir`` with a predict route, as its functions say."""
    with told():
        settings(app_dir)  # local.settings.json Values: the app's own code may read them
        functions = index(app_dir).values()
    routes = (f.route for f in functions if f.trigger.type == "httpTrigger")
    return sorted(r.removesuffix("/predict") for r in routes if r.endswith("/predict"))


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

    text = read_data(data)
    # What the endpoint would refuse (NaN, a bad id) is refused here, before it is queued.
    with told():
        if job_id is not None:
            check_job_id(job_id)
        if traceparent is not None and trace_context.parse(traceparent) is None:
            raise click.ClickException(
                f"--traceparent {traceparent!r} is not a W3C trace parent (00-<32 hex>-<16 hex>-01)"
            )
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


@click.command(cls=OptionalWaitCommand)
@click.argument("name")
@wait_option("Seconds to wait for a first result", 0.0)
@click.option("--keep", is_flag=True, help="Leave the messages on the queue.")
@connection_option(TRIGGER_CONNECTION)
def results(name: str, wait_s: float, keep: bool, connection: str | None) -> None:
    """Print (and remove) the result messages of endpoint NAME, one JSON document a line.
    Exits 0 when there are none (none yet is no error), saying so on stderr."""
    queues = _endpoint_queues(name, connection)
    found = 0
    with told(), storage("the result queue"):
        for doc in queues.receive(wait_s=wait_s, delete=not keep):
            click.echo(json.dumps(doc))
            found += 1
    if not found:
        after = f" after {wait_s:g}s" if wait_s else ""
        click.echo(f"no results on {queues.results}{after}", err=True)
