"""The ``ZIBRATO_*`` configuration keys, read through the framework kit's one settings core.

Flask's keys are the kit's own (:data:`zibrato.framework.settings.KEYS`, documented in
``docs/settings.md``) with the ``ZIBRATO_`` prefix: this module only translates the
names. ``init_app`` is the start-up check: :func:`read_app_settings` raises
:class:`~zibrato.errors.ConfigError` with one line naming the key and what is allowed,
and the likely intended name of a misspelled key (``ZIBRATO_BACKEND``) is logged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from zibrato.errors import ConfigError
from zibrato.framework import settings as kit
from zibrato.framework.settings import Settings, likely_meant, read_settings

log = logging.getLogger("zibrato.flask")

PREFIX = "ZIBRATO_"
# What the "no broker answers" warning tells a Flask user to run.
BROKER_HINT = "flask zibrato broker"
DEFAULTS: Mapping[str, Any] = {PREFIX + key: kit.KEYS[key].default for key in kit.FLASK_KEYS}
# The settings of an extension used before any init_app (and always valid).
DEFAULT_SETTINGS = read_settings({}, keys=kit.FLASK_KEYS)


def spell(key: str) -> str:
    """Return how a key is written in a Flask config: ``ZIBRATO_PUBLISH``."""
    return PREFIX + key


def read_app_settings(config: MutableMapping[str, Any]) -> Settings:
    """Return the checked settings of a Flask ``config``; raise ConfigError if one is wrong.

    Every key is then set on ``config`` with ``setdefault``, so that it shows what is in
    force. Misspelled keys are logged, one line each, with the likely intended name.
    """
    given = {key[len(PREFIX) :]: value for key, value in config.items() if key.startswith(PREFIX)}
    settings = read_settings(
        given, keys=kit.FLASK_KEYS, check_backends=True, check_curve_keys=True, check_celery=True
    )
    if settings.errors:
        raise ConfigError(settings.errors[0].line(spell))
    for line in (
        *(p.line(spell) for p in settings.warnings if not p.features),  # the client's: later
        *_misspelled_prefix(config),
    ):
        log.warning("%s", line)
    for key, value in DEFAULTS.items():
        config.setdefault(key, copy.deepcopy(value))
    config[spell("BROKER_BACKEND_ADDRESS")] = settings.broker_backend_address
    return settings


def _misspelled_prefix(config: Mapping[str, Any]) -> list[str]:
    """A key like ``ZIBARTO_PUBLISH`` is a typo of a Zibrato key that nobody reads."""
    found = []
    for key in config:
        if isinstance(key, str) and not key.startswith(PREFIX) and key[:3].upper() == "ZIB":
            meant = likely_meant(key.upper(), DEFAULTS)
            if meant is not None:
                found.append(f"{key}: not a Zibrato setting; did you mean {meant}?")
    return found
