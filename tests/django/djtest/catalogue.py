"""A helper module of the test site that issues queries for its views (an N+1 in a helper)."""

from __future__ import annotations

from djtest.models import Shelf


def item_counts() -> list[int]:
    """Count each shelf's items, one query per shelf (the N+1 the dashboard must locate)."""
    return [shelf.items.count() for shelf in Shelf.objects.order_by("pk")]
