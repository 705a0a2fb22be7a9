"""Where the pieces meet by default, and checks for the addresses users give.

Every default address lives here once: publishers connect to ``DEFAULT_FRONTEND``,
subscribers and backends to ``DEFAULT_BACKEND``.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_FRONTEND_PORT = 5550
DEFAULT_BACKEND_PORT = 5551
DEFAULT_FRONTEND = f"tcp://{DEFAULT_HOST}:{DEFAULT_FRONTEND_PORT}"
DEFAULT_BACKEND = f"tcp://{DEFAULT_HOST}:{DEFAULT_BACKEND_PORT}"
