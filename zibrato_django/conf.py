"""The ``ZIBRATO`` settings dict, read through the framework kit's one settings core.

Django's keys are the kit's own (:data:`zibrato.framework.settings.KEYS`, documented in
``docs/settings.md``): this module only says where they live (``settings.ZIBRATO``), how
they are spelled in messages (``ZIBRATO['PUBLISH']``) and which command starts a broker.
:func:`current` reads them once, cached until Django's ``setting_changed`` signal says
``ZIBRATO`` changed (``override_settings`` in tests).

A bad value is reported by ``manage.py check`` (and ``zibrato_broker``) with an id; in a
worker where no check ran, the feature it concerns is switched off and the same line is
logged once (:func:`feature_enabled`): never an exception in a request.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from zibrato.backends import build
from zibrato.errors import ConfigError
from zibrato.framework import settings as kit
from zibrato.framework.settings import Settings, read_settings
from zibrato.framework.time_spent import ALL_ON, Switches
from zibrato.runner import Runner

log = logging.getLogger("zibrato.django")

SETTING = "ZIBRATO"
MIDDLEWARE_PATH = "zibrato_django.middleware.ZibratoMiddleware"
# What the "no broker answers" warning tells a Django user to run.
BROKER_HINT = "python manage.py zibrato_broker"
DEFAULTS: dict[str, Any] = {key: kit.KEYS[key].default for key in kit.WEB_KEYS}
# The ENGINE Django puts in place when DATABASES is empty: no database at all.
_NO_DATABASE_ENGINE = "django.db.backends.dummy"
# Matches every path: the request metrics of settings that switched them off.
_EVERY_PATH = re.compile("")


def spell(key: str) -> str:
    """Return how a key is written in a Django project: ``ZIBRATO['PUBLISH']``."""
    return f"settings.{SETTING}" if key == kit.WHOLE else f"{SETTING}[{key!r}]"


def get_config() -> dict[str, Any]:
    """Return ``settings.ZIBRATO`` merged over :data:`DEFAULTS` (what the user sees)."""
    user = getattr(settings, SETTING, None)
    config = copy.deepcopy(DEFAULTS)
    if isinstance(user, Mapping):
        config.update(user)
    return config


@functools.cache
def current() -> Settings:
    """Return the settings in force (cached until ``ZIBRATO`` changes)."""
    return read_settings(getattr(settings, SETTING, {}), keys=kit.WEB_KEYS)


def feature_enabled(feature: str, settings_: Settings | None = None) -> bool:
    """Whether ``feature`` works; if a bad value switches it off, log why (once)."""
    problem = (settings_ or current()).off_because(feature)
    if problem is None:
        return True
    _log_once(problem.line(spell), feature)
    return False


@functools.cache
def _log_once(line: str, feature: str) -> None:
    # Cached: each bad value is logged once per process, not once per request.
    log.error("%s; %s is off (manage.py check explains)", line, feature)


@dataclass(frozen=True)
class RequestPlan:
    """What the middleware and the DB hooks need per request, computed once per config."""

    request_level: str
    db_level: str
    exclude: re.Pattern[str] | None
    model_signals: bool
    # Where a request without queries records 0 queries; None: the project has no database.
    db_namespace: str | None
    # Which parts of where the time goes are measured (ALL_ON itself when all are).
    switches: Switches = ALL_ON
    app_packages: tuple[str, ...] = ()


@functools.cache
def request_plan() -> RequestPlan:
    """Return the settings the hot paths read, valid even when the settings are not."""
    config = current()
    requests_on = feature_enabled(kit.REQUESTS, config)
    return RequestPlan(
        request_level=config.request_level,
        db_level=config.db_level,
        exclude=config.exclude if requests_on else _EVERY_PATH,
        model_signals=config.model_signals and feature_enabled(kit.MODEL_SIGNALS, config),
        db_namespace=_default_namespace(),
        switches=switches_of(config),
        app_packages=config.app_packages,
    )


def switches_of(config: Settings) -> Switches:
    """Return which parts of where the time goes ``config`` measures (a bad value: off)."""
    for feature in (kit.BREAKDOWN, kit.HTTP_CLIENT, kit.CACHE, kit.TEMPLATES, kit.STATEMENTS):
        feature_enabled(feature, config)  # logs why, once, when a bad value switches it off
    found = Switches(
        breakdown=config.switch(kit.BREAKDOWN),
        http_client=config.switch(kit.HTTP_CLIENT),
        cache=config.switch(kit.CACHE),
        templates=config.switch(kit.TEMPLATES),
        statements=config.switch(kit.STATEMENTS),
    )
    return ALL_ON if found == ALL_ON else found


def _default_namespace() -> str | None:
    """Return the ``default`` alias if it is a real database, else None."""
    databases = getattr(settings, "DATABASES", None)
    default = databases.get(DEFAULT_DB_ALIAS) if isinstance(databases, Mapping) else None
    engine = default.get("ENGINE") if isinstance(default, Mapping) else None
    return DEFAULT_DB_ALIAS if engine and engine != _NO_DATABASE_ENGINE else None


def clear_caches() -> None:
    """Forget the cached settings (the next read sees ``settings.ZIBRATO`` again)."""
    current.cache_clear()
    request_plan.cache_clear()


def client_keywords(config: object = None) -> dict[str, Any]:
    """Return the keywords of ``Zibrato(...)`` for the shared client.

    ``config`` is a ``ZIBRATO`` dict (default: the settings in force). When a bad value
    switches the client off, the client connects nowhere and its line is logged once.
    """
    read = current() if config is None else read_settings(config, keys=kit.WEB_KEYS)
    feature_enabled(kit.CLIENT, read)
    return read.client_keywords(broker_hint=BROKER_HINT)


def build_runner(
    config: Settings | Mapping[str, Any], *, kinds: Sequence[str] | None = None
) -> Runner:
    """Return the broker and backends that ``manage.py zibrato_broker`` runs (``config``:
    the settings, or a ``ZIBRATO`` dict).

    ``kinds`` (from ``--backend``) replaces the configured ``BACKENDS`` with those kinds'
    defaults. Raises :class:`~zibrato.errors.ConfigError` with one line for a setting
    that cannot work.
    """
    if not isinstance(config, Settings):
        config = read_settings(config, keys=kit.WEB_KEYS)
    for problem in config.errors:
        raise ConfigError(problem.line(spell))
    specs = [{"kind": kind} for kind in kinds] if kinds else list(config.backends)
    try:
        backends = build(specs, connect=config.broker_backend_address)
    except ConfigError as exc:
        raise ConfigError(f"{spell('BACKENDS')}: {exc}" if not kinds else str(exc)) from None
    return Runner(
        backends,
        frontend=config.broker_frontend,
        backend_address=config.broker_backend_address,
        curve=config.curve,
        insecure=config.insecure,
    )
