"""Warehouses and the stock levels they hold of the shop's products."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Warehouse(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    city: Mapped[str] = mapped_column(String(60), unique=True)
    # Loaded lazily, one query per warehouse, unless a query asks for more.
    stock: Mapped[list[StockLevel]] = relationship(back_populates="warehouse")


class StockLevel(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouse.id"))
    product_id: Mapped[int] = mapped_column(index=True)  # a product of the Django shop
    quantity: Mapped[int]
    warehouse: Mapped[Warehouse] = relationship(back_populates="stock")
