"""The app: checks, DB hooks, model signals, Celery tasks and settings reloads, in ``ready()``."""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import got_request_exception, setting_changed
from django.db.backends.signals import connection_created

log = logging.getLogger("zibrato.django")
# The Celery app whose tasks are measured now (ZIBRATO["CELERY"]), if any.
_measured: list[Any] = []


class ZibratoConfig(AppConfig):
    """``INSTALLED_APPS += ["zibrato_django"]``."""

    name = "zibrato_django"
    verbose_name = "Zibrato metrics"

    def ready(self) -> None:
        """Register the checks and connect the hooks (nothing is opened yet; the settings
        are read for ``ZIBRATO["CELERY"]`` and the parts of where the time goes only)."""
        from zibrato_django import db, model_signals
        from zibrato_django.checks import check_settings
        from zibrato_django.middleware import note_unhandled

        checks.register(check_settings)
        setting_changed.connect(reload_settings, dispatch_uid="zibrato_django.settings")
        connection_created.connect(db.install, dispatch_uid="zibrato_django.db")
        got_request_exception.connect(note_unhandled, dispatch_uid="zibrato_django.errors")
        db.install_on_existing()
        model_signals.connect()
        install_components()
        measure_tasks()


def install_components() -> None:
    """Install what measures where the time goes: each part the settings switch on.

    A part switched off at start is not installed at all; one switched off later (the
    settings changed) stays installed but measures nothing.
    """
    from zibrato.framework import http_client, statements
    from zibrato.framework import settings as kit
    from zibrato_django import caches, failures, templates
    from zibrato_django.conf import current

    try:
        config = current()  # read, not logged: a bad value is logged when it is used
        if config.switch(kit.HTTP_CLIENT):
            http_client.install(outside=outside_client)
        if config.switch(kit.CACHE):
            caches.install()
        if config.switch(kit.TEMPLATES):
            templates.install()
        statements.SAMPLER.code.add_packages(config.app_packages)
    except Exception as exc:  # a broken part must not stop the project from starting
        failures.report("django_install", exc)


def outside_client() -> Any:
    """The shared client, for outgoing calls made outside requests and tasks (None: not
    measured)."""
    from zibrato_django import zibrato
    from zibrato_django.conf import request_plan

    return zibrato if request_plan().switches.http_client else None


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
    if setting == SETTING:
        install_components()
    measure_tasks()


def measure_tasks() -> None:
    """Measure the tasks of the Celery app ``ZIBRATO["CELERY"]`` names (docs/celery.md),
    with the shared client and the project's database; stop measuring a previous one.

    A name that cannot be imported is ``manage.py check``'s ``zibrato.E007``; in a
    process where no check ran, its line is logged once and tasks are not measured.
    """
    from zibrato.errors import ConfigError
    from zibrato.framework import celery, settings
    from zibrato_django import zibrato
    from zibrato_django.conf import current, feature_enabled, request_plan, spell

    config = current()
    app = None
    if config.celery is not None and feature_enabled(settings.TASKS, config):
        try:
            app = celery.load_app(config.celery)
        except ConfigError as exc:
            _log_once(f"{spell('CELERY')}: {exc}")
    for old in _measured:
        celery.uninstrument(old)
    _measured.clear()
    if app is not None:
        plan = request_plan()
        celery.instrument(
            app,
            client=zibrato,
            db_level=plan.db_level,
            namespace=plan.db_namespace,
            breakdown=plan.switches.breakdown,
        )
        _measured.append(app)


@functools.cache
def _log_once(line: str) -> None:
    log.error("%s; tasks are not measured (manage.py check explains)", line)
