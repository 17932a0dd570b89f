"""Indexing an app as the Functions worker does: import ``function_app.py`` from the app root,
find the one ``FunctionRegister``, read each function's bindings."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import STORAGE_SETTING
from runtime.discovery import import_failure
from runtime.errors import HostError, IndexingError
from runtime.host import worker_rules

SCRIPT = "function_app.py"


@dataclass(frozen=True)
class Binding:
    name: str
    type: str
    direction: str
    raw: dict[str, Any]

    @property
    def connection(self) -> str:
        """The app setting naming the storage account; Functions defaults to AzureWebJobsStorage."""
        return str(self.raw.get("connection") or STORAGE_SETTING)


@dataclass(frozen=True)
class FunctionInfo:
    """One function of the app, as the host sees it."""

    name: str
    trigger: Binding
    bindings: tuple[Binding, ...]
    fn: Callable[..., Any]
    is_async: bool
    wants_context: bool
    directory: str  # where the function's source file is: the worker's function_directory

    @property
    def outputs(self) -> tuple[Binding, ...]:
        return tuple(b for b in self.bindings if b.direction == "OUT")

    @property
    def auth_level(self) -> str:
        return str(self.trigger.raw.get("authLevel", "FUNCTION")).upper()

    @functools.cached_property
    def methods(self) -> tuple[str, ...] | None:
        """HTTP methods, or None when the function accepts every method."""
        methods = self.trigger.raw.get("methods")
        return tuple(str(m).upper() for m in methods) if methods else None

    @property
    def route(self) -> str:
        return str(self.trigger.raw.get("route") or self.name)


def index_app(app_dir: Path) -> list[FunctionInfo]:
    """Import ``app_dir/function_app.py`` by module name, with ``app_dir`` on ``sys.path``."""

    app_dir = app_dir.resolve()
    if not (app_dir / SCRIPT).is_file():
        raise IndexingError(f"{app_dir / SCRIPT} not found: not a Python v2 Functions app")
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    try:
        importlib.import_module(Path(SCRIPT).stem)
    except HostError:
        raise  # mlfn's own refusals already say which file and what to do
    except Exception as exc:  # the app's own code: a person fixes it from one line
        raise IndexingError(import_failure(exc, app_dir, SCRIPT)) from exc
    return [_describe(f) for f in functions_of(registered_app())]


def functions_of(app: Any) -> list[Any]:
    """The app's functions, as the worker asks for them. Called once per app: a second call
    fails on "unique function name"."""
    try:
        return list(app.get_functions())
    except ValueError as exc:  # duplicate names, a function without a trigger, ...
        raise IndexingError(f"indexing the app failed: {exc}") from None


def registered_app() -> Any:
    """The one ``FunctionRegister`` of the imported ``function_app`` module."""
    import azure.functions as func

    module = sys.modules[Path(SCRIPT).stem]
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if not apps:
        raise IndexingError("Could not find top level function app instances in function_app.py.")
    if len(apps) > 1:
        raise IndexingError(
            "More than one FunctionApp or other top level function app instances are defined."
        )
    return apps[0]


def _describe(f: Any) -> FunctionInfo:
    refused = worker_rules.problems(f)
    if refused:
        # The worker refuses such a function (FunctionLoadError); refuse it here too.
        raise IndexingError(
            f"cannot load the {f.get_function_name()} function: {'; '.join(refused)}"
        )
    bindings = tuple(_binding(json.loads(raw)) for raw in f.get_raw_bindings())
    trigger_name = f.get_trigger().name
    trigger = next(b for b in bindings if b.name == trigger_name)
    fn = f.get_user_function()
    wants_context = "context" in inspect.signature(fn).parameters
    return FunctionInfo(
        name=f.get_function_name(),
        trigger=trigger,
        bindings=bindings,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        wants_context=wants_context,
        directory=str(Path(inspect.getfile(fn)).parent),
    )


def _binding(raw: dict[str, Any]) -> Binding:
    return Binding(raw["name"], raw["type"], str(raw.get("direction", "IN")).upper(), raw)
