"""``mlfn serve``: run any Python v2 Functions app in this folder on a local host.

This emulates the Azure Functions host from the app's own metadata; it is not ``func``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from runtime import config, redact
from runtime.host.asgi import HostApp, Listener
from runtime.host.blob_listener import BlobListener, BlobOptions, host_id
from runtime.host.http_server import HttpHost, http_protocol, http_route
from runtime.host.invocation_log import JsonFormatter
from runtime.host.invoke import Invoker
from runtime.host.local_settings import apply_local_settings
from runtime.host.metadata import FunctionInfo, index_app, registered_app
from runtime.host.queue_listener import QueueListener
from runtime.host.queue_options import QueueOptions
from runtime.host.storage_accounts import StorageAccounts
from runtime.host_json import HostConfig

log = logging.getLogger("mlfn.host")


def build_host(
    app_dir: Path, *, queues: bool = True
) -> tuple[HostApp, HostConfig, list[FunctionInfo]]:
    """Apply local settings, read host.json and index the app, as the Functions host does at
    start-up; return the host app, the configuration and every function."""
    apply_local_settings(app_dir)
    settings = config.Settings.from_mapping(os.environ)
    local = config.HostSettings.from_mapping(os.environ)
    config.warn_unknown()
    host_config = HostConfig.load(app_dir, os.environ)
    indexing = time.perf_counter()
    functions = index_app(app_dir)
    log.info(
        "indexed %d functions in %.0f ms (%.0f ms after process start)",
        len(functions),
        (time.perf_counter() - indexing) * 1000,
        since_process_start() * 1000,
    )
    invoker = Invoker(local.thread_count, host_config.function_timeout_s)
    http = HttpHost(functions, host_config.route_prefix, invoker, function_key=local.function_key)
    listeners: list[Listener] = []
    closers = [invoker.close]
    if queues:
        options = QueueOptions.from_host(host_config)
        accounts = StorageAccounts(os.environ, settings)
        closers.append(accounts.close)
        listeners += [
            QueueListener(f, invoker, options, accounts, os.environ, local.queue_lease_s)
            for f in functions
            if f.trigger.type == "queueTrigger"
        ]
        blob_options = BlobOptions(
            scan_s=local.blob_scan_s,
            lease_s=local.blob_lease_s,
            retry_s=options.visibility_timeout_s,
            message_encoding=options.message_encoding,
        )
        me = host_id(app_dir)
        listeners += [
            BlobListener(f, invoker, blob_options, accounts, os.environ, me)
            for f in functions
            if f.trigger.type == "blobTrigger"
        ]
    # An mlfn app says what its first request will need; importing it while the host waits
    # for that request takes it off the cold start (a plain v2 app has no such hook).
    services = getattr(registered_app(), "services", None)
    on_started = getattr(services, "import_ahead", None)
    if services is not None:  # after the invocations: the payload log's last records
        closers.append(services.close)
    return HostApp(http, listeners, closers, on_started), host_config, functions


def serve(app_dir: Path, host: str = "127.0.0.1", port: int = 7071, queues: bool = True) -> None:
    import uvicorn

    apply_local_settings(app_dir)  # before logging is set up: it may choose the log format
    local = config.HostSettings.from_mapping(os.environ)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact.install_in_logging()  # every line, the request lines and tracebacks included
    if local.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    # The storage SDK logs every request and response header at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
    app, host_config, functions = build_host(app_dir, queues=queues)
    base = f"http://{host}:{port}"
    listening = {listener.info.name: listener for listener in app.listeners}
    print("mlfn local host: emulates the Azure Functions host from the app's metadata (not func)\n")
    print("Functions:\n")
    for info in functions:
        if info in app.http.functions:
            methods = ",".join(info.methods or ("ALL",))
            route = http_route(info, host_config.route_prefix)
            print(f"\t{info.name}: [{methods}] {base}/{route}")
        elif info.name in listening:
            print(f"\t{info.name}: {info.trigger.type} on {listening[info.name].watches}")
        elif info.trigger.type in ("queueTrigger", "blobTrigger"):
            print(f"\t{info.name}: {info.trigger.type}, not run (--no-queues)")
        else:
            print(f"\t{info.name}: {info.trigger.type}, not run by this host yet")
    key_setting = config.HostSettings.variable("function_key")
    if any(f.auth_level != "ANONYMOUS" for f in app.http.functions):
        if app.http.function_key:
            print(f"\nFunction keys are enforced ({key_setting}): send x-functions-key or ?code=.")
        else:
            print(
                "\nFunction keys are not enforced (as with func start): set "
                f"{key_setting} in local.settings.json to require one. "
                "On Azure they are always enforced."
            )
    print(flush=True)
    # The HTTP host writes each request's one line itself (with its invocation id).
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        access_log=False,
        http=http_protocol(),  # closes idle and half-sent connections
    )


def since_process_start() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere): the part of a cold start
    spent before any of mlfn's code ran is counted too."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")
