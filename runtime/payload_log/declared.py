"""What an endpoint declares about its payload log: ``Endpoint(log=Log(...))``, and the input
fields marked ``NotLogged`` (personal data that must never leave the process)."""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Log:
    """An endpoint's payload log (docs/payload-log.md): a share of its scored instances
    written, with their predictions, as Parquet records to ``MLFN_PAYLOAD_LOG``.

    sample: the share of HTTP, V2 and queue requests logged, each with all its instances
        (0 to 1). Default: ``MLFN_PAYLOAD_LOG_SAMPLE``.
    bulk_sample: the share of batch-file rows logged (0, the default, logs none: a file is
        its own record).
    enabled: False turns the endpoint's log off whatever the settings say.
    """

    sample: float | None = None
    bulk_sample: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("sample", "bulk_sample"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"Log {name} must be between 0 and 1, not {value!r}")


class NotLogged:
    """Marks an input field that the payload log must never write:
    ``ssn: Annotated[str, NotLogged()]``. Its column is absent from every file."""

    def __repr__(self) -> str:
        return "NotLogged()"


@functools.cache  # asked again for every nested model of every logged row
def not_logged(model: type[BaseModel]) -> frozenset[str]:
    """The names of ``model``'s fields marked ``NotLogged``, however they are annotated."""
    found = set()
    for name, field in model.model_fields.items():
        marks = list(field.metadata)
        annotation = field.annotation
        while typing.get_origin(annotation) is typing.Annotated:  # nested in an Optional's arm
            marks += typing.get_args(annotation)[1:]
            annotation = typing.get_args(annotation)[0]
        for arm in typing.get_args(annotation):
            if typing.get_origin(arm) is typing.Annotated:
                marks += typing.get_args(arm)[1:]
        if any(isinstance(m, NotLogged) or m is NotLogged for m in marks):
            found.add(name)
    return frozenset(found)
