"""A Flask app for the ``flask zibrato`` subprocess tests: its config comes from the environment.

``FLASK_ZIBRATO_BACKENDS='[{"kind": "jsonl", "path": "m.jsonl"}]'`` and the like are read
with ``app.config.from_prefixed_env()`` (values are JSON), as a deployment would.
"""

from __future__ import annotations

from flask import Flask

from zibrato_flask import Zibrato


def create_app() -> Flask:
    """Return the app (``flask --app tests/flask/command_site:create_app ...``)."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    Zibrato(app)

    @app.route("/items/<int:pk>")
    def item(pk: int) -> dict[str, int]:
        return {"pk": pk}

    return app
