"""A Flask site whose views nest the components of a request's time (``test_flask_why_slow``):
a plain SQLAlchemy engine on SQLite (with ``zsleep(seconds)``: a query of known length),
Jinja2 templates, and outgoing calls to the ``upstream`` server given.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from flask import Flask, render_template, request
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

APP_MS = 20
UPSTREAM_MS = 40
SHELVES = 3


class Base(DeclarativeBase):
    pass


class Shelf(Base):
    __tablename__ = "shelf"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    items: Mapped[list[Item]] = relationship(back_populates="shelf")


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(sa.ForeignKey("shelf.id"))
    shelf: Mapped[Shelf] = relationship(back_populates="items")


def engine_for(path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}")
    sa.event.listen(engine, "connect", lambda dbapi, record: dbapi.create_function(
        "zsleep", 1, time.sleep))  # fmt: skip
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for number in range(SHELVES):
            shelf = Shelf(name=f"shelf{number}")
            session.add_all([shelf, Item(shelf=shelf), Item(shelf=shelf)])
        session.commit()
    return engine


def build(engine: sa.Engine, config: dict[str, Any] | None = None) -> Flask:
    """Return the site, not instrumented (the test adds Zibrato and instrument_engine)."""
    app = Flask("why_slow", template_folder=str(Path(__file__).parent / "templates"))
    app.config.update({"TESTING": True, **(config or {})})

    def slow_query(ms: int) -> str:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT zsleep(:s)"), {"s": ms / 1000})
        return ""

    def busy(ms: int) -> str:
        time.sleep(ms / 1000)
        return ""

    @app.route("/nested")
    def nested() -> str:
        time.sleep(APP_MS / 1000)
        upstream = request.args["upstream"]
        value = requests.get(f"{upstream}/delay?ms={UPSTREAM_MS}", timeout=10).json()
        return render_template("why/nested.html", value=value, slow_query=slow_query, busy=busy)

    @app.route("/broken")
    def broken() -> str:
        def boom() -> str:
            raise LookupError("no such thing")

        return render_template("why/broken.html", busy=busy, boom=boom)

    @app.route("/view")
    def repeat_in_view() -> dict[str, list[int]]:
        counts = []
        with Session(engine) as session:
            for shelf in session.scalars(sa.select(Shelf).order_by(Shelf.id)).all():
                counts.append(len(shelf.items))  # the line that repeats
        return {"counts": counts}

    @app.route("/helper")
    def repeat_in_helper() -> dict[str, list[int]]:
        from why_slow_queries import item_counts

        with Session(engine) as session:
            return {"counts": item_counts(session)}

    @app.route("/template")
    def repeat_in_template() -> str:
        with Session(engine) as session:
            shelves = session.scalars(sa.select(Shelf).order_by(Shelf.id)).all()
            return render_template("why/lazy.html", shelves=shelves)

    @app.route("/many/<int:statements>")
    def many(statements: int) -> str:
        """``statements`` distinct statements, each run three times."""
        with engine.connect() as connection:
            for number in range(statements):
                sql = f"SELECT {number} AS n{number} FROM shelf LIMIT 1"
                for _ in range(3):
                    connection.exec_driver_sql(sql)
        return "ok"

    return app
