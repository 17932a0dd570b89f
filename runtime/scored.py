"""Values passed from the services to the codecs: plain, frozen, importing no service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """Which model answered: the endpoint's name, the model's version and content digest."""

    name: str
    version: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Scored:
    """Predictions as JSON-ready dicts (by the output schema's aliases), one per instance."""

    predictions: list[dict[str, Any]]
    model: ModelInfo

    def slice(self, start: int, count: int) -> Scored:
        """The predictions of ``count`` instances from ``start`` (one request of a batch)."""
        return Scored(self.predictions[start : start + count], self.model)
