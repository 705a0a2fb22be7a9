"""A Flask app for the gunicorn test (``gunicorn gunicorn_site:app``).

Its config comes from the environment (``FLASK_ZIBRATO_PUBLISH=tcp://...``, through
``app.config.from_prefixed_env()``), and its own code records a metric at import, as a
preloaded app's might: under ``gunicorn --preload`` the process's publisher then exists
in the master before it forks the workers.
"""

from __future__ import annotations

import os
import time

from flask import Flask, request

from zibrato_flask import Zibrato

app = Flask(__name__)
app.config.from_prefixed_env()
zibrato = Zibrato(app)


@app.route("/pid")
def pid() -> str:
    """Answer this process's id, after ``?sleep=SECONDS`` (so that every worker gets work)."""
    time.sleep(min(float(request.args.get("sleep", 0)), 1.0))
    return str(os.getpid())


zibrato.incr("flasktest.loaded")
