"""Regex routes read as templates: a Django REST framework router, nested includes, re_path.

DRF routers write regex patterns; ``http.route`` renders them as ``path()`` routes read
(``api/users/<pk>/``), so a dashboard shows templates, never regexes, and tags stay
bounded (docs/web-metrics.md).
"""

from __future__ import annotations

import pytest
from django.test import Client
from django_support import only
from hypothesis import given
from hypothesis import strategies as st

from zibrato.framework import schema
from zibrato.testing import CapturedMetrics
from zibrato_django.routes import readable_route

REQUESTS = {
    "/api/": "api/",  # the DefaultRouter's root view
    "/api/users/": "api/users/",
    "/api/users/7/": "api/users/<pk>/",
    "/api/users.json": "api/users.<format>",
    "/api/users/7.json": "api/users/<pk>.<format>",
    "/api/v2/shop/orders/3/": "api/v2/shop/orders/<pk>/",  # a router in nested includes
    "/legacy/abc/": "legacy/<slug>/",
    "/archive/2024/05": "archive/<arg1>/<arg2>",  # unnamed groups: bounded placeholders
    "/files/a/b.txt": "files/[<folder>/]<name>",  # an optional group, in brackets
    "/shop/eu/shelves/top/": "shop/<str:region>/shelves/<slug:slug>/",  # path(): unchanged
}


@pytest.mark.parametrize(("path", "route"), REQUESTS.items())
def test_a_regex_route_is_tagged_as_a_template(
    path: str, route: str, metrics: CapturedMetrics
) -> None:
    response = Client().get(path)
    assert response.status_code == 200, response
    request = only(metrics, schema.REQUEST_DURATION)
    assert request.tags[schema.ROUTE] == route


@pytest.mark.parametrize(
    ("pattern", "route"),
    [
        (r"api/users/(?P<pk>[^/.]+)/$", "api/users/<pk>/"),
        (r"api/users\.(?P<format>[a-z0-9]+)/?$", "api/users.<format>"),
        (r"^legacy/(?P<slug>[a-z]+)/$", "legacy/<slug>/"),
        (r"\Ablog/(?P<year>[0-9]{4})/(?P<slug>[-\w]+)\Z", "blog/<year>/<slug>"),
        (r"^notes/(?P<id>[0-9]+)(?:/(?P<part>[a-z()]+))?/$", "notes/<id>[/<part>]/"),
        (r"^x/(?=y)(?#comment)(?i:z)$", "x/z"),
        (r"^[a-z]+/$", "[a-z]+/"),  # no group: the pattern text, bounded
        ("shop/<str:region>/items/<int:pk>/", "shop/<str:region>/items/<int:pk>/"),
        ("", ""),
    ],
)
def test_readable_route(pattern: str, route: str) -> None:
    assert readable_route(pattern) == route


@given(st.text(max_size=60))
def test_any_pattern_text_renders_without_raising_and_stays_bounded(pattern: str) -> None:
    rendered = readable_route(pattern)
    assert isinstance(rendered, str) and len(rendered) <= 2 * len(pattern) + 8
