"""What each Spark Python worker keeps: the app's services, once per process (no Spark here)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.spark.spark_support import IRIS
from tests.support import ROOT, make_app


def test_a_worker_builds_an_apps_services_once_and_keeps_them(
    tmp_path: Path, isolated_imports: None
) -> None:
    from runtime.spark.worker import services_for

    app = str(make_app(tmp_path / "app", {"spark_iris": IRIS}))
    assert services_for(app) is services_for(app)
    assert sorted(services_for(app).endpoints) == ["spark_iris"]


def test_another_apps_functions_package_is_set_aside_and_put_back(
    tmp_path: Path, isolated_imports: None
) -> None:
    sys.path.insert(0, str(ROOT))  # isolated_imports puts sys.path back
    import functions  # the repository's app, as a notebook or an earlier task left it
    from runtime.spark.worker import discover_app

    app = make_app(tmp_path / "other", {"spark_iris": IRIS})
    assert [b.name for b in discover_app(app)] == ["spark_iris"]
    assert sys.modules["functions"] is functions
    assert Path(functions.__file__ or "").parent == ROOT / "functions"
    assert "functions.spark_iris" not in sys.modules
