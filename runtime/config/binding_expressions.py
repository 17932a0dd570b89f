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
    return [name for name in settings_read(value) if setting(name, settings) is None]


def setting(name: str, settings: Mapping[str, str]) -> str | None:
    """App setting ``name`` as the Functions host reads it; None when it is not set."""
    key = setting_key(name, settings)
    return None if key is None else settings[key]


def setting_key(name: str, settings: Mapping[str, str]) -> str | None:
    """Which of ``settings`` app setting ``name`` is, as the Functions host's configuration
    reads names (case ignored, ``__`` in an environment variable the section separator
    ``:``): that exact name, else the one that name means; None when none is."""
    if name in settings:
        return name
    wanted = _key(name)
    return next((k for k in settings if _key(k) == wanted), None)


def _key(name: str) -> str:
    return name.replace("__", ":").casefold()


def resolve(value: str, settings: Mapping[str, str]) -> str:
    """``value`` with each ``%Setting%`` replaced by that setting's value. A setting that is
    not set is a ``ConfigError`` naming it: on Azure the function fails to load ("'%Setting%'
    does not resolve to a value"). A setting set to the empty string resolves to it, as there."""
    unset = missing(value, settings)
    if unset:
        raise ConfigError(
            unset[0], "", f"an app setting, since binding expression {value!r} reads it"
        )
    return _EXPRESSION.sub(lambda m: setting(m.group(1), settings) or "", value)


def queue_name(value: str, settings: Mapping[str, str]) -> str:
    """A queue trigger's or queue output's name as the queue extension uses it: resolved,
    then lowercased. The extension lowercases before it checks the name ("must be lowercase.
    coerce here to be nice", QueueTriggerAttributeBindingProvider and the output binding
    alike), so a function naming ``Orders`` listens to, or writes to, ``orders``. Blob paths
    and container names are not lowercased: a container named in capitals is refused."""
    return resolve(value, settings).lower()
