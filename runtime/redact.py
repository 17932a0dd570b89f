"""Keeping credentials out of logs, error bodies and public documents: function keys given as
``?code=``, SAS tokens in blob URLs, keys in storage connection strings."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "REDACTED"
# The function key, and every Shared Access Signature field: ``sig`` is the secret, the rest
# say what it grants and until when, which is nobody else's business either.
SECRET_QUERY = frozenset({
    "code", "sig", "sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "si", "sip", "sdd",
    "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
})  # fmt: skip
_CONNECTION_SECRET = re.compile(
    r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s\"']+"
)
_QUERY = re.compile(r"\?[^\s\"'<>]*")


def url(value: str) -> str:
    """``value`` with secret query parameters and any ``user:password@`` replaced."""
    parts = urlsplit(value)
    netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode(
            [(k, HIDDEN if k.lower() in SECRET_QUERY else v) for k, v in pairs], safe=HIDDEN
        )
    else:
        query = ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def text(value: str) -> str:
    """Free text (a log line, an error message) with the secrets of any URL query string or
    connection string in it replaced."""
    value = _CONNECTION_SECRET.sub(lambda m: f"{m.group(1)}={HIDDEN}", value)
    return _QUERY.sub(lambda m: "?" + url("http://x/" + m.group(0)).partition("?")[2], value)
