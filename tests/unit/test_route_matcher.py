"""wsgi.IndexedRouteMatcher answers every path as Chalice's own RouteMatcher does, for the app's routes."""
from __future__ import annotations

import pytest
from chalice import local

import wsgi


def app_paths() -> list[str]:
    """Each route as a path (captures filled in), with a trailing slash, a query string, one segment
    more, its last segment changed, and paths no route has."""
    paths = ["", "/", "//", "/nope", "/doc//", "/sdapi/v1/jobs/abc/", "/sdapi/v1/jobs/abc/images/0?x=1&y=&x=2"]
    for route in wsgi.app.routes:
        path = route.replace("{", "").replace("}", "")
        paths += [path, path + "/", path + "?a=1&b", path + "/extra", path.rsplit("/", 1)[0] + "/zz"]
    return paths


def answer(matcher: local.RouteMatcher, path: str) -> tuple | None:
    try:
        result = matcher.match_route(path)
    except ValueError:
        return None
    return result.route, result.query_params


def test_the_same_route_and_query_as_chalices_matcher():
    routes = list(wsgi.app.routes)
    ours, chalices = wsgi.IndexedRouteMatcher(routes), local.RouteMatcher(routes)
    paths = app_paths()
    assert len(paths) > 300
    assert [(path, answer(ours, path)) for path in paths] == [(path, answer(chalices, path)) for path in paths]


def test_captures_are_the_matching_routes_own():
    matcher = wsgi.IndexedRouteMatcher(["/jobs/{job_id}/images/{n}", "/jobs/{job_id}/runs", "/jobs/latest"])
    assert matcher.match_route("/jobs/abc/images/3") == ("/jobs/{job_id}/images/{n}", {"job_id": "abc", "n": "3"}, {})
    assert matcher.match_route("/jobs/latest").captured == {}
    assert matcher.match_route("/jobs/abc/runs").captured == {"job_id": "abc"}
    with pytest.raises(ValueError):
        matcher.match_route("/jobs/abc/other")


def test_a_literal_route_sorted_after_a_capture_that_matches_it_is_not_taken_first():
    """'~' sorts after '{': Chalice answers /a/~x with /a/{name}, and so must the dict lookup."""
    routes = ["/a/~x", "/a/{name}"]
    assert wsgi.IndexedRouteMatcher(routes).match_route("/a/~x").route == local.RouteMatcher(routes).match_route(
        "/a/~x").route == "/a/{name}"


def test_the_gateway_uses_it():
    assert isinstance(wsgi._gateway.event_converter._route_matcher, wsgi.IndexedRouteMatcher)
