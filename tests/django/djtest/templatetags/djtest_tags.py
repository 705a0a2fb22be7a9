"""Template tags of the test site: one that queries per call (an N+1 in a tag), one that
runs a slow query, one that spends its own time, and one that reads the cache."""

from __future__ import annotations

import time

from django import template
from django.core.cache import cache
from django.db import connection

from djtest.models import Shelf

register = template.Library()


@register.simple_tag
def shelf_size(shelf: Shelf) -> int:
    return shelf.items.count()


@register.simple_tag
def slow_query(ms: int) -> str:
    """A query that takes ``ms`` milliseconds (SQLite's zsleep, see why_slow.py)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT zsleep(%s)", [ms / 1000])
    return ""


@register.simple_tag
def busy(ms: int) -> str:
    """Spend ``ms`` milliseconds in the template's own code."""
    time.sleep(ms / 1000)
    return ""


@register.simple_tag
def cached_greeting() -> str:
    return cache.get_or_set("djtest-greeting", "hello", 60) or ""
