"""What the Functions Python worker refuses when it loads a function (its ``FunctionLoadError``s),
checked on the functions ``azure.functions`` reports. The local host refuses the same functions,
and ``mlfn check`` reports them before a publish does.

The type checks are the binding converters' own (``azure.functions``' binding registry, or for an
SDK type the ``azurefunctions.extensions.base`` one), so a parameter annotated with a type its
binding cannot deliver is refused here as on Azure.
"""

from __future__ import annotations

import inspect
import json
import typing
from typing import Any

from runtime.host import deferred

_NOT_OUT = "is declared with direction {direction} but annotated func.Out in Python"


def problems(function: Any) -> list[str]:
    """Why the worker would refuse to load ``function`` (an ``azure.functions`` Function); an
    empty list when it would load it."""
    import azure.functions as func

    registry = func.get_binding_registry()  # type: ignore[no-untyped-call]
    bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
    fn = function.get_user_function()
    found: list[str] = []
    if function.get_trigger() is None:
        found.append("has no trigger")
    try:
        hints = typing.get_type_hints(fn)  # as the worker reads them
    except Exception as exc:
        return [*found, f"its annotations cannot be resolved: {exc}"]
    params = dict(inspect.signature(fn).parameters)
    bound = {b["name"]: b for b in bindings if b["name"] != "$return"}

    if "context" in params and "context" not in bound:
        params.pop("context")
        context = hints.get("context")
        if context is not None and getattr(context, "__name__", None) != "Context":
            found.append(f"parameter context must be annotated func.Context, not {context!r}")
    missing = sorted(set(params) - set(bound))
    extra = sorted(set(bound) - set(params))
    if missing:
        found.append(f"parameters {missing} are declared in Python but have no binding")
    if extra:
        found.append(f"bindings {extra} have no parameter in Python")

    for name, binding in bound.items():
        direction = str(binding.get("direction", "IN")).upper()
        if direction == "INOUT":
            found.append(f'binding {name}: "inout" bindings are not supported')
        if name not in params or name not in hints:
            continue
        found.extend(_parameter_problems(name, hints[name], binding, direction, registry))

    returns = [b for b in bindings if b["name"] == "$return"]
    if returns and str(returns[0].get("direction", "OUT")).upper() != "OUT":
        found.append('the "$return" binding must have direction "out"')
    found.extend(_return_problems(hints, returns, registry))
    return found


def _is_out(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and origin.__name__ == "Out"


class _Generic:
    """What the worker uses for a binding type azure.functions has no converter for: it takes
    str and bytes in, str, bytes and bytearray out (azure_functions_runtime's GenericBinding)."""

    @staticmethod
    def check_input_type_annotation(pytype: Any) -> bool:
        return isinstance(pytype, type) and issubclass(pytype, str | bytes)

    @staticmethod
    def check_output_type_annotation(pytype: Any) -> bool:
        return isinstance(pytype, type) and issubclass(pytype, str | bytes | bytearray)


def _converter(registry: Any, binding_type: str) -> Any:
    found = registry.get(binding_type) if registry is not None else None
    return found if found is not None else _Generic


def _implicit_output(converter: Any, binding_type: str) -> bool:
    if converter is _Generic:
        return binding_type != "durableClient"  # the worker's own exemption
    return bool(getattr(converter, "has_implicit_output", lambda: False)())


def _parameter_problems(
    name: str, annotation: Any, binding: dict[str, Any], direction: str, registry: Any
) -> list[str]:
    is_out = _is_out(annotation)
    declared_out = direction == "OUT"
    if is_out:
        args = typing.get_args(annotation)
        if len(args) != 1:
            return [f"binding {name} has an invalid Out annotation {annotation!r}"]
        pytype = args[0]
    else:
        pytype = annotation
    if not isinstance(pytype, type) and typing.get_origin(pytype) is None:
        return [f"binding {name} has a non-type annotation {annotation!r}"]
    if declared_out and not is_out:
        return [f"output binding {name} must be annotated func.Out[...] in Python"]
    if is_out and not declared_out:
        return [f"binding {name} " + _NOT_OUT.format(direction=direction.lower())]
    by_reference = None if is_out else deferred.registry_for(pytype)
    converter = _converter(by_reference or registry, binding["type"])
    if pytype in (str, bytes) and not _implicit_output(converter, binding["type"]):
        converter = _Generic  # the worker passes str and bytes through as they are
    check = (
        converter.check_output_type_annotation if is_out else converter.check_input_type_annotation
    )
    if not check(pytype):
        shown = getattr(pytype, "__name__", repr(pytype))
        return [f"binding {name} of type {binding['type']} cannot be a {shown} in Python"]
    return []


def _return_problems(hints: dict[str, Any], returns: list[Any], registry: Any) -> list[str]:
    annotation = hints.get("return", inspect.Signature.empty)
    if not returns:
        # The worker loads it, then fails every invocation that returns a value.
        if annotation not in (inspect.Signature.empty, None, type(None)):
            return [f"returns {annotation!r} but has no $return (output) binding"]
        return []
    if annotation is inspect.Signature.empty:
        return []
    if _is_out(annotation):
        return ["the return annotation must not be func.Out"]
    if not isinstance(annotation, type):
        return [f"has a non-type return annotation {annotation!r}"]
    # Checked against the binding's converter whatever the type, str and bytes included (the
    # worker means to pass those through, but its test for them never matches).
    converter = _converter(registry, returns[0]["type"])
    if not converter.check_output_type_annotation(annotation):
        binding_type = returns[0]["type"]
        return [
            f"return annotation {annotation.__name__} does not match its {binding_type} binding"
        ]
    return []
