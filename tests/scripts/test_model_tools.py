"""`make serve` builds the example models with scripts/model-tools.txt, outside the test extra:
the two must name the same tools, or the models `make serve` uploads differ from the tests'."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement

from tests.support import ROOT


def test_model_tools_are_the_test_extras_own() -> None:
    lines = (ROOT / "scripts" / "model-tools.txt").read_text().splitlines()
    tools = {str(Requirement(line)) for line in lines if line.strip() and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test_extra = {str(Requirement(r)) for r in project["optional-dependencies"]["test"]}
    assert tools and tools <= test_extra
