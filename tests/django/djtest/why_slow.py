"""Views that nest the components of a request's time (``test_django_why_slow.py``).

Each takes what it needs from the query string: ``upstream`` (a local HTTP server's
base URL) and ``alias`` (a cache alias).
"""

from __future__ import annotations

import time
import uuid

import requests
from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from djtest import catalogue
from djtest.models import Shelf

APP_MS = 20
UPSTREAM_MS = 40


def with_zsleep() -> None:
    """Give this thread's SQLite connection ``zsleep(seconds)``: a query of known length."""
    connection.ensure_connection()
    connection.connection.create_function("zsleep", 1, time.sleep)


def nested(request: HttpRequest) -> HttpResponse:
    """App time, a cached value computed with an HTTP call, and a template that queries."""
    with_zsleep()
    time.sleep(APP_MS / 1000)
    upstream = request.GET["upstream"]
    value = caches["default"].get_or_set(
        f"nested-{uuid.uuid4()}",
        lambda: requests.get(f"{upstream}/delay?ms={UPSTREAM_MS}", timeout=10).json(),
        60,
    )
    return render(request, "djtest/nested.html", {"value": value})


def cached(request: HttpRequest) -> HttpResponse:
    """Six calls to one cache alias: two hits (one of a cached None), four misses."""
    cache = caches[request.GET["alias"]]
    cache.delete("k")
    first = cache.get("k")  # a miss
    cache.set("k", None)
    none = cache.get("k", "default")  # a hit: None was cached
    absent = cache.get("absent", "default")  # a miss: the caller's default comes back
    many = cache.get_many(["k", "absent", "k2"])  # one hit, two misses
    return JsonResponse({"first": first, "none": none, "absent": absent, "many": many})


def repeat_in_view(request: HttpRequest) -> HttpResponse:
    counts = []
    for shelf in Shelf.objects.order_by("pk"):
        counts.append(shelf.items.count())  # the line that repeats
    return JsonResponse({"counts": counts})


def repeat_in_helper(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"counts": catalogue.item_counts()})


def repeat_in_tag(request: HttpRequest) -> HttpResponse:
    shelves = Shelf.objects.order_by("pk")
    return render(request, "djtest/tag_per_row.html", {"shelves": shelves})


def repeat_in_template(request: HttpRequest) -> HttpResponse:
    shelves = Shelf.objects.order_by("pk")
    return render(request, "djtest/lazy_rows.html", {"shelves": shelves})


def jinja(request: HttpRequest) -> HttpResponse:
    shelves = Shelf.objects.order_by("pk")
    return render(request, "djtest/page.html", {"title": "x", "shelves": shelves}, using="jinja2")


def upstream(request: HttpRequest) -> HttpResponse:
    answer = requests.get(request.GET["upstream"] + "/status/" + request.GET["status"], timeout=10)
    return HttpResponse(str(answer.status_code))
