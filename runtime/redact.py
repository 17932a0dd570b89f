"""Keeping credentials out of logs, error bodies and public documents: function keys given as
``?code=``, SAS tokens in blob URLs, keys in storage connection strings, in messages and in
tracebacks alike."""

from __future__ import annotations

import logging
import re
import threading
import traceback
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

HIDDEN = "REDACTED"
# The function key, and every Shared Access Signature field: ``sig`` is the secret, the rest
# say what it grants and until when, which is nobody else's business either. Then the names
# other services give a credential in a query.
SECRET_QUERY = frozenset({
    "code", "sig", "sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "si", "sip", "sdd",
    "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
    "key", "apikey", "api_key", "api-key", "x-functions-key", "token", "access_token",
    "refresh_token", "id_token", "secret", "client_secret", "password", "passwd", "pwd",
    "accountkey", "sharedaccesssignature", "sharedaccesskey", "signature",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
})  # fmt: skip
_CONNECTION_SECRET = re.compile(
    r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey)=[\"']?[^;\s\"']+"
)
# A run of text that may hold ``name=value`` pairs: everything up to white space, since a
# request target or URL cannot hold any, while quotes, ``<`` and ``>`` can (a server reads
# ``?note='hi'&code=KEY`` as two parameters, so redaction must too).
_CANDIDATE = re.compile(r"(?<!\S)[^\s=]*=\S*")
# Closing punctuation kept after a hidden value, so a quoted URL stays quoted in a message.
_CLOSING = re.compile(r"[\"')\]>]*\Z")


def _secret_name(raw: str) -> bool:
    """Whether a parameter named ``raw`` (as written, before decoding) carries a credential,
    read as ``urllib.parse.parse_qsl`` reads a name: ``+`` a space, ``%XX`` decoded, and
    compared without case, as the local host and Azure compare ``code``."""
    if "%" in raw or "+" in raw:
        raw = unquote(raw.replace("+", " "))
    name = raw.strip().lower()
    return name in SECRET_QUERY or name.lstrip("\"'(<[{").strip() in SECRET_QUERY


def query(value: str) -> str:
    """A query string with the values of secret parameters replaced and the rest kept as
    written. Parameters are found as ``parse_qsl`` finds them (pairs split at ``&``, a name
    up to the first ``=``), so nothing a server reads as ``code`` is left out; a URL inside a
    value has its own query read too."""
    if "=" not in value:
        return value
    return "&".join(_pair(piece) for piece in value.split("&"))


def _pair(piece: str) -> str:
    kept: list[str] = []
    rest = piece
    while True:  # a loop, not recursion: a hostile value may nest "?" without end
        name, eq, given = rest.partition("=")
        if not eq:
            break
        # In free text the name may follow a URL (``https://h/p?sig``): it is what follows
        # the last "?", a superset of what a server would read.
        if _secret_name(name.rpartition("?")[2]):
            if given != HIDDEN:
                closing = _CLOSING.search(given)
                rest = f"{name}={HIDDEN}{closing.group(0) if closing else ''}"
            break
        head, mark, tail = given.partition("?")
        if not mark:
            break
        kept.append(f"{name}={head}?")
        rest = tail
    kept.append(rest)
    return "".join(kept)


def url(value: str) -> str:
    """``value`` with secret query parameters and any ``user:password@`` replaced."""
    parts = urlsplit(value)
    netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, query(parts.query), parts.fragment))


def text(value: str) -> str:
    """Free text (a log line, an error message, a traceback) with the secrets of any URL
    query string or connection string in it replaced."""
    if "=" not in value:
        return value
    lowered = value.lower()
    if "accountkey" in lowered or "sharedaccess" in lowered:  # the regex costs more than this
        value = _CONNECTION_SECRET.sub(lambda m: f"{m.group(1)}={HIDDEN}", value)
    return _CANDIDATE.sub(lambda m: query(m.group(0)), value)


_installed = False
_install_lock = threading.Lock()


def install_in_logging() -> None:
    """Redact every log record this process makes, whoever logs it and whatever handler
    writes it (the Functions worker's, OpenTelemetry's, ``mlfn serve``'s): the message, and
    a traceback whose text holds a secret. Idempotent.

    Done where records are made, not by a filter on some handler: handlers are the host's
    (the worker adds its own before importing the app, exporters add theirs later), and a
    filter on a logger misses what its children propagate."""
    global _installed
    with _install_lock:
        if _installed:
            return
        made = logging.getLogRecordFactory()

        def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = made(*args, **kwargs)
            scrub(record)
            return record

        logging.setLogRecordFactory(redacted_record)
        _installed = True


def scrub(record: logging.LogRecord) -> None:
    """``record`` without secrets: its message rendered and redacted when it holds one; a
    traceback that holds one rendered, redacted and kept as ``exc_text`` (what every
    ``logging.Formatter`` prints), and its exception replaced by a stand-in of the same name,
    stack and causes whose messages are redacted (what a handler that formats the exception
    itself reads: OpenTelemetry's, so Application Insights still gets the type and stack)."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when the record is written
        return
    cleaned = text(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None:
        rendered = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        cleaned = text(rendered)
        if cleaned != rendered:
            record.exc_info, record.exc_text = _redacted_exc_info(record.exc_info), cleaned
    if record.stack_info:
        record.stack_info = text(record.stack_info)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _redacted_exc_info(exc_info: Any) -> ExcInfo | None:
    """A stand-in for the exception of ``exc_info`` that formats to the same traceback with its
    secrets redacted; None when that is not possible: a secret written in the code of a frame
    (source lines are read from the file whenever the stack is formatted)."""
    _, value, tb = exc_info
    if value is None:
        return None
    try:
        stand_in = _stand_in(value, set())
    except Exception:  # a cause chain deeper than the stack, a note whose str() fails: the
        return None  # redacted text stays, and a log call must never raise
    formatted = "".join(traceback.format_exception(type(stand_in), stand_in, tb))
    if text(formatted) != formatted:
        return None
    return type(stand_in), stand_in, tb


def _stand_in(exc: BaseException, seen: set[int]) -> BaseException:
    """An exception named as ``exc`` (module and class), with its message redacted as its only
    argument, its notes redacted, its traceback and its causes' stand-ins."""
    seen.add(id(exc))
    cls = type(exc)
    named: type[Exception] = type(cls.__name__, (Exception,), {"__module__": cls.__module__})
    named.__qualname__ = cls.__qualname__
    try:
        said = str(exc)
    except Exception:  # a __str__ that fails: format_exception says so, and so does this
        said = "<exception str() failed>"
    stand_in = named(text(said)) if said else named()
    stand_in.__traceback__ = exc.__traceback__
    stand_in.__suppress_context__ = exc.__suppress_context__
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        stand_in.__notes__ = [text(str(note)) for note in notes]
    # A chain may loop (an exception raised while handling itself): each is taken once.
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        stand_in.__cause__ = _stand_in(exc.__cause__, seen)
    if exc.__context__ is not None and id(exc.__context__) not in seen:
        stand_in.__context__ = _stand_in(exc.__context__, seen)
    return stand_in
