"""The warehouse's seed data: a few cities, each holding some of every shop product."""

from __future__ import annotations

import random

from sqlalchemy import func, select

from demo_site.warehouse.models import StockLevel, Warehouse, db

CITIES = ("Lisbon", "Lyon", "Milan", "Ghent", "Kraków", "Porto", "Turin", "Leeds")
PRODUCTS = 31  # as many as the shop's seed creates (ids 1 to 31)
RANDOM_SEED = 2013


def seed_warehouse() -> int:
    """Fill empty tables; return how many stock levels they hold."""
    held = db.session.scalar(select(func.count()).select_from(StockLevel)) or 0
    if held:
        return held
    rng = random.Random(RANDOM_SEED)
    for city in CITIES:
        warehouse = Warehouse(city=city)
        warehouse.stock = [
            StockLevel(product_id=product_id, quantity=rng.randint(0, 40))
            for product_id in range(1, PRODUCTS + 1)
        ]
        db.session.add(warehouse)
    db.session.commit()
    return len(CITIES) * PRODUCTS
