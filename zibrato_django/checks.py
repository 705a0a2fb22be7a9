"""System checks (``manage.py check``): each mistake gets a stable id and a hint.

Errors: ``zibrato.E001`` unknown level, ``E002`` malformed address, ``E003`` backends that
cannot be built, ``E004`` a value of the wrong type, ``E005`` an ``EXCLUDE_PATHS`` regex that
does not compile, ``E006`` CURVE keys that cannot be used. Warnings: ``zibrato.W001``
middleware missing, ``W002`` middleware not first, ``W003`` unknown key in ``ZIBRATO``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from zibrato import levels
from zibrato.addresses import check_endpoint
from zibrato.backends import build
from zibrato.errors import ConfigError
from zibrato.security.curve import adapter_keywords
from zibrato_django.conf import DEFAULTS, MIDDLEWARE_PATH, SETTING, backend_specs

LEVEL_KEYS = ("LEVEL", "REQUEST_LEVEL", "DB_LEVEL")
ADDRESS_KEYS = {"PUBLISH": False, "BROKER_FRONTEND": True, "BROKER_BACKEND": True}


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Return every problem with ``settings.ZIBRATO`` and the middleware's place."""
    user = getattr(settings, SETTING, {})
    if not isinstance(user, Mapping):
        return [
            Error(
                f"settings.{SETTING} must be a dict, not {type(user).__name__}.",
                hint=f"Write {SETTING} = {{'PUBLISH': 'tcp://127.0.0.1:5550', ...}}.",
                id="zibrato.E004",
            )
        ]
    config = {**DEFAULTS, **user}
    return [
        *_unknown_keys(user),
        *_levels(config),
        *_addresses(config),
        *_types(config),
        *_backends(config),
        *_curve(config),
        *_middleware(),
    ]


def _unknown_keys(user: Mapping[Any, Any]) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    for key in user:
        if key in DEFAULTS:
            continue
        close = difflib.get_close_matches(str(key).upper(), DEFAULTS, n=1)
        hint = f"Did you mean {close[0]!r}?" if close else f"Known keys: {', '.join(DEFAULTS)}."
        found.append(
            Warning(f"{SETTING}[{key!r}] is not a Zibrato setting.", hint=hint, id="zibrato.W003")
        )
    return found


def _levels(config: Mapping[str, Any]) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    for key in LEVEL_KEYS:
        try:
            levels.normalize(config[key])
        except ValueError:
            found.append(
                Error(
                    f"{SETTING}[{key!r}] is {config[key]!r}, which is not a level.",
                    hint=f"Use one of {', '.join(levels.LEVELS)}.",
                    id="zibrato.E001",
                )
            )
    return found


def _addresses(config: Mapping[str, Any]) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    for key, bind in ADDRESS_KEYS.items():
        if config[key] is None and key == "PUBLISH":
            continue  # the default: $ZIBRATO_PUBLISH, else BROKER_FRONTEND
        try:
            check_endpoint(config[key], bind=bind)
        except ConfigError as exc:
            found.append(
                Error(
                    f"{SETTING}[{key!r}]: {exc}.",
                    hint="A ZeroMQ address looks like tcp://127.0.0.1:5550.",
                    id="zibrato.E002",
                )
            )
    return found


def _types(config: Mapping[str, Any]) -> list[CheckMessage]:
    problems = []
    if config["SOURCE"] is not None and not isinstance(config["SOURCE"], str):
        problems.append(("SOURCE", "a string (or None for the host name)"))
    tags = config["TAGS"]
    if not isinstance(tags, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        problems.append(("TAGS", "a dict of strings to strings, e.g. {'app': 'shop'}"))
    if not isinstance(config["MODEL_SIGNALS"], bool):
        problems.append(("MODEL_SIGNALS", "True or False"))
    if not isinstance(config["INSECURE"], bool):
        problems.append(("INSECURE", "True or False"))
    paths = config["EXCLUDE_PATHS"]
    if not isinstance(paths, list | tuple) or not all(isinstance(p, str) for p in paths):
        problems.append(("EXCLUDE_PATHS", "a list of regular expressions, e.g. [r'^/health']"))
    found: list[CheckMessage] = [
        Error(
            f"{SETTING}[{key!r}] is {config[key]!r}.",
            hint=f"It must be {expected}.",
            id="zibrato.E004",
        )
        for key, expected in problems
    ]
    if not any(key == "EXCLUDE_PATHS" for key, _ in problems):
        for pattern in paths:
            try:
                re.compile(pattern)
            except re.error as exc:
                found.append(
                    Error(
                        f"{SETTING}['EXCLUDE_PATHS'] has {pattern!r}, which is not a regular "
                        f"expression: {exc}.",
                        hint="Fix or remove it; each entry is searched in request.path_info.",
                        id="zibrato.E005",
                    )
                )
    return found


def _backends(config: Mapping[str, Any]) -> list[CheckMessage]:
    try:
        build(backend_specs(config))
    except ConfigError as exc:
        return [
            Error(
                f"{SETTING}['BACKENDS']: {exc}.",
                hint="Each backend is a dict like {'KIND': 'prometheus', 'LISTEN': "
                "'127.0.0.1:9102'}; options are the `zibrato backend KIND` flags without dashes.",
                id="zibrato.E003",
            )
        ]
    return []


def _curve(config: Mapping[str, Any]) -> list[CheckMessage]:
    try:
        adapter_keywords(config["CURVE"], check=True)
    except ConfigError as exc:
        return [
            Error(
                f"{SETTING}: {exc}.",
                hint="CURVE is the directory `zibrato keys DIR` wrote (or a copy with "
                "broker.key and client.key_secret), or None for no CURVE.",
                id="zibrato.E006",
            )
        ]
    return []


def _middleware() -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        return [
            Warning(
                f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: requests and views are not measured.",
                hint=f"Add it first: MIDDLEWARE = [{MIDDLEWARE_PATH!r}, *MIDDLEWARE].",
                id="zibrato.W001",
            )
        ]
    if middleware[0] != MIDDLEWARE_PATH:
        return [
            Warning(
                f"{MIDDLEWARE_PATH} is not first in MIDDLEWARE: the request time misses "
                f"what runs before it ({middleware[0]}).",
                hint="Move it to the top of MIDDLEWARE.",
                id="zibrato.W002",
            )
        ]
    return []
