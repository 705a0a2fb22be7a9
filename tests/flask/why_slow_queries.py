"""A helper module of the Flask test site that issues queries for its views."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session
from why_slow_site import Item, Shelf


def item_counts(session: Session) -> list[int]:
    """Count each shelf's items, one query per shelf (the N+1 to locate)."""
    shelves = session.scalars(sa.select(Shelf).order_by(Shelf.id)).all()
    return [session.scalar(sa.select(sa.func.count(Item.id)).where(Item.shelf_id == s.id)) or 0
            for s in shelves]  # fmt: skip
