"""A small hand-written v2 app (no mlfn) whose functions report what they were handed: which
thread ran them, the invocation id on it, the request and message as converted, and what they
return that the worker refuses. Run by the worker harness (in a fresh interpreter: one app per
process) and by the local host, which must agree."""

from __future__ import annotations

import json
from pathlib import Path

REPORTING_APP = """
import asyncio
import json
import threading
import time

import azure.functions as func

from reporting_extra.routes import bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(bp)


def seen(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    try:
        asyncio.get_running_loop()
        on_event_loop = True
    except RuntimeError:
        on_event_loop = False
    doc = {
        "invocation_id": context.invocation_id,
        "thread_local_invocation_id": getattr(context.thread_local_storage, "invocation_id", None),
        "on_event_loop": on_event_loop,
        "thread": threading.get_ident(),
        "function_name": context.function_name,
        "function_directory": context.function_directory,
        "retry_count": getattr(context.retry_context, "retry_count", None),
        "method": req.method,
        "params": dict(req.params),
        "route_params": dict(req.route_params),
        "headers": {k: v for k, v in req.headers.items() if k.startswith("x-")},
        "body": req.get_body().hex(),
    }
    return func.HttpResponse(json.dumps(doc), mimetype="application/json")


@app.route(route="sync/{name}", methods=["GET", "POST"])
def sync_report(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    time.sleep(float(req.params.get("sleep", "0")))
    return seen(req, context)


@app.route(route="async/{name}", methods=["GET", "POST"])
async def async_report(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    await asyncio.sleep(float(req.params.get("sleep", "0")))
    return seen(req, context)


@app.route(route="text")
def text(req: func.HttpRequest) -> str:
    return "h\\u00e9llo"


@app.route(route="headers")
def headers(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        "accepted", status_code=202, headers={"Retry-After": "7", "X-Mixed-Case": "Yes"}
    )


@app.route(route="nothing")
def nothing(req: func.HttpRequest) -> func.HttpResponse:
    return None


@app.route(route="raw")
def raw(req: func.HttpRequest):
    return b"raw bytes"


@app.queue_trigger(arg_name="msg", queue_name="%REPORT_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%REPORT_QUEUE%-out", connection="AzureWebJobsStorage")
def report_message(msg: func.QueueMessage, out: func.Out[str], context: func.Context) -> None:
    times = {
        "insertion_time": msg.insertion_time,
        "expiration_time": msg.expiration_time,
        "time_next_visible": msg.time_next_visible,
    }
    out.set(json.dumps({
        "body": msg.get_body().hex(),
        "id_type": type(msg.id).__name__,
        "dequeue_count": msg.dequeue_count,
        "pop_receipt_type": type(msg.pop_receipt).__name__,
        "times": {k: [type(v).__name__, str(v.utcoffset()) if v else None] for k, v in times.items()},
        "same_invocation": (
            getattr(context.thread_local_storage, "invocation_id", None) == context.invocation_id
        ),
    }))
"""


# A function registered from a module in a folder of its own: its function_directory.
EXTRA_ROUTES = """
import azure.functions as func

bp = func.Blueprint()


@bp.route(route="elsewhere", auth_level=func.AuthLevel.ANONYMOUS)
def elsewhere(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(context.function_directory)
"""
EXTRA_PACKAGE = "reporting_extra"


def reporting_app(app_dir: Path) -> Path:
    """REPORTING_APP with a host.json that polls its queue every second at most and gives up
    on a message at its first failure."""
    (app_dir / EXTRA_PACKAGE).mkdir(parents=True, exist_ok=True)
    (app_dir / EXTRA_PACKAGE / "__init__.py").write_text("")
    (app_dir / EXTRA_PACKAGE / "routes.py").write_text(EXTRA_ROUTES)
    (app_dir / "function_app.py").write_text(REPORTING_APP)
    host_json = {
        "version": "2.0",
        "extensions": {"queues": {"maxPollingInterval": "00:00:01", "maxDequeueCount": 1}},
    }
    (app_dir / "host.json").write_text(json.dumps(host_json))
    return app_dir
