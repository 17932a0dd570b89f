from __future__ import annotations

import pytest

from runtime.host.routing import Router, RouteTemplate


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("api/iris/predict", "/api/iris/predict", {}),
        ("api/iris/predict", "/API/Iris/Predict", {}),
        ("api/iris/predict", "/api/iris/predict/", {}),
        ("api/iris/predict", "/api/iris", None),
        ("api/{name}/predict", "/api/iris/predict", {"name": "iris"}),
        ("api/items/{id:int}", "/api/items/42", {"id": "42"}),
        ("api/items/{id:int}", "/api/items/4x", None),
        ("api/items/{id:int}", "/api/items/99999999999", None),
        ("api/items/{id:long}", "/api/items/99999999999", {"id": "99999999999"}),
        ("api/items/{id?}", "/api/items", {}),
        ("api/items/{id?}", "/api/items/7", {"id": "7"}),
        ("api/v/{version=1}", "/api/v", {"version": "1"}),
        ("api/files/{*rest}", "/api/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("api/files/{*rest}", "/api/files", {}),
        ("api/f/{stem}.{ext}", "/api/f/report.pdf", {"stem": "report", "ext": "pdf"}),
        ("api/h/{who:alpha:maxlength(4)}", "/api/h/anna", {"who": "anna"}),
        ("api/h/{who:alpha:maxlength(4)}", "/api/h/annab", None),
        ("api/h/{who:alpha}", "/api/h/a1", None),
        (
            "api/g/{id:guid}",
            "/api/g/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            {"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"},
        ),
        ("api/r/{n:range(1,5)}", "/api/r/6", None),
        ("api/e/{word}", "/api/e/a%20b", {"word": "a b"}),
        ("api/e/{word}", "/api/e/a%2Fb", {"word": "a/b"}),
    ],
)
def test_templates_match_like_aspnet(
    template: str, path: str, expected: dict[str, str] | None
) -> None:
    assert RouteTemplate(template).match(path) == expected


def test_literal_routes_win_over_parameters_whatever_the_registration_order() -> None:
    router = Router(
        [
            (RouteTemplate("api/{*rest}"), "catch-all"),
            (RouteTemplate("api/{name}/predict"), "param"),
            (RouteTemplate("api/{name:alpha}/predict"), "constrained"),
            (RouteTemplate("api/iris/predict"), "literal"),
        ]
    )
    assert [t for t, _ in router.match("/api/iris/predict")] == [
        "literal",
        "constrained",
        "param",
        "catch-all",
    ]
    assert [t for t, _ in router.match("/api/x1/predict")] == ["param", "catch-all"]


@pytest.mark.parametrize("template", ["api/{*rest}/more", "api/{id}/{id}", "api/{x:nosuch}"])
def test_invalid_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        RouteTemplate(template)
