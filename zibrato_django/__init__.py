"""Zibrato for Django: request, view and database metrics from every worker process.

Two lines of settings::

    INSTALLED_APPS += ["zibrato_django"]
    MIDDLEWARE = ["zibrato_django.middleware.ZibratoMiddleware", *MIDDLEWARE]

and application code shares the process's one client::

    from zibrato_django import zibrato

    @zibrato.time_me(name="report.build")
    def build_report(): ...

Importing this package, and decorating functions with it, reads no setting, opens no
socket and starts no thread: the client is built from ``settings.ZIBRATO`` when the first
metric is recorded (:mod:`zibrato.framework.lazy`).
"""

from __future__ import annotations

from typing import Any

from zibrato.framework.lazy import LazyZibrato


class _ClientSettings:
    """Read the client's keywords from ``settings.ZIBRATO``; remember the last ones used."""

    def __init__(self) -> None:
        self.used: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        from zibrato_django.conf import client_keywords

        self.used = client_keywords()
        return self.used


client_settings = _ClientSettings()
zibrato = LazyZibrato(client_settings)

__all__ = ["zibrato"]
