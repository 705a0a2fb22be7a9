"""The ``dashboard`` backend: a live web page with SQLite history (see docs/dashboard.md)."""

from zibrato.backends.dashboard.backend import DashboardBackend

__all__ = ["DashboardBackend"]
