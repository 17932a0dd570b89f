"""Values passed from the services to the codecs: plain, frozen, importing no service."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class ModelInfo:
    """Which model answered: the endpoint's name, the model's version and content digest."""

    name: str
    version: str
    sha256: str
    json: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Encoded once per loaded model, not once per response: every result joins these bytes.
        doc = {"name": self.name, "version": self.version, "sha256": self.sha256}
        object.__setattr__(self, "json", json.dumps(doc, separators=(",", ":")).encode())


class Scored(NamedTuple):
    """Predictions, one per instance, each already encoded as a JSON document (by the output
    schema's aliases): they are serialised once, where they are made, and the codecs only join
    them into a response or a result. A tuple: made on every request, and a frozen dataclass's
    ``__init__`` costs a microsecond there."""

    predictions: list[bytes]
    model: ModelInfo

    def slice(self, start: int, count: int) -> Scored:
        """The predictions of ``count`` instances from ``start`` (one request of a batch)."""
        return Scored(self.predictions[start : start + count], self.model)

    @staticmethod
    def join(parts: list[Scored]) -> Scored:
        """One request's predictions scored in parts, in order (the model of its first)."""
        return Scored([p for part in parts for p in part.predictions], parts[0].model)
