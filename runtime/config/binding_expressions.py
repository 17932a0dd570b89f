"""Binding expressions: ``%Setting%`` in a binding's ``queueName``, ``path`` or
``containerName`` is app setting ``Setting``, read when the Functions host loads the function.
One reading for the local host (``mlfn serve``), ``mlfn check`` and ``mlfn kube``, so the three
agree with Azure and with each other."""

from __future__ import annotations

import re
from collections.abc import Mapping

from runtime.errors import ConfigError

_EXPRESSION = re.compile(r"%([^%]+)%")


def settings_read(value: str) -> list[str]:
    """The app settings ``value`` reads, in order."""
    return _EXPRESSION.findall(value)


def missing(value: str, settings: Mapping[str, str]) -> list[str]:
    """The app settings ``value`` reads that ``settings`` does not have."""
    return [name for name in settings_read(value) if name not in settings]


def resolve(value: str, settings: Mapping[str, str]) -> str:
    """``value`` with each ``%Setting%`` replaced by that setting's value. A setting that is
    not set is a ``ConfigError`` naming it: on Azure the function fails to load ("'%Setting%'
    does not resolve to a value"). A setting set to the empty string resolves to it, as there."""
    unset = missing(value, settings)
    if unset:
        raise ConfigError(
            unset[0], "", f"an app setting, since binding expression {value!r} reads it"
        )
    return _EXPRESSION.sub(lambda m: settings[m.group(1)], value)


def queue_name(value: str, settings: Mapping[str, str]) -> str:
    """A queue trigger's or queue output's name as the queue extension uses it: resolved,
    then lowercased. The extension lowercases before it checks the name ("must be lowercase.
    coerce here to be nice", QueueTriggerAttributeBindingProvider and the output binding
    alike), so a function naming ``Orders`` listens to, or writes to, ``orders``. Blob paths
    and container names are not lowercased: a container named in capitals is refused."""
    return resolve(value, settings).lower()
