from __future__ import annotations

from pathlib import Path

import pytest

from scripts.build_models import build_all


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """The example models in a store folder of the test's own."""
    build_all(tmp_path / "models")
    return tmp_path / "models"
