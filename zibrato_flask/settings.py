"""The ``ZIBRATO_*`` configuration keys: their defaults, and one clear error per mistake.

``init_app`` sets every key with ``app.config.setdefault`` (so ``app.config`` shows what
is in force) and reads them once into a frozen :class:`FlaskSettings`; a value that
cannot work raises :class:`~zibrato.errors.ConfigError` naming the key, what is wrong and
what to write instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zibrato import backends, levels
from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND, check_endpoint
from zibrato.client import PUBLISH_ENV
from zibrato.errors import ConfigError
from zibrato.framework import schema
from zibrato.security.curve import adapter_keywords

DEFAULTS: Mapping[str, Any] = {
    "ZIBRATO_PUBLISH": None,  # $ZIBRATO_PUBLISH, else the broker frontend below
    "ZIBRATO_LEVEL": levels.DEFAULT_THRESHOLD,
    "ZIBRATO_REQUEST_LEVEL": schema.REQUEST_LEVEL,  # the request and view timers
    "ZIBRATO_DB_LEVEL": schema.DB_REQUEST_LEVEL,  # the per-request database metrics
    "ZIBRATO_SOURCE": None,
    "ZIBRATO_TAGS": None,
    "ZIBRATO_EXCLUDE_PATHS": (),
    "ZIBRATO_BACKENDS": ({"kind": "console"},),
    "ZIBRATO_BROKER_FRONTEND": DEFAULT_FRONTEND,
    "ZIBRATO_BROKER_BACKEND": DEFAULT_BACKEND,
    "ZIBRATO_CURVE": None,  # a keys directory (`zibrato keys DIR`); None: $ZIBRATO_CURVE
    "ZIBRATO_INSECURE": False,  # let `flask zibrato broker` bind beyond loopback without CURVE
}


@dataclass(frozen=True)
class FlaskSettings:
    """One app's Zibrato settings, checked."""

    publish: str
    level: str
    request_level: str
    db_level: str
    source: str | None
    tags: tuple[tuple[str, str], ...]
    exclude_paths: tuple[str, ...]
    backends: tuple[Mapping[str, Any], ...]
    broker_frontend: str
    broker_backend: str
    curve: str | None  # the CURVE keys directory of the client and the broker; None: none
    insecure: bool

    @property
    def publisher_key(self) -> tuple[str, str | None, tuple[tuple[str, str], ...], str | None]:
        """What apps must share to share one publisher: address, source, tags and keys."""
        return (self.publish, self.source, self.tags, self.curve)

    @property
    def tail_address(self) -> str:
        """Where ``flask zibrato tail`` connects: the broker backend, if one can connect."""
        return connectable(self.broker_backend) or DEFAULT_BACKEND


def read_settings(config: Mapping[str, Any]) -> FlaskSettings:
    """Return the checked settings from a Flask ``config``; raise ConfigError if one is wrong."""
    frontend = _endpoint(config, "ZIBRATO_BROKER_FRONTEND")
    backend_address = _endpoint(config, "ZIBRATO_BROKER_BACKEND")
    publish = config["ZIBRATO_PUBLISH"]
    if publish is None:
        publish = os.environ.get(PUBLISH_ENV) or connectable(frontend) or DEFAULT_FRONTEND
    else:
        publish = _checked("ZIBRATO_PUBLISH", publish, check_endpoint)
    security = adapter_keywords(
        config["ZIBRATO_CURVE"], insecure=config["ZIBRATO_INSECURE"], prefix="ZIBRATO_", check=True
    )
    return FlaskSettings(
        publish=publish,
        level=_checked("ZIBRATO_LEVEL", config["ZIBRATO_LEVEL"], levels.normalize),
        request_level=_checked(
            "ZIBRATO_REQUEST_LEVEL", config["ZIBRATO_REQUEST_LEVEL"], levels.normalize
        ),
        db_level=_checked("ZIBRATO_DB_LEVEL", config["ZIBRATO_DB_LEVEL"], levels.normalize),
        source=_source(config["ZIBRATO_SOURCE"]),
        tags=_tags(config["ZIBRATO_TAGS"]),
        exclude_paths=_exclude_paths(config["ZIBRATO_EXCLUDE_PATHS"]),
        backends=_backends(config["ZIBRATO_BACKENDS"], backend_address),
        broker_frontend=frontend,
        broker_backend=backend_address,
        curve=security.runner["curve"],
        insecure=security.runner["insecure"],
    )


def connectable(address: str) -> str | None:
    """Return a bind address if a client can connect to it as written (no ``*``, port 0)."""
    transport, _, rest = address.partition("://")
    if transport != "tcp":
        return address
    host, _, port = rest.rpartition(":")
    if host in ("*", "0.0.0.0", "[::]") or port in ("0", "*"):
        return None
    return address


def _checked(key: str, value: Any, check: Any) -> Any:
    try:
        return check(value)
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{key} = {value!r}: {exc}") from None


def _endpoint(config: Mapping[str, Any], key: str) -> str:
    return str(_checked(key, config[key], lambda value: check_endpoint(value, bind=True)))


def _source(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise ConfigError(
        f"ZIBRATO_SOURCE = {value!r}: use a non-empty string naming this process "
        "(e.g. 'web-1'), or None"
    )


def _tags(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        return tuple(sorted(value.items()))
    raise ConfigError(
        f"ZIBRATO_TAGS = {value!r}: use a dict of string names to string values, "
        "e.g. {'app': 'shop'}, or None"
    )


def _exclude_paths(value: Any) -> tuple[str, ...]:
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes)
        and all(isinstance(path, str) and path.startswith("/") for path in value)
    ):
        return tuple(value)
    raise ConfigError(
        f"ZIBRATO_EXCLUDE_PATHS = {value!r}: use a list of path prefixes that start with '/', "
        "e.g. ['/health', '/static/']"
    )


def _backends(value: Any, connect: str) -> tuple[Mapping[str, Any], ...]:
    try:
        backends.build(value, connect=connect)  # validation only: nothing starts
    except ConfigError as exc:
        raise ConfigError(f"ZIBRATO_BACKENDS: {exc}") from None
    except TypeError:
        raise ConfigError(
            f"ZIBRATO_BACKENDS = {value!r}: use a list of mappings, e.g. [{{'kind': 'console'}}]"
        ) from None
    return tuple(value)
