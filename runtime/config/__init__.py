"""Settings: each one declared once (its variable, type, default and meaning), read once from a
mapping (the process environment unless a test passes a dict), with errors that name it."""

from __future__ import annotations

import difflib
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# Storage connections are settings too; ``runtime.config`` is where callers find them.
from runtime.config.connection import CONNECTION_PROPERTIES as CONNECTION_PROPERTIES
from runtime.config.connection import Connection as Connection
from runtime.config.connection import Identity as Identity
from runtime.config.connection import connection as connection
from runtime.config.connection import storage_account as storage_account
from runtime.errors import ConfigError

log = logging.getLogger("mlfn.config")

PREFIX = "MLFN_"
STORAGE_SETTING = "AzureWebJobsStorage"

Parse = Callable[[str, str], Any]
"""Turns a variable's raw text into its value; called with (variable name, text)."""


def text(name: str, raw: str) -> str:
    return raw


def number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "a number") from None
    if not 0 <= value < math.inf:  # also refuses nan
        raise ConfigError(name, raw, "a finite number >= 0")
    return value


def share(name: str, raw: str) -> float:
    value = number(name, raw)
    if value > 1:
        raise ConfigError(name, raw, "a share between 0 and 1 (0.1 for a tenth)")
    return value


def optional_number(name: str, raw: str) -> float | None:
    """A positive number, or None for 0 (the feature is off)."""
    return number(name, raw) or None


def whole_number(name: str, raw: str) -> int:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "a whole number") from None
    if not (value.is_integer() and value >= 0):  # "2" and "2.0" alike; not 2.5, inf or nan
        raise ConfigError(name, raw, "a whole number >= 0")
    return int(value)


def positive_whole_number(name: str, raw: str) -> int:
    value = whole_number(name, raw)
    if value < 1:
        raise ConfigError(name, raw, "a whole number >= 1")
    return value


def optional_positive_whole_number(name: str, raw: str) -> int | None:
    """A whole number >= 1, or None for 0 (the default applies)."""
    return whole_number(name, raw) or None


def boolean(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, raw, "true or false")


def optimization_level(name: str, raw: str) -> str:
    value = raw.lower()
    if value not in ("disabled", "basic", "extended", "all"):
        raise ConfigError(name, raw, "one of disabled, basic, extended, all")
    return value


def log_format(name: str, raw: str) -> str:
    value = raw.lower()
    if value not in ("text", "json"):
        raise ConfigError(name, raw, "text or json")
    return value


def warm_start(name: str, raw: str) -> str:
    value = raw.lower()
    if value not in ("models", "imports", "off"):
        raise ConfigError(name, raw, "models, imports or off")
    return value


def path(name: str, raw: str) -> Path:
    return Path(raw)


def names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def setting(
    variable: str,
    default: Any,
    parse: Parse,
    help: str,
    unset: Callable[[Mapping[str, str]], Any] | None = None,
) -> Any:
    """A field of ``Settings`` read from ``variable``; unset or blank means ``default``, or
    what ``unset`` makes of the other variables when given."""
    meta = {"variable": variable, "parse": parse, "help": help, "unset": unset}
    return field(default=default, metadata=meta)


class _FromEnvironment:
    """Reading a dataclass of ``setting()`` fields from a mapping of variables."""

    @classmethod
    def _read(cls, env: Mapping[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            variable = f.metadata["variable"]
            raw = env.get(variable, "").strip()
            if raw:
                values[f.name] = f.metadata["parse"](variable, raw)
            elif f.metadata.get("unset") is not None:
                values[f.name] = f.metadata["unset"](env)
        return values

    @classmethod
    def variable(cls, field_name: str) -> str:
        """The environment variable of a setting, by field name."""
        found: str = next(
            f.metadata["variable"]
            for f in fields(cls)  # type: ignore[arg-type]
            if f.name == field_name
        )
        return found


@dataclass(frozen=True)
class Settings(_FromEnvironment):
    """What the runtime reads from its environment. ``describe()`` lists every setting (these and
    ``HostSettings``); the README's table and the tests are checked against it."""

    model_store: str | None = setting(
        "MLFN_MODEL_STORE",
        None,
        text,
        "Store URI or folder that relative model paths resolve against.",
    )
    store_connection: Connection | None = setting(
        "MLFN_MODEL_STORE_CONNECTION",
        None,
        storage_account,
        "Storage account of az:// models: a connection string, or the identity-based "
        "MLFN_MODEL_STORE_CONNECTION__blobServiceUri (or __accountName). Default: "
        "AzureWebJobsStorage.",
    )
    storage_connection: Connection | None = setting(
        STORAGE_SETTING,
        None,
        storage_account,
        "The app's own storage account: queues, claim-check payloads and large results. A "
        "connection string, or identity-based: AzureWebJobsStorage__accountName (or "
        "__blobServiceUri and __queueServiceUri), __credential, __clientId.",
    )
    s3_endpoint_url: str | None = setting(
        "MLFN_S3_ENDPOINT_URL", None, text, "Endpoint of an S3-compatible store for s3:// models."
    )
    cache_dir: Path = setting(
        "MLFN_CACHE_DIR",
        Path("/tmp/mlfn-cache"),
        path,
        "Disk cache of downloaded models (unset: mlfn-cache in TMPDIR, else in /tmp).",
        unset=lambda env: Path(env.get("TMPDIR", "").strip() or "/tmp") / "mlfn-cache",
    )
    store_connect_timeout_s: float = setting(
        "MLFN_STORE_CONNECT_TIMEOUT_S", 3.0, number, "Seconds to connect to a store."
    )
    store_read_timeout_s: float = setting(
        "MLFN_STORE_READ_TIMEOUT_S", 30.0, number, "Seconds to wait for a store's answer."
    )
    store_retries: int = setting(
        "MLFN_STORE_RETRIES", 2, whole_number, "Retries of a failed store request."
    )
    load_timeout_s: float = setting(
        "MLFN_LOAD_TIMEOUT_S",
        120.0,
        number,
        "Seconds a request waits for a model another request is loading.",
    )
    memory_budget_mb: float | None = setting(
        "MLFN_MEMORY_BUDGET_MB",
        None,
        optional_number,
        "Memory for loaded models; least recently used idle ones are unloaded. 0: no limit.",
    )
    idle_unload_s: float | None = setting(
        "MLFN_IDLE_UNLOAD_S",
        None,
        optional_number,
        "Unload a model idle this many seconds. 0: never.",
    )
    revalidate_s: float | None = setting(
        "MLFN_REVALIDATE_S",
        None,
        optional_number,
        "Check a loaded model against its store this often, swapping in a changed one. 0: never.",
    )
    release_check_s: float | None = setting(
        "MLFN_RELEASE_CHECK_S",
        10.0,
        optional_number,
        "Read each endpoint's release document (NAME.release.json beside its model, written by "
        "mlfn release) again this often while requests come. 0: no releases, the code's model.",
    )
    ort_intra_op_threads: int | None = setting(
        "MLFN_ORT_INTRA_OP_THREADS",
        None,
        optional_positive_whole_number,
        "Threads one model run may use. Default (or 0): every CPU the process may use.",
    )
    ort_inter_op_threads: int = setting(
        "MLFN_ORT_INTER_OP_THREADS",
        1,
        positive_whole_number,
        "Threads for running independent parts of a graph in parallel.",
    )
    ort_optimization: str = setting(
        "MLFN_ORT_OPTIMIZATION",
        "all",
        optimization_level,
        "onnxruntime graph optimisation: disabled, basic, extended or all.",
    )
    ort_providers: tuple[str, ...] = setting(
        "MLFN_ORT_PROVIDERS",
        (),
        names,
        "Execution providers in order of preference, comma-separated. Default (or auto): "
        "CUDAExecutionProvider when onnxruntime-gpu sees a device, else the CPU.",
    )
    ort_keep_optimized: bool = setting(
        "MLFN_ORT_KEEP_OPTIMIZED",
        False,
        boolean,
        "Keep each model's optimised graph in the cache, so later cold starts skip optimising "
        "(worth it for graphs that take long to optimise; the saving process holds about one "
        "more copy of the weights).",
    )
    claim_check_containers: tuple[str, ...] = setting(
        "MLFN_CLAIM_CHECK_CONTAINERS", (), names,
        "Containers queue messages may name in instances_blob, comma-separated. Unset: any "
        "of the app's account but the Functions host's own (azure-webjobs-*).",
    )  # fmt: skip
    preload: tuple[str, ...] = setting(
        "MLFN_PRELOAD", (), names, "Endpoints whose models load at start, comma-separated."
    )
    warm_start: str = setting(
        "MLFN_WARM_START",
        "off",
        warm_start,
        "What starts in the background as the app is indexed, before any request: models "
        "(imports, services and every endpoint's model, only MLFN_PRELOAD's when it names any, "
        "none under MLFN_MEMORY_BUDGET_MB), imports (onnxruntime, the store's SDK, the "
        "services), or off.",
    )
    payload_log: str | None = setting(
        "MLFN_PAYLOAD_LOG",
        None,
        text,
        "Where every endpoint's payload log goes (docs/payload-log.md): az://CONTAINER/PREFIX "
        "in the app's storage account, or a folder. Unset: only endpoints declaring "
        "Endpoint(log=Log(...)) log, to az://payload-log.",
    )
    payload_log_sample: float = setting(
        "MLFN_PAYLOAD_LOG_SAMPLE",
        1.0,
        share,
        "Share of requests logged (0 to 1), where Endpoint(log=Log(sample=...)) says none.",
    )
    payload_log_flush_s: float = setting(
        "MLFN_PAYLOAD_LOG_FLUSH_S",
        60.0,
        number,
        "Seconds a payload-log record waits in memory at most before it is written.",
    )
    payload_log_flush_rows: int = setting(
        "MLFN_PAYLOAD_LOG_FLUSH_ROWS",
        10_000,
        positive_whole_number,
        "Payload-log records that start a flush as soon as they wait.",
    )
    payload_log_buffer_rows: int = setting(
        "MLFN_PAYLOAD_LOG_BUFFER_ROWS",
        100_000,
        positive_whole_number,
        "Payload-log records kept in memory at most (waiting, or unwritten while the "
        "destination is down); more are dropped and counted.",
    )
    payload_log_buffer_mb: float = setting(
        "MLFN_PAYLOAD_LOG_BUFFER_MB",
        64.0,
        number,
        "Memory the payload log's waiting records may hold, roughly; more are dropped.",
    )

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        values = cls._read(env)
        for name in ("store_connection", "storage_connection"):
            found = connection(cls.variable(name), env)  # the identity-based form too
            if found is not None:
                values[name] = found
        if "store_connection" not in values:
            values["store_connection"] = values.get("storage_connection")
        return cls(**values)


@dataclass(frozen=True)
class HostSettings(_FromEnvironment):
    """The local host's settings (``mlfn serve``); the Functions host on Azure has its own.
    Read only by the local host, so a deployed app never fails on one of them."""

    function_key: str | None = setting(
        "MLFN_FUNCTION_KEY",
        None,
        text,
        "Key FUNCTION-level routes require locally (x-functions-key or ?code=). Unset: none.",
    )
    queue_lease_s: float = setting(
        "MLFN_HOST_QUEUE_LEASE_S",
        30.0,
        number,
        "Seconds a fetched queue message stays invisible before its lease is renewed.",
    )
    blob_scan_s: float = setting(
        "MLFN_HOST_BLOB_SCAN_S",
        1.0,
        number,
        "Seconds between listings of each blob-triggered function's container.",
    )
    blob_lease_s: float = setting(
        "MLFN_HOST_BLOB_LEASE_S",
        30.0,
        number,
        "Seconds a blob's receipt is held by the host running it (renewed while it runs); a "
        "host that dies leaves it to the next after this long.",
    )
    log_format: str = setting(
        "MLFN_LOG_FORMAT",
        "text",
        log_format,
        "The local host's log lines: text, or json (one object a line, with the invocation's "
        "function, id and duration as fields).",
    )
    thread_count: int | None = setting(
        "PYTHON_THREADPOOL_THREAD_COUNT", None, positive_whole_number,
        "Threads that run sync functions, as the Python worker sizes them. Default: "
        "min(32, cores + 4).",
    )  # fmt: skip

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> HostSettings:
        return cls(**cls._read(env))


def describe() -> list[tuple[str, Any, str]]:
    """(variable, default, meaning) of every setting, the runtime's then the local host's."""
    return [
        (f.metadata["variable"], f.default, f.metadata["help"])
        for cls in (Settings, HostSettings)
        for f in fields(cls)
    ]


def known_variables() -> frozenset[str]:
    """Every ``MLFN_*`` variable mlfn reads: the app's, the local host's and the client
    commands' (``MLFN_URL``, which a shell that also runs ``mlfn serve`` may well export)."""
    from runtime.config.client import ClientSettings  # imports this module

    client = {f.metadata["variable"] for f in fields(ClientSettings)}
    return frozenset(variable for variable, _, _ in describe()) | client


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    """A sentence for each ``MLFN_*`` variable no setting reads, naming the closest one."""
    known = known_variables()
    found = []
    for name in sorted(n for n in env if n.upper().startswith(PREFIX) and n not in known):
        base, _, prop = name.partition("__")
        if base == Settings.variable("store_connection"):
            if prop.lower() in {p.lower() for p in CONNECTION_PROPERTIES}:
                continue
            found.append(
                f"{name} is not a property of a storage connection and is ignored; known: "
                + ", ".join(CONNECTION_PROPERTIES)
            )
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        found.append(f"{name} is not an mlfn setting and is ignored{hint}")
    return found


_warned = False


def warn_unknown(env: Mapping[str, str] | None = None) -> None:
    """Log one warning per unknown ``MLFN_*`` variable (of the process environment by default),
    once per process: a typo must not switch a setting off without a word."""
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    for sentence in unknown_settings(os.environ if env is None else env):
        log.warning("%s", sentence)


_current: Settings | None = None
_lock = threading.Lock()


def current() -> Settings:
    """The process's settings, read from ``os.environ`` on first use (not at import: the local
    host and the Functions worker set the environment before the first invocation)."""
    global _current
    with _lock:
        if _current is None:
            _current = Settings.from_mapping(os.environ)
            first = True
        else:
            first = False
    if first:
        warn_unknown()
    return _current
