"""The warehouse's pages, each showing something Zibrato finds (README.md, "See it run").

* ``/warehouses``: an N+1 query pattern on purpose; ``?fixed=1`` shows the fix.
* ``/stock/<int:product_id>``: one product in every warehouse, one query.
* ``/api/stock``: a JSON API, one query.
* ``POST /sync``: asks a pretend supplier; raises ``SupplierTimeout`` one time in five.
"""

from __future__ import annotations

import random
import time

from flask import Blueprint, abort, render_template, request
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload

from demo_site.warehouse.models import StockLevel, Warehouse, db

TIMEOUT_RATE = 0.2
SUPPLIER_DELAY = (0.01, 0.08)  # seconds the pretend supplier takes to answer

pages = Blueprint("pages", __name__)


class SupplierTimeout(Exception):
    """The pretend supplier did not answer in time."""


@pages.get("/")
def home() -> str:
    return render_template("home.html")


@pages.get("/warehouses")
def warehouses() -> str:
    """List warehouses with their units in stock. Reading ``warehouse.stock`` loads it
    lazily, one query per warehouse (the N+1 pattern), unless ``?fixed=1`` preloads it."""
    fixed = request.args.get("fixed") == "1"
    query = select(Warehouse).order_by(Warehouse.city)
    if fixed:
        query = query.options(selectinload(Warehouse.stock))
    rows = [
        (warehouse.city, sum(level.quantity for level in warehouse.stock))
        for warehouse in db.session.scalars(query)
    ]
    return render_template("warehouses.html", rows=rows, fixed=fixed)


@pages.get("/stock/<int:product_id>")
def stock(product_id: int) -> str:
    query = (
        select(StockLevel)
        .where(StockLevel.product_id == product_id)
        .options(joinedload(StockLevel.warehouse))
    )
    levels = db.session.scalars(query).all()
    if not levels:
        abort(404)
    return render_template("stock.html", product_id=product_id, levels=levels)


@pages.get("/api/stock")
def api_stock() -> dict[str, list[dict[str, int]]]:
    """Units in stock per product, over every warehouse."""
    query = select(StockLevel.product_id, func.sum(StockLevel.quantity)).group_by(
        StockLevel.product_id
    )
    rows = db.session.execute(query)
    return {"products": [{"id": pid, "units": units or 0} for pid, units in rows]}


@pages.post("/sync")
def sync() -> dict[str, int]:
    """Restock a product from the supplier, who times out one time in five."""
    product_id = request.form.get("product", type=int)
    quantity = request.form.get("quantity", 1, type=int)
    if product_id is None:
        abort(400, "name a product: product=ID")
    time.sleep(random.uniform(*SUPPLIER_DELAY))
    if random.random() < TIMEOUT_RATE:
        raise SupplierTimeout(f"no answer about product {product_id}")
    level = db.session.scalars(
        select(StockLevel).where(StockLevel.product_id == product_id).limit(1)
    ).first()
    if level is None:
        abort(404)
    level.quantity += quantity
    db.session.commit()
    return {"product": product_id, "quantity": level.quantity}
