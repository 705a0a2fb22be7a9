"""What each settings key takes: its default, the feature it concerns, and its parser.

The table :data:`KEYS` is the one place a key's meaning is written (``docs/settings.md``
shows it); :mod:`zibrato.framework.settings` reads a front end's settings with it, and the
``zibrato`` command's options parse with :func:`parse_setting`, so that a value is taken
or refused alike everywhere. A parser raises :class:`~zibrato.errors.ConfigError` whose
message is the value (shown short) and what is allowed, without the key's name: each front
end spells the key its own way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zibrato import levels, protocol
from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND, check_endpoint, shown
from zibrato.client import PUBLISH_ENV
from zibrato.errors import ConfigError
from zibrato.framework import schema
from zibrato.security.curve import CURVE_ENV

# The features a bad value switches off at run time.
CLIENT = "the client"  # nothing is recorded or sent
REQUESTS = "request metrics"  # request, view and per-request database metrics
MODEL_SIGNALS = "model signals"  # Django's per-model save and delete counters
TASKS = "task metrics"  # Celery's tasks, measured through zibrato.framework.celery
BROKER = "the broker"  # only the broker commands read it, and they refuse to start
# Where the time goes (docs/web-metrics.md): each part can be switched off alone.
BREAKDOWN = "the time breakdown"  # http.server.request.breakdown, celery.task.breakdown
HTTP_CLIENT = "outgoing HTTP metrics"  # http.client.request.duration
CACHE = "cache metrics"  # Django's cache calls per request
TEMPLATES = "template metrics"  # template time per request
STATEMENTS = "repeated statements"  # SQL text and code locations of an N+1
EVERY_FEATURE = (
    CLIENT, REQUESTS, MODEL_SIGNALS, TASKS, BROKER,
    BREAKDOWN, HTTP_CLIENT, CACHE, TEMPLATES, STATEMENTS,
)  # fmt: skip

# What a problem is, so that a front end can give each kind its own id (Django's E001...).
LEVEL, ADDRESS, BACKENDS, TYPE, REGEX, CURVE, CELERY_APP = (
    "level",
    "address",
    "backends",
    "type",
    "regex",
    "curve",
    "celery app",
)
UNKNOWN_KEY, DEPRECATED_KEY, UNREACHABLE = "unknown key", "deprecated key", "unreachable"

DEFAULT_BACKENDS: tuple[Mapping[str, Any], ...] = ({"kind": "console"},)


@dataclass(frozen=True)
class Key:
    """One setting: its default, the feature it concerns, and its parser."""

    default: Any
    feature: str
    category: str
    parse: Callable[[Any], Any]
    meaning: str


def _level(value: object) -> str:
    try:
        return levels.normalize(value)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(
            f"unknown level {shown(value)}: use one of {', '.join(levels.LEVELS)}"
        ) from None


def _publish(value: object) -> str | None:
    return None if value is None else check_endpoint(value)


def _bind(value: object) -> str:
    return check_endpoint(value, bind=True)


def _source(value: object) -> str | None:
    if value is None or protocol.check_name(value) is None:
        return value  # type: ignore[return-value]
    raise ConfigError(
        f"{shown(value)}: use a name for this process of 1-{protocol.MAX_NAME_LENGTH} "
        "printable characters without spaces (e.g. 'web-1'), or None for the host name"
    )


def _tags(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping) and protocol.valid_tags(dict(value)):
        return tuple(sorted(value.items()))
    raise ConfigError(
        f"{shown(value)}: use a dict of at most {protocol.MAX_TAGS} names to string values "
        f"(each 1-{protocol.MAX_TAG_LENGTH} characters), e.g. {{'app': 'shop'}}, or None"
    )


def _exclude(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
        raise ConfigError(
            f"{shown(value)}: use a list of regular expressions searched in the path, "
            "e.g. ['^/health', '^/static/']"
        )
    for pattern in value:
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise RegexError(
                f"{shown(pattern)} is not a regular expression ({exc}): fix or remove it"
            ) from None
    return tuple(value)


class RegexError(ConfigError):
    """An ``EXCLUDE_PATHS`` entry that does not compile (its own category)."""


def _backends(value: object) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(
            f"{shown(value)}: use a list of backends, e.g. [{{'kind': 'console'}}, "
            "{'kind': 'prometheus', 'listen': '127.0.0.1:9102'}]"
        )
    return tuple(value)


def _switch(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{shown(value)}: use True or False")


# A Python package name, dotted or not ("myproject", "myproject.shop").
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_APP_PACKAGES = 100


def _packages(value: object) -> tuple[str, ...]:
    if (
        isinstance(value, list | tuple)
        and len(value) <= MAX_APP_PACKAGES
        and all(isinstance(p, str) and len(p) <= 200 and _PACKAGE.fullmatch(p) for p in value)
    ):
        return tuple(value)
    raise ConfigError(
        f"{shown(value)}: use a list of at most {MAX_APP_PACKAGES} package names whose code is "
        "the application's even when installed into site-packages, e.g. ['myproject']"
    )


# The longest path a system takes (Linux's PATH_MAX): longer is not a directory anywhere.
MAX_PATH = 4096


def _curve(value: object) -> str | None:
    if value is None:
        return None
    path = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or not path.isprintable():
        raise ConfigError(
            f"{shown(value)}: use the path of a keys directory (`zibrato keys DIR`), or None"
        )
    return path  # its keys are loaded where they are used (or checked)


# Where a Celery app is: 'package.module:attribute' (or the last dot for the colon).
_APP_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[:.][A-Za-z_]\w*", re.ASCII)
MAX_APP_PATH = 200


def _celery(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) <= MAX_APP_PATH and _APP_PATH.fullmatch(value):
            return value  # imported where it is used (or checked): zibrato.framework.celery
    elif _looks_like_celery_app(value):
        return value
    raise ConfigError(
        f"{shown(value)}: use where your Celery app is, e.g. 'proj.celery:app' "
        "(or the app itself), or None"
    )


def _looks_like_celery_app(value: object) -> bool:
    # Read off its class: an app's ``tasks`` is a property that finalizes the app.
    kind = type(value)
    return all(hasattr(kind, name) for name in ("tasks", "conf", "send_task"))


KEYS: dict[str, Key] = {
    "PUBLISH": Key(
        None,
        CLIENT,
        ADDRESS,
        _publish,
        f"where the client publishes; None: ${PUBLISH_ENV}, else BROKER_FRONTEND",
    ),
    "LEVEL": Key(levels.DEFAULT_THRESHOLD, CLIENT, LEVEL, _level, "the client's threshold"),
    "SOURCE": Key(None, CLIENT, TYPE, _source, "the source of every event; None: host name"),
    "TAGS": Key({}, CLIENT, TYPE, _tags, "tags added to every event"),
    "CURVE": Key(None, CLIENT, CURVE, _curve, f"CURVE keys directory; None: ${CURVE_ENV}"),
    "REQUEST_LEVEL": Key(schema.REQUEST_LEVEL, REQUESTS, LEVEL, _level, "request timers' level"),
    "DB_LEVEL": Key(schema.DB_REQUEST_LEVEL, REQUESTS, LEVEL, _level, "per-request DB level"),
    "EXCLUDE_PATHS": Key([], REQUESTS, TYPE, _exclude, "regexes searched in the path"),
    "MODEL_SIGNALS": Key(True, MODEL_SIGNALS, TYPE, _switch, "count model saves and deletes"),
    "BREAKDOWN": Key(True, BREAKDOWN, TYPE, _switch, "where each request's time goes"),
    "HTTP_CLIENT": Key(True, HTTP_CLIENT, TYPE, _switch, "time outgoing HTTP calls"),
    "CACHE": Key(True, CACHE, TYPE, _switch, "count and time cache calls per request"),
    "TEMPLATES": Key(True, TEMPLATES, TYPE, _switch, "time template rendering per request"),
    "REPEATED_STATEMENTS": Key(True, STATEMENTS, TYPE, _switch, "SQL and code of an N+1"),
    "APP_PACKAGES": Key([], STATEMENTS, TYPE, _packages, "packages that are the application"),
    "CELERY": Key(None, TASKS, TYPE, _celery, "the Celery app whose tasks are measured"),
    "BROKER_FRONTEND": Key(DEFAULT_FRONTEND, BROKER, ADDRESS, _bind, "the broker binds here"),
    "BROKER_BACKEND_ADDRESS": Key(DEFAULT_BACKEND, BROKER, ADDRESS, _bind, "and here"),
    "BACKENDS": Key(list(DEFAULT_BACKENDS), BROKER, BACKENDS, _backends, "what it runs"),
    "INSECURE": Key(False, BROKER, TYPE, _switch, "bind beyond loopback without CURVE"),
}


def parse_setting(key: str, value: object) -> Any:
    """Return ``value`` as the setting ``key`` takes it; raise ConfigError saying why not.

    The command line's options parse with these too, so a value is refused alike.
    """
    return KEYS[key].parse(value)


# Every key but MODEL_SIGNALS and CACHE, which only Django has.
WEB_KEYS = tuple(KEYS)
DJANGO_ONLY = ("MODEL_SIGNALS", "CACHE")
FLASK_KEYS = tuple(key for key in KEYS if key not in DJANGO_ONLY)
