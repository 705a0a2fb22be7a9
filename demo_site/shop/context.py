"""The shop's context processor: the category list every page's navigation shows.

It comes from Django's cache (refreshed every few minutes), so a page costs one cache
call, and a query only when the cache is cold: what the dashboard shows as ``cache``.
"""

from __future__ import annotations

from django.core.cache import cache
from django.http import HttpRequest

from demo_site.shop.models import Category

CATEGORIES_KEY = "shop:categories"
CATEGORIES_SECONDS = 300


def categories(request: HttpRequest) -> dict[str, list[str]]:
    names = cache.get(CATEGORIES_KEY)
    if names is None:
        names = list(Category.objects.order_by("name").values_list("name", flat=True))
        cache.set(CATEGORIES_KEY, names, CATEGORIES_SECONDS)
    return {"categories": names}
