"""What the ``mlfn`` commands read from the app folder they run in: its settings, its
functions, the storage account a trigger names, and the options that stand in for them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runtime.config import STORAGE_SETTING, Settings
from runtime.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from runtime.config import Connection
    from runtime.host.metadata import FunctionInfo

TRIGGER_CONNECTION = f"the trigger's connection setting ({STORAGE_SETTING})"


def settings(app_dir: Path, overrides: Mapping[str, str] | None = None) -> Settings:
    """The app folder's settings: local.settings.json Values under the environment's, both
    under ``overrides`` (a command's options)."""
    from runtime.host.local_settings import apply_local_settings

    apply_local_settings(app_dir)
    return Settings.from_mapping({**os.environ, **(overrides or {})})


def connection_option(setting: str, applies: str = "") -> Callable[[F], F]:
    """``--connection``: the storage account of a command that talks to storage, standing in
    for ``setting``, which is otherwise read as ``mlfn serve`` reads it."""
    return click.option(
        "--connection",
        default=None,
        metavar="STRING",
        help=f"Storage connection string{applies}. Default: {setting} from the environment "
        f"(make serve prints export {STORAGE_SETTING}=... when its Azurite is on other ports), "
        "else from local.settings.json Values, as mlfn serve reads it.",
    )


JSON_LINES = (".jsonl", ".ndjson")


def read_data(data: str) -> str:
    """``--data`` as JSON text: the text itself, or ``@FILE``'s; a JSON Lines file (``.jsonl``)
    as ``{"instances": [...]}``, one instance a line, a bad line named by its number."""
    if not data.startswith("@"):
        return data
    try:
        raw = Path(data[1:]).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"--data {data}: {exc.strerror or exc}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise click.ClickException(
            f"--data {data}: is not UTF-8 text (JSON or JSON Lines)"
        ) from None
    if not data.lower().endswith(JSON_LINES):
        return text
    from runtime.cli.output import told
    from runtime.protocol import json_input

    # Lines end at \n alone: str.splitlines would also split a JSON string at U+2028.
    lines = enumerate(text.split("\n"), 1)
    with told():
        instances = [
            json_input.loads(line, f"--data {data} line {number}")
            for number, line in lines
            if line.strip()
        ]
    return json.dumps({"instances": instances})


def index(app_dir: Path) -> dict[str, FunctionInfo]:
    """The app's functions by name (an app that fails to import is one line: output.told)."""
    from runtime.host.metadata import SCRIPT, index_app

    if not (app_dir / SCRIPT).is_file():  # the commands read the app they are run in
        raise click.ClickException(
            f"no {SCRIPT} in {app_dir}: run mlfn in the app's folder (where {SCRIPT} and "
            "local.settings.json are)"
        )
    return {f.name: f for f in index_app(app_dir)}


def storage_account(
    app_dir: Path, setting: str, connection: str | None
) -> tuple[Connection, Settings]:
    """The account app setting ``setting`` names (or ``--connection``, standing in for it) and
    the settings read with it."""
    from runtime.storage import clients

    overrides = {setting: connection} if connection else {}
    found = settings(app_dir, overrides)
    try:
        return clients.connection(setting, {**os.environ, **overrides}), found
    except ConfigError as exc:
        raise click.ClickException(
            f"{exc.message} (the environment, local.settings.json Values, or --connection)"
        ) from None
