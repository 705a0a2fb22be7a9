"""Where the demo keeps its files: one data folder, shared by every process of a run."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "ZIBRATO_DEMO_DATA"
DEFAULT_DATA = Path(__file__).resolve().parent / "var"
REPOSITORY = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Return the data folder: ``$ZIBRATO_DEMO_DATA``, else ``demo_site/var``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)
