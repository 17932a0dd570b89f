"""An input (or output) model compiled into per-column checks, read from the model's own pydantic
core schema: what pydantic will enforce, not what its annotations seem to say.

Only what the checks can decide exactly as pydantic does is compiled: numbers with bounds and
finiteness, booleans, strings with lengths, literals, fixed-length lists of numbers, nulls and
defaults. Anything else in the schema (a validator, a nested model, a union, a pattern, strict
mode, a default factory) makes the whole model fall back to the row path, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from runtime.errors import NotCompiled

Kind = Literal["float", "int", "bool", "str"]

# Model config keys that change nothing the checks decide; any other key falls back.
_NEUTRAL_CONFIG = frozenset(
    {"title", "validate_by_alias", "validate_by_name", "allow_inf_nan", "extra_fields_behavior",
     "protected_namespaces", "ser_json_inf_nan", "ser_json_timedelta", "ser_json_bytes",
     "serialize_by_alias", "from_attributes", "loc_by_alias", "hide_input_in_errors",
     "validation_error_cause", "cache_strings", "ser_json_temporal", "val_temporal_unit"}
)  # fmt: skip
_FIELD_KEYS = frozenset(
    {"type", "schema", "metadata", "validation_alias", "serialization_alias",
     "serialization_exclude", "frozen"}
)  # fmt: skip
_BOUNDS = ("gt", "ge", "lt", "le")
# "metadata": what an item's Annotated[..., Field(...)] leaves beside its rules (for JSON
# Schema); pydantic-core never validates with it.
_SCALAR_KEYS: dict[str, frozenset[str]] = {
    "float": frozenset({"type", "allow_inf_nan", "metadata", *_BOUNDS}),
    "int": frozenset({"type", "metadata", *_BOUNDS}),
    "bool": frozenset({"type", "metadata"}),
    "str": frozenset({"type", "min_length", "max_length", "metadata"}),
}


_WHAT = {"model": "a nested model", "union": "a union", "tagged-union": "a union",
         "dict": "a dict", "nullable": "an optional list item"}  # fmt: skip


@dataclass(frozen=True)
class Scalar:
    """One value's rules: its kind, bounds, and for floats whether NaN and infinities pass."""

    kind: Kind
    gt: float | int | None = None
    ge: float | int | None = None
    lt: float | int | None = None
    le: float | int | None = None
    allow_inf_nan: bool = True
    min_length: int | None = None  # of a str
    max_length: int | None = None
    choices: tuple[Any, ...] | None = None  # a Literal's values


@dataclass(frozen=True)
class Field:
    """One field as a column: its name, the keys a row may give it by (alias first, as pydantic
    looks), its value rules, and ``width`` for a fixed-length list (None for a scalar)."""

    name: str
    keys: tuple[str, ...]
    value: Scalar
    width: int | None = None
    nullable: bool = False
    has_default: bool = False
    default: Any = None
    ragged: tuple[int, int | None] | None = None  # an output list's (min, max) length
    mapped: bool = False  # an output dict of text keys to ``value``s (an Arrow map column)


@dataclass(frozen=True)
class Compiled:
    """The model's fields as columns, and whether keys it does not know make a row invalid."""

    model: type[BaseModel]
    fields: tuple[Field, ...]
    forbid_extra: bool

    def keys(self) -> frozenset[str]:
        return frozenset(k for f in self.fields for k in f.keys)


def compile_model(model: type[BaseModel], output: bool = False) -> Compiled:
    """The columns of ``model``; raises NotCompiled naming what the checks cannot decide.

    output: the model of predict's outputs, only checked, never made arrays of: a list may
        be of any length."""
    schema: Mapping[str, Any] = model.__pydantic_core_schema__
    if schema.get("type") == "definitions":
        schema = schema["schema"]
    if schema.get("type") != "model" or schema.get("root_model"):
        raise NotCompiled(f"{model.__name__} is not a plain model")
    if schema.get("custom_init") or schema.get("post_init"):
        raise NotCompiled(f"{model.__name__} has its own __init__ or model_post_init")
    if output and schema.get("serialization"):
        raise NotCompiled(f"{model.__name__} serializes itself (a model serializer)")
    config: Mapping[str, Any] = schema.get("config", {})
    if output and config.get("ser_json_inf_nan", "null") != "null":
        raise NotCompiled(f"{model.__name__} writes NaN and infinities its own way")
    unknown = sorted(set(config) - _NEUTRAL_CONFIG)
    if unknown:
        raise NotCompiled(f"{model.__name__}'s config sets {unknown[0]}")
    inner = schema["schema"]
    if inner.get("type") != "model-fields" or set(inner) - {
        "type", "fields", "model_name", "computed_fields"
    }:  # fmt: skip
        raise NotCompiled(f"{model.__name__} has model validators")
    extra = config.get("extra_fields_behavior", "ignore")
    if extra not in ("ignore", "forbid"):
        raise NotCompiled(f"{model.__name__} keeps extra fields (extra={extra!r})")
    by_alias = config.get("validate_by_alias", True)
    by_name = config.get("validate_by_name", False)
    allow_inf_nan = config.get("allow_inf_nan", True)
    fields = tuple(
        _field(name, spec, by_alias, by_name, allow_inf_nan, output)
        for name, spec in inner["fields"].items()
    )
    return Compiled(model, fields, forbid_extra=extra == "forbid")


def _field(
    name: str,
    spec: Mapping[str, Any],
    by_alias: bool,
    by_name: bool,
    allow_inf_nan: bool,
    output: bool = False,
) -> Field:
    if set(spec) - _FIELD_KEYS:
        raise NotCompiled(f"field {name!r} has {sorted(set(spec) - _FIELD_KEYS)[0]}")
    alias = spec.get("validation_alias")
    if alias is not None and not isinstance(alias, str):
        raise NotCompiled(f"field {name!r} has an alias path or choices")
    keys = tuple(dict.fromkeys([*([alias] if alias and by_alias else []),
                                *([name] if by_name or not alias else [])]))  # fmt: skip
    inner: Mapping[str, Any] = spec["schema"]
    has_default, default = False, None
    if inner["type"] == "default":
        if set(inner) != {"type", "schema", "default"}:
            raise NotCompiled(f"field {name!r} has a default factory or validates its default")
        has_default, default, inner = True, inner["default"], inner["schema"]
    nullable = inner["type"] == "nullable"
    if nullable:
        if set(inner) != {"type", "schema"}:
            raise NotCompiled(f"field {name!r}: an unusual optional")
        inner = inner["schema"]
    width = None
    ragged = None
    mapped = inner["type"] == "dict" and output
    if mapped:
        if set(inner) != {"type", "keys_schema", "values_schema"} or inner["keys_schema"] != {
            "type": "str"
        }:
            raise NotCompiled(f"field {name!r}: a dict of keys other than plain text")
        if nullable or has_default:
            raise NotCompiled(f"field {name!r}: an optional dict or a dict with a default")
        inner = inner["values_schema"]
    if inner["type"] == "list":
        if set(inner) - {"type", "items_schema", "min_length", "max_length"}:
            raise NotCompiled(f"field {name!r}: a list with rules beyond its length")
        width = inner.get("min_length")
        if width is None or inner.get("max_length") != width:
            if not output:
                raise NotCompiled(f"field {name!r}: a list of no fixed length")
            width, ragged = None, (inner.get("min_length") or 0, inner.get("max_length"))
        inner = inner["items_schema"]
    value = _scalar(name, inner, allow_inf_nan)
    if (width is not None or ragged or mapped) and value.kind not in ("float", "int"):
        raise NotCompiled(f"field {name!r}: a {'dict' if mapped else 'list'} of {value.kind}")
    if mapped and (width is not None or ragged):
        raise NotCompiled(f"field {name!r}: a dict of lists")
    if nullable and (width is not None or ragged or value.kind in ("int", "bool")):
        # No null fits an int64 or bool array, nor a row of a 2-D one.
        raise NotCompiled(f"field {name!r}: an optional {value.kind if width is None else 'list'}")
    if has_default and default is None and not nullable and value.kind in ("int", "bool"):
        raise NotCompiled(f"field {name!r}: a default of None that no {value.kind} column holds")
    if has_default and default is not None and width is None and not ragged:
        fits = {"float": (float, int), "int": (int,), "bool": (bool,), "str": (str,)}[value.kind]
        if type(default) not in fits:  # pydantic leaves a default as it is: no column holds it
            raise NotCompiled(f"field {name!r}: a default of another type")
        default = float(default) if value.kind == "float" else default
    elif has_default and (width is not None or ragged):
        raise NotCompiled(f"field {name!r}: a list with a default")
    return Field(
        name, keys, value, width, nullable, has_default, default, ragged=ragged, mapped=mapped
    )


def _scalar(name: str, spec: Mapping[str, Any], allow_inf_nan: bool) -> Scalar:
    kind = spec["type"]
    if kind == "literal":
        expected = tuple(spec["expected"])
        if set(spec) != {"type", "expected"} or not expected:
            raise NotCompiled(f"field {name!r}: an unusual literal")
        if all(type(v) is str for v in expected):
            return Scalar("str", choices=expected)
        if all(type(v) is int for v in expected):
            return Scalar("int", choices=expected)
        raise NotCompiled(f"field {name!r}: a literal of mixed or other types")
    allowed = _SCALAR_KEYS.get(kind)
    if allowed is None:
        what = "a validator" if kind.startswith("function-") else _WHAT.get(kind, f"a {kind}")
        raise NotCompiled(f"field {name!r} has {what}")
    if set(spec) - allowed:
        raise NotCompiled(f"field {name!r} has {sorted(set(spec) - allowed)[0]}")
    bounds = {b: spec[b] for b in _BOUNDS if b in spec}
    if any(type(v) not in (int, float) for v in bounds.values()):
        raise NotCompiled(f"field {name!r}: a bound that is not a plain number")
    if kind == "int":
        bounds = _int_bounds(name, bounds)
    return Scalar(
        kind,
        allow_inf_nan=spec.get("allow_inf_nan", allow_inf_nan),
        min_length=spec.get("min_length"),
        max_length=spec.get("max_length"),
        **bounds,
    )


def _int_bounds(name: str, bounds: dict[str, Any]) -> dict[str, Any]:
    """An int field's bounds as ``ge`` and ``le`` ints that say the same of every int
    (``n < 2.5`` is ``n <= 2``): numpy would compare int64 with a float bound as floats, and
    lose digits past 2**53."""
    lows, highs = [], []
    for bound, value in bounds.items():
        if type(value) is float and not math.isfinite(value):
            raise NotCompiled(f"field {name!r}: a bound that is not finite")
        if bound == "gt":
            lows.append(math.floor(value) + 1)
        elif bound == "ge":
            lows.append(math.ceil(value))
        elif bound == "lt":
            highs.append(math.ceil(value) - 1)
        else:
            highs.append(math.floor(value))
    exact: dict[str, Any] = {}
    if lows:
        exact["ge"] = max(lows)
    if highs:
        exact["le"] = min(highs)
    return exact
