"""``mlfn serve``: run any Python v2 Functions app in this folder on a local host.

This emulates the Azure Functions host from the app's own metadata; it is not ``func``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from runtime.host.host_json import HostConfig
from runtime.host.http_server import HttpHost, http_route
from runtime.host.invoke import Invoker
from runtime.host.local_settings import apply_local_settings
from runtime.host.metadata import FunctionInfo, index_app

log = logging.getLogger("mlfn.host")


def build_host(app_dir: Path) -> tuple[HttpHost, HostConfig, list[FunctionInfo]]:
    """Apply local settings, read host.json and index the app, as the Functions host does at
    start-up; return the HTTP host, the configuration and every function."""
    apply_local_settings(app_dir)
    config = HostConfig.load(app_dir, os.environ)
    functions = index_app(app_dir)
    return HttpHost(functions, config.route_prefix, Invoker(str(app_dir))), config, functions


def serve(app_dir: Path, host: str = "127.0.0.1", port: int = 7071) -> None:
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    http, config, functions = build_host(app_dir)
    base = f"http://{host}:{port}"
    print("mlfn local host: emulates the Azure Functions host from the app's metadata (not func)\n")
    print("Functions:\n")
    for info in http.functions:
        methods = ",".join(info.methods or ("ALL",))
        print(f"\t{info.name}: [{methods}] {base}/{http_route(info, config.route_prefix)}")
    for info in functions:
        if info not in http.functions:
            print(f"\t{info.name}: {info.trigger.type}, not run by this host yet")
    if any(f.auth_level != "ANONYMOUS" for f in http.functions):
        print("\nFunction keys are not enforced locally (as with func start); on Azure they are.")
    print(flush=True)
    uvicorn.run(http, host=host, port=port, log_config=None, lifespan="off", access_log=True)
