"""mlfn's own version, as reported by the OpenAPI document and the V2 server metadata."""

from __future__ import annotations

import functools


@functools.cache
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlfn")
    except PackageNotFoundError:  # a checkout that was not installed
        return "0"
