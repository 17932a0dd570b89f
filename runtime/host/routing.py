"""HTTP route templates as Azure Functions reads them (ASP.NET syntax), and matching by
ASP.NET's precedence: literals before constrained parameters before plain ones before
optional ones before catch-alls."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_PARAM = re.compile(r"\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^{}]*)\}")


def _int_in(bits: int) -> Callable[[str], bool]:
    def check(v: str) -> bool:
        try:
            value = int(v)
        except ValueError:
            return False
        return bool(-(2 ** (bits - 1)) <= value < 2 ** (bits - 1))

    return check


def _parses(parse: Callable[[str], object]) -> Callable[[str], bool]:
    def check(v: str) -> bool:
        try:
            parse(v)
        except ValueError:
            return False
        return True

    return check


_SIMPLE_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": _int_in(32),
    "long": _int_in(64),
    "bool": lambda v: v.lower() in ("true", "false"),
    "alpha": lambda v: v.isascii() and v.isalpha(),
    "guid": _parses(uuid.UUID),
    "float": _parses(float),
    "double": _parses(float),
    "decimal": _parses(float),
    "datetime": _parses(datetime.fromisoformat),
}


def _constraint(spec: str) -> Callable[[str], bool]:
    m = re.fullmatch(r"(\w+)(?:\((.*)\))?", spec)
    if not m:
        raise ValueError(f"bad route constraint {spec!r}")
    name, arg = m.group(1).lower(), m.group(2)
    if arg is None and name in _SIMPLE_CONSTRAINTS:
        return _SIMPLE_CONSTRAINTS[name]
    if arg is not None:
        if name == "regex":
            pattern = re.compile(arg, re.IGNORECASE)
            return lambda v: pattern.search(v) is not None
        nums = [int(x) for x in arg.split(",")]
        if name == "minlength":
            return lambda v: len(v) >= nums[0]
        if name == "maxlength":
            return lambda v: len(v) <= nums[0]
        if name == "length":
            lo, hi = (nums[0], nums[0]) if len(nums) == 1 else (nums[0], nums[1])
            return lambda v: lo <= len(v) <= hi
        is_int = _int_in(64)
        if name == "min":
            return lambda v: is_int(v) and int(v) >= nums[0]
        if name == "max":
            return lambda v: is_int(v) and int(v) <= nums[0]
        if name == "range":
            return lambda v: is_int(v) and nums[0] <= int(v) <= nums[1]
    raise ValueError(f"unknown route constraint {spec!r}")


@dataclass(frozen=True)
class _Param:
    name: str
    checks: tuple[Callable[[str], bool], ...]
    optional: bool
    default: str | None
    catch_all: bool


@dataclass
class RouteTemplate:
    """A compiled route template such as ``api/v2/models/{name}/versions/{version?}``."""

    template: str
    regex: re.Pattern[str] = field(init=False)
    params: dict[str, _Param] = field(init=False)
    precedence: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.params = {}
        pattern, ranks = "", []
        stripped = self.template.strip("/")
        segments = stripped.split("/") if stripped else []
        for i, segment in enumerate(segments):
            part, rank = self._segment(segment, last=i == len(segments) - 1)
            pattern += part
            ranks.append(rank)
        self.regex = re.compile(f"^{pattern}/?$", re.IGNORECASE)
        self.precedence = tuple(ranks)

    def _segment(self, segment: str, *, last: bool) -> tuple[str, int]:
        params = list(_PARAM.finditer(segment))
        if not params:
            return "/" + re.escape(segment), 0
        whole = len(params) == 1 and params[0].span() == (0, len(segment))
        out, pos = "", 0
        rank = 1  # a segment mixing literals and parameters
        for m in params:
            out += re.escape(segment[pos : m.start()])
            pos = m.end()
            param = self._param(m, whole=whole, last=last)
            body = ".*" if param.catch_all else "[^/]+" if whole else "[^/]+?"
            out += f"(?P<{param.name}>{body})"
            if whole:
                rank = 5 if param.catch_all else 4 if param.optional else 2 if param.checks else 3
        out += re.escape(segment[pos:])
        if whole and self.params[params[0].group("name")].optional:
            return f"(?:/{out})?", rank
        return "/" + out, rank

    def _param(self, m: re.Match[str], *, whole: bool, last: bool) -> _Param:
        name, rest, star = m.group("name"), m.group("rest"), bool(m.group("star"))
        default = None
        if "=" in rest:
            rest, default = rest.split("=", 1)
        optional = rest.endswith("?") or default is not None or star
        rest = rest.rstrip("?")
        checks = tuple(_constraint(c) for c in rest.split(":")[1:]) if rest else ()
        if star and not (whole and last):
            raise ValueError(
                f"catch-all parameter {{*{name}}} must be the last segment of {self.template!r}"
            )
        if name in self.params:
            raise ValueError(f"route {self.template!r} repeats parameter {name!r}")
        param = _Param(name, checks, optional, default, star)
        self.params[name] = param
        return param

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for ``path`` (no query string), or None. Values are URL-decoded."""
        m = self.regex.match(path if path.startswith("/") else "/" + path)
        if m is None:
            return None
        values: dict[str, str] = {}
        for name, param in self.params.items():
            raw = m.group(name)
            if raw is None or raw == "":
                if param.default is not None:
                    values[name] = param.default
                elif not param.optional:
                    return None
                continue
            value = unquote(raw)
            if not all(check(value) for check in param.checks):
                return None
            values[name] = value
        return values


class Router(Generic[T]):
    """Routes in ASP.NET precedence order; ``matches`` yields those that accept a path, best
    first. Routes without parameters are looked up in a dict (they outrank every route with a
    parameter that could match the same path); the others are tried in order."""

    def __init__(self, routes: Iterable[tuple[RouteTemplate, T]]) -> None:
        ordered = sorted(routes, key=lambda r: (r[0].precedence, r[0].template.lower()))
        self._literal: dict[str, list[T]] = {}
        for template, target in ordered:
            if not template.params:
                self._literal.setdefault(_literal_key(template.template), []).append(target)
        self._patterned = [(t, target) for t, target in ordered if t.params]

    def matches(self, path: str) -> Iterator[tuple[T, dict[str, str]]]:
        """The routes that match ``path``, best first, with their route values."""
        for target in self._literal.get(_literal_key(path), ()):
            yield target, {}
        for template, target in self._patterned:
            values = template.match(path)
            if values is not None:
                yield target, values

    def match(self, path: str) -> list[tuple[T, dict[str, str]]]:
        """Every route that matches ``path``, best first, with its route values."""
        return list(self.matches(path))


def _literal_key(path: str) -> str:
    """A path as a template without parameters matches it: one leading '/', an optional
    trailing '/', any case."""
    path = path if path.startswith("/") else "/" + path
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path.lower()
