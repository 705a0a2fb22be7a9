"""System checks (``manage.py check``, and ``zibrato_broker``): a stable id and a hint each.

Each problem the settings core (:mod:`zibrato.framework.settings`) finds gets the id of
its kind. Errors: ``zibrato.E001`` unknown level, ``E002`` malformed address, ``E003``
backends that cannot be built, ``E004`` a value of the wrong type, ``E005`` an
``EXCLUDE_PATHS`` regex that does not compile, ``E006`` CURVE keys that cannot be used,
``E007`` a ``CELERY`` app that cannot be imported.
Warnings: ``zibrato.W001`` middleware missing, ``W002`` middleware not first, ``W003``
unknown key in ``ZIBRATO``, ``W004`` a setting named like ``ZIBRATO`` (``ZIBARTO``),
``W005`` a renamed key, ``W006`` a client that cannot know where its broker is.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from zibrato import levels
from zibrato.framework import settings as kit
from zibrato.framework.settings import Problem, likely_meant, read_settings
from zibrato_django.conf import MIDDLEWARE_PATH, SETTING, spell

IDS = {
    kit.LEVEL: "zibrato.E001",
    kit.ADDRESS: "zibrato.E002",
    kit.BACKENDS: "zibrato.E003",
    kit.TYPE: "zibrato.E004",
    kit.REGEX: "zibrato.E005",
    kit.CURVE: "zibrato.E006",
    kit.CELERY_APP: "zibrato.E007",
    kit.UNKNOWN_KEY: "zibrato.W003",
    kit.DEPRECATED_KEY: "zibrato.W005",
    kit.UNREACHABLE: "zibrato.W006",
}
HINTS = {
    kit.LEVEL: f"Use one of {', '.join(levels.LEVELS)}.",
    kit.ADDRESS: "A ZeroMQ address looks like tcp://127.0.0.1:5550.",
    kit.BACKENDS: "Each backend is a dict like {'KIND': 'prometheus', 'LISTEN': "
    "'127.0.0.1:9102'}; options are the `zibrato backend KIND` flags without dashes.",
    kit.TYPE: "docs/settings.md lists what each key takes.",
    kit.REGEX: "Each entry is a regular expression searched in request.path_info.",
    kit.CURVE: "CURVE is the directory `zibrato keys DIR` wrote (or a copy with "
    "broker.key and client.key_secret), or None for no CURVE.",
    kit.CELERY_APP: "CELERY names the module and attribute of your Celery app, e.g. "
    "'proj.celery:app' (docs/celery.md).",
    kit.UNKNOWN_KEY: f"Known keys: {', '.join(kit.WEB_KEYS)}.",
    kit.DEPRECATED_KEY: "The old name works for this release only.",
    kit.UNREACHABLE: "Or bind BROKER_FRONTEND on a fixed port.",
}


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Return every problem with ``settings.ZIBRATO`` and the middleware's place."""
    return [*check_config(), *_middleware()]


def check_config() -> list[CheckMessage]:
    """Return every problem with ``settings.ZIBRATO`` (what ``zibrato_broker`` checks)."""
    user = getattr(settings, SETTING, {})
    found = read_settings(
        user, keys=kit.WEB_KEYS, check_backends=True, check_curve_keys=True, check_celery=True
    )
    return [*_misspelled_setting(), *(message(problem) for problem in found.problems)]


def message(problem: Problem) -> CheckMessage:
    """Return the check message of one problem: its line, its kind's id and hint."""
    kind = Error if problem.error else Warning
    hint = HINTS[problem.category]
    if problem.category == kit.UNKNOWN_KEY and problem.suggestion is not None:
        hint = f"Did you mean {problem.suggestion!r}?"
    return kind(problem.line(spell), hint=hint, id=IDS[problem.category])


def _misspelled_setting() -> list[CheckMessage]:
    """A setting named like ``ZIBRATO`` (``ZIBARTO = {...}``) is a typo nobody reads."""
    names = [name for name in dir(settings) if name.isupper() and name != SETTING]
    return [
        Warning(
            f"settings.{name} is not a Zibrato setting; did you mean settings.{SETTING}?",
            hint=f"Zibrato reads settings.{SETTING} only.",
            id="zibrato.W004",
        )
        for name in names
        if likely_meant(name, [SETTING]) is not None
    ]


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
