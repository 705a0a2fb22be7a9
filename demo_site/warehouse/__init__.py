"""The demo's Flask app: a warehouse service beside the Django shop, measured by zibrato_flask.

Flask-SQLAlchemy on a SQLite file of its own (``warehouse.sqlite3`` in the data folder);
its metrics go to the same broker as the shop's, with a source and a tag of their own.
Serve it with ``gunicorn 'demo_site.warehouse:create_app()'``; create and seed its
database with ``flask --app demo_site.warehouse init-db``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from flask import Flask

from demo_site.paths import data_dir
from demo_site.warehouse.models import db
from demo_site.warehouse.seed import seed_warehouse
from demo_site.warehouse.views import pages
from zibrato_flask import Zibrato

zibrato = Zibrato()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Return the warehouse app (``config`` overrides the defaults below)."""
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{data_dir() / 'warehouse.sqlite3'}",
        # Told apart from the Django shop's metrics by their source and tag.
        ZIBRATO_SOURCE="flask-warehouse",
        ZIBRATO_TAGS={"app": "warehouse"},
    )
    app.config.update(config or {})
    db.init_app(app)
    zibrato.init_app(app)
    app.register_blueprint(pages)
    app.cli.add_command(init_db)
    return app


@click.command("init-db")
def init_db() -> None:
    """Create the warehouse's tables and fill them once."""
    db.create_all()
    click.echo(f"the warehouse has {seed_warehouse()} stock levels")
