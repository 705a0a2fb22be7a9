"""The ``ZIBRATO`` settings dict: documented defaults, one cached reader, two translations.

Everything the app reads goes through :func:`get_config`, a copy of ``settings.ZIBRATO``
merged over :data:`DEFAULTS` and cached until Django's ``setting_changed`` signal says
``ZIBRATO`` changed (``override_settings`` in tests). The two places where settings become
core objects are one function each, so that a new setting (CURVE keys, say) is plumbed
through in one place: :func:`client_keywords` (the shared client) and :func:`build_runner`
(``manage.py zibrato_broker``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from zibrato import levels
from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND, check_endpoint
from zibrato.backends import build
from zibrato.client import PUBLISH_ENV
from zibrato.errors import ConfigError
from zibrato.framework import schema
from zibrato.runner import Runner
from zibrato.security.curve import adapter_keywords

log = logging.getLogger("zibrato.django")

SETTING = "ZIBRATO"
MIDDLEWARE_PATH = "zibrato_django.middleware.ZibratoMiddleware"
DEFAULT_BACKENDS: tuple[Mapping[str, Any], ...] = ({"KIND": "console"},)

DEFAULTS: dict[str, Any] = {
    # Where the shared client publishes; None: $ZIBRATO_PUBLISH, else BROKER_FRONTEND.
    "PUBLISH": None,
    # The client's threshold: events below it are dropped in the process at no cost.
    "LEVEL": levels.DEFAULT_THRESHOLD,
    # The source of every event; None: this host's name.
    "SOURCE": None,
    # Tags added to every event of this process.
    "TAGS": {},
    # Level of http.server.request.duration and http.server.view.duration.
    "REQUEST_LEVEL": schema.REQUEST_LEVEL,
    # Level of the per-request database metrics (db.client.request.*).
    "DB_LEVEL": schema.DB_REQUEST_LEVEL,
    # Regexes searched in request.path_info: matching requests are not measured.
    "EXCLUDE_PATHS": [],
    # Where `manage.py zibrato_broker` binds for publishers and for backends.
    "BROKER_FRONTEND": DEFAULT_FRONTEND,
    "BROKER_BACKEND": DEFAULT_BACKEND,
    # What `manage.py zibrato_broker` runs, as zibrato.backends.build() takes it.
    "BACKENDS": list(DEFAULT_BACKENDS),
    # Count post_save / post_delete per model.
    "MODEL_SIGNALS": True,
    # CURVE keys directory (`zibrato keys DIR`) of the client and zibrato_broker; None:
    # $ZIBRATO_CURVE, else no CURVE (then the broker binds only loopback).
    "CURVE": None,
    # Let zibrato_broker bind beyond loopback without CURVE (it warns).
    "INSECURE": False,
}
# A keys directory that never loads: a bad CURVE setting keeps the client unconnected
# (its events dropped as curve_keys) rather than sending without CURVE.
_UNUSABLE_KEYS = ""
# The ENGINE Django puts in place when DATABASES is empty: no database at all.
_NO_DATABASE_ENGINE = "django.db.backends.dummy"
# A broker bound to every interface is reached on loopback from the same host.
_WILDCARD_HOSTS = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def get_config() -> dict[str, Any]:
    """Return ``settings.ZIBRATO`` merged over :data:`DEFAULTS` (cached)."""
    return dict(_cached_config())


@functools.cache
def _cached_config() -> dict[str, Any]:
    user = getattr(settings, SETTING, None)
    config = dict(DEFAULTS)
    if isinstance(user, Mapping):
        config.update(user)
    return config


@dataclass(frozen=True)
class RequestPlan:
    """What the middleware and the DB hooks need per request, computed once per config."""

    request_level: str
    db_level: str
    exclude: re.Pattern[str] | None
    model_signals: bool
    # Where a request without queries records 0 queries; None: the project has no database.
    db_namespace: str | None


@functools.cache
def request_plan() -> RequestPlan:
    """Return the settings the hot paths read, valid even when the settings are not."""
    config = _cached_config()
    return RequestPlan(
        request_level=_level(config, "REQUEST_LEVEL"),
        db_level=_level(config, "DB_LEVEL"),
        exclude=_exclude_pattern(config.get("EXCLUDE_PATHS")),
        model_signals=bool(config.get("MODEL_SIGNALS")),
        db_namespace=_default_namespace(),
    )


def _default_namespace() -> str | None:
    """Return the ``default`` alias if it is a real database, else None."""
    databases = getattr(settings, "DATABASES", None)
    default = databases.get(DEFAULT_DB_ALIAS) if isinstance(databases, Mapping) else None
    engine = default.get("ENGINE") if isinstance(default, Mapping) else None
    return DEFAULT_DB_ALIAS if engine and engine != _NO_DATABASE_ENGINE else None


def clear_caches() -> None:
    """Forget the cached settings (the next read sees ``settings.ZIBRATO`` again)."""
    _cached_config.cache_clear()
    request_plan.cache_clear()


def client_keywords(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the keywords of ``Zibrato(...)`` for the shared client.

    A value that cannot work is replaced by its default and logged: the system checks
    report it loudly (``manage.py check``), and metrics must never break a request.
    """
    publish = config.get("PUBLISH") or os.environ.get(PUBLISH_ENV)
    if not publish:
        publish = _reachable(config.get("BROKER_FRONTEND"))
    try:
        publish = check_endpoint(publish)
    except ConfigError as exc:
        _invalid("PUBLISH", str(exc), DEFAULT_FRONTEND)
        publish = DEFAULT_FRONTEND
    source = config.get("SOURCE")
    if source is None:
        source = socket.gethostname()  # no DNS lookup: the kernel's own name
    elif not isinstance(source, str):
        _invalid("SOURCE", f"must be a string, not {source!r}", "the host name")
        source = socket.gethostname()
    tags = config.get("TAGS") or {}
    if not _is_str_mapping(tags):
        _invalid("TAGS", f"must map strings to strings, not {tags!r}", "{}")
        tags = {}
    try:
        curve = adapter_keywords(config.get("CURVE")).client
    except ConfigError as exc:
        _invalid("CURVE", str(exc), "no broker connection (events dropped as curve_keys)")
        curve = adapter_keywords(_UNUSABLE_KEYS).client
    return {
        "publish": publish,
        "level": _level(config, "LEVEL"),
        "source": source,
        "tags": dict(tags),
        **curve,
    }


def build_runner(config: Mapping[str, Any], *, kinds: Sequence[str] | None = None) -> Runner:
    """Return the broker and backends that ``manage.py zibrato_broker`` runs.

    ``kinds`` (from ``--backend``) replaces the configured ``BACKENDS`` with those kinds'
    defaults. Raises :class:`~zibrato.errors.ConfigError` with one line for a setting
    that cannot work.
    """
    frontend = check_endpoint(config.get("BROKER_FRONTEND"), bind=True)
    backend_address = check_endpoint(config.get("BROKER_BACKEND"), bind=True)
    specs = [{"kind": kind} for kind in kinds] if kinds else backend_specs(config)
    backends = build(specs, connect=backend_address)
    security = adapter_keywords(config.get("CURVE"), insecure=config.get("INSECURE", False))
    return Runner(backends, frontend=frontend, backend_address=backend_address, **security.runner)


def backend_specs(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Return ``BACKENDS`` (None: the default); raise ConfigError if it is not a list."""
    specs = config.get("BACKENDS")
    if specs is None:
        return list(DEFAULT_BACKENDS)
    if not isinstance(specs, list | tuple):
        raise ConfigError(
            f"BACKENDS must be a list of backends like [{{'KIND': 'console'}}], not {specs!r}"
        )
    return list(specs)


def _reachable(bound: object) -> object:
    """Return the address to connect to a broker bound at ``bound`` from this host."""
    if isinstance(bound, str) and bound.startswith("tcp://"):
        host, colon, port = bound[len("tcp://") :].rpartition(":")
        if host in _WILDCARD_HOSTS:
            return f"tcp://{_WILDCARD_HOSTS[host]}{colon}{port}"
    return bound


def _level(config: Mapping[str, Any], key: str) -> str:
    try:
        return levels.normalize(config.get(key))  # type: ignore[arg-type]
    except ValueError as exc:
        _invalid(key, str(exc), str(DEFAULTS[key]))
        return str(DEFAULTS[key])


def _exclude_pattern(patterns: object) -> re.Pattern[str] | None:
    if not patterns:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns))  # type: ignore[attr-defined]
    except (re.error, TypeError) as exc:
        _invalid("EXCLUDE_PATHS", str(exc), "[]")
        return None


def _is_str_mapping(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


@functools.cache
def _invalid(key: str, problem: str, default: str) -> None:
    # Cached: each bad value is logged once per process, not once per request.
    log.error("ZIBRATO[%r]: %s; using %s instead (manage.py check explains)", key, problem, default)
