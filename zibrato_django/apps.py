"""The app: checks, DB hooks, model signals and settings reloads, installed in ``ready()``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import got_request_exception, setting_changed
from django.db.backends.signals import connection_created


class ZibratoConfig(AppConfig):
    """``INSTALLED_APPS += ["zibrato_django"]``."""

    name = "zibrato_django"
    verbose_name = "Zibrato metrics"

    def ready(self) -> None:
        """Register the checks and connect the hooks (nothing is read or opened yet)."""
        from zibrato_django import db, model_signals
        from zibrato_django.checks import check_settings
        from zibrato_django.middleware import note_unhandled

        checks.register(check_settings)
        setting_changed.connect(reload_settings, dispatch_uid="zibrato_django.settings")
        connection_created.connect(db.install, dispatch_uid="zibrato_django.db")
        got_request_exception.connect(note_unhandled, dispatch_uid="zibrato_django.errors")
        db.install_on_existing()
        model_signals.connect()


def reload_settings(setting: str, **kwargs: Any) -> None:
    """Re-read ``ZIBRATO`` (or ``DATABASES``) after it changed; restart the client only if
    its keywords did."""
    from zibrato_django import client_settings, zibrato
    from zibrato_django.conf import SETTING, clear_caches, client_keywords

    if setting not in (SETTING, "DATABASES"):
        return
    clear_caches()
    if setting == SETTING and zibrato.started and client_keywords() != client_settings.used:
        zibrato.reset()
