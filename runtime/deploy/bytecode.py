"""The bytecode ``mlfn pack`` ships beside each Python file, so a fresh instance does not compile
the app's code at its first start.

An app run from a package on Azure sits in a read-only folder: Python cannot write
``__pycache__`` there, so every cold start compiles ``function_app.py``, ``functions/`` and
``runtime/`` from source again (bench/first_request.py measures what that costs). The entries
are hash-checked (PEP 552): at import Python hashes the source and uses the bytecode only when
it matches, so a stale entry costs a compile, as with no entry, and never runs old code; no file
time is involved, which a zip does not keep exactly. They are compiled by the packing
interpreter and named for it (``cpython-311``): another Python version looks for its own name,
finds none and compiles from source as before.
"""

from __future__ import annotations

import importlib.util
import marshal
import sys
from pathlib import PurePosixPath

# PEP 552's flags word: hash-based (bit 0), checked against the source at import (bit 1).
_CHECKED_HASH = (0b11).to_bytes(4, "little")


def tag() -> str:
    """The packing interpreter's cache tag, the part of a bytecode file's name that says which
    Python reads it (``cpython-311``)."""
    found = sys.implementation.cache_tag
    if found is None:  # an implementation without bytecode caching: nothing to ship
        raise RuntimeError(f"{sys.implementation.name} writes no bytecode")
    return found


def cache_name(relative: str) -> str:
    """Where the interpreter looks for the bytecode of the package's file ``relative``
    (POSIX, relative to the app root): ``a/b.py`` -> ``a/__pycache__/b.cpython-311.pyc``."""
    path = PurePosixPath(relative)
    return (path.parent / "__pycache__" / f"{path.stem}.{tag()}.pyc").as_posix()


def compiled(relative: str, source: bytes) -> bytes | None:
    """A hash-checked bytecode file for ``source``, or None when it does not compile (its import
    then fails with Python's own error, as it would without bytecode). Tracebacks name the file
    where it is imported from: the loader sets that path on the code it reads."""
    try:
        # optimize=0 whatever the packer runs with (-O): the worker runs the app without -O,
        # and reads bytecode named as this is only if its asserts are in it.
        code = compile(source, relative, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):  # ValueError: a null byte in the source
        return None
    header = importlib.util.MAGIC_NUMBER + _CHECKED_HASH + importlib.util.source_hash(source)
    return header + marshal.dumps(code)
