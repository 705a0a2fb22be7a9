"""The settings every front end shares: one meaning per key, one reader, one rule for bad values.

A front end (Django's ``ZIBRATO`` dict, Flask's ``ZIBRATO_*`` config keys, the coming
Celery integration) only translates its own key names into the canonical ones of
:data:`KEYS` (:mod:`zibrato.framework.setting_keys`: what each takes) and hands what the
user wrote to :func:`read_settings`, which returns one
:class:`Settings` record: every value resolved, and every mistake as a :class:`Problem`
that the front end shows in its own spelling (:meth:`Problem.line`).

One rule for bad values, in every front end:

* at start-up checks (Django's ``check``, Flask's ``init_app``, every command) each bad
  value is one line naming the key and what is allowed;
* at run time, where no check ran (a Django worker), the feature the bad value concerns
  (:data:`CLIENT`, :data:`REQUESTS`, :data:`MODEL_SIGNALS`, :data:`TASKS`; :data:`BROKER`
  keys matter only to the broker commands) is switched off and that same line is logged once: never
  an exception in the application, never a guess that sends data somewhere else.

>>> settings = read_settings({"PUBLISH": "tcp://127.0.0.1:²", "LEVEL": "info"})
>>> settings.problems[0].line(lambda key: f"ZIBRATO[{key!r}]")  # doctest: +ELLIPSIS
"ZIBRATO['PUBLISH']: 'tcp://127.0.0.1:²': '²' is not a port number (1-65535); use ..."
>>> settings.enabled(CLIENT)
False
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from zibrato import backends as backend_kinds
from zibrato.addresses import (
    DEFAULT_BACKEND,
    SHOWN_CHARACTERS,
    check_endpoint,
    connect_address,
    shown,
)
from zibrato.client import PUBLISH_ENV
from zibrato.errors import ConfigError
from zibrato.framework.setting_keys import (  # the keys' table, named here for front ends
    ADDRESS,
    BACKENDS,
    BREAKDOWN,
    BROKER,
    CACHE,
    CELERY_APP,
    CLIENT,
    CURVE,
    DEPRECATED_KEY,
    EVERY_FEATURE,
    FLASK_KEYS,
    HTTP_CLIENT,
    KEYS,
    LEVEL,
    MODEL_SIGNALS,
    REGEX,
    REQUESTS,
    STATEMENTS,
    TASKS,
    TEMPLATES,
    TYPE,
    UNKNOWN_KEY,
    UNREACHABLE,
    WEB_KEYS,
    RegexError,
    parse_setting,
)
from zibrato.security.curve import CURVE_ENV, client_keys

__all__ = [
    "ADDRESS",
    "BACKENDS",
    "BREAKDOWN",
    "BROKER",
    "CACHE",
    "CELERY_APP",
    "CLIENT",
    "CURVE",
    "DEPRECATED_KEY",
    "EVERY_FEATURE",
    "FLASK_KEYS",
    "HTTP_CLIENT",
    "KEYS",
    "LEVEL",
    "MODEL_SIGNALS",
    "OFF_ADDRESS",
    "REGEX",
    "REQUESTS",
    "STATEMENTS",
    "TASKS",
    "TEMPLATES",
    "TYPE",
    "UNKNOWN_KEY",
    "UNREACHABLE",
    "WEB_KEYS",
    "WHOLE",
    "Problem",
    "Settings",
    "likely_meant",
    "one_line",
    "parse_setting",
    "read_settings",
]

# Where a switched-off client "publishes": an address libzmq refuses, so its publisher
# sends nothing and counts every event as dropped (reason invalid_address).
OFF_ADDRESS = "off://zibrato-settings-error"
# The key the whole settings container stands for (Django's ``settings.ZIBRATO`` itself).
WHOLE = ""
# The settings' keys renamed, for a release: old name -> new name.
RENAMED = {"BROKER_BACKEND": "BROKER_BACKEND_ADDRESS"}
# A likely intended name is offered when it is at least this close (difflib's ratio).
CLOSE_ENOUGH = 0.75
# Another key named in a problem's detail, to be spelled the front end's way: {BACKENDS}.
_KEY_MENTION = re.compile(r"\{([A-Z_]+)\}")


@dataclass(frozen=True)
class Problem:
    """One mistake in the settings: which key, what is wrong and what is allowed.

    An error (a value that cannot work) switches its ``features`` off; a warning (a typo,
    a renamed key, a client that cannot find its broker) only says so.
    """

    key: str
    detail: str
    category: str
    features: tuple[str, ...] = ()
    suggestion: str | None = None  # the key the user likely meant
    error: bool = True

    def line(self, spell: Callable[[str], str]) -> str:
        """Return the one line a user sees, with keys spelled the front end's way."""
        detail = _KEY_MENTION.sub(lambda m: spell(m[1]) if m[1] in KEYS else m[0], self.detail)
        text = f"{spell(self.key)}: {one_line(detail)}"  # the same detail in every front end
        if self.suggestion is not None and self.category == DEPRECATED_KEY:
            text += f"; use {spell(self.suggestion)} instead"
        elif self.suggestion is not None:
            text += f"; did you mean {spell(self.suggestion)}?"
        return text


def one_line(text: str) -> str:
    """Return ``text`` as one line of bounded length (what a mistake costs a terminal)."""
    flat = " ".join(text.splitlines())  # \r, \x85, \u2028 too: whatever splits lines
    return flat if len(flat) <= 400 else flat[:397] + "..."


@dataclass(frozen=True)
class Settings:
    """Every setting resolved; a bad one is a :class:`Problem` and its feature is off."""

    publish: str | None  # where the client connects; None: it cannot (see problems)
    level: str
    source: str | None
    tags: tuple[tuple[str, str], ...]
    curve: str | None  # the keys directory of the client and the broker, $ZIBRATO_CURVE included
    request_level: str
    db_level: str
    exclude_paths: tuple[str, ...]
    model_signals: bool
    breakdown: bool
    http_client: bool
    cache: bool
    templates: bool
    repeated_statements: bool
    app_packages: tuple[str, ...]
    broker_frontend: str
    broker_backend_address: str
    backends: tuple[Mapping[str, Any], ...]
    insecure: bool
    celery: Any = None  # None, 'package.module:app' or the app (zibrato.framework.celery)
    problems: tuple[Problem, ...] = ()
    exclude: re.Pattern[str] | None = field(default=None, compare=False)

    @property
    def errors(self) -> tuple[Problem, ...]:
        """The values that cannot work (start-up checks refuse them)."""
        return tuple(problem for problem in self.problems if problem.error)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """Typos, renamed keys, a client that cannot find its broker."""
        return tuple(problem for problem in self.problems if not problem.error)

    def enabled(self, feature: str) -> bool:
        """Whether ``feature`` works: no problem switches it off."""
        return self.off_because(feature) is None

    def off_because(self, feature: str) -> Problem | None:
        """Return the first problem that switches ``feature`` off, or None."""
        return next((p for p in self.problems if feature in p.features), None)

    def client_keywords(self, *, broker_hint: str) -> dict[str, Any]:
        """Return the keywords of ``Zibrato(...)`` (an unconnectable client when off)."""
        if self.publish is None or not self.enabled(CLIENT):
            return {"publish": OFF_ADDRESS, "broker_hint": broker_hint}
        return {
            "publish": self.publish,
            "level": self.level,
            "source": self.source or socket.gethostname(),  # no DNS lookup: the kernel's name
            "tags": dict(self.tags),
            "curve": self.curve,
            "broker_hint": broker_hint,
        }

    def switch(self, feature: str) -> bool:
        """Whether one of the "where the time goes" features is on (a bad value: off)."""
        values = {
            BREAKDOWN: self.breakdown,
            HTTP_CLIENT: self.http_client,
            CACHE: self.cache,
            TEMPLATES: self.templates,
            STATEMENTS: self.repeated_statements,
        }
        return values[feature] and self.enabled(feature)

    @property
    def tail_address(self) -> str:
        """Where a tail connects: the broker's backend address, reached from this host."""
        return connect_address(self.broker_backend_address) or DEFAULT_BACKEND


def read_settings(
    given: object,
    *,
    keys: Collection[str] = WEB_KEYS,
    environ: Mapping[str, str] | None = None,
    check_backends: bool = False,
    check_curve_keys: bool = False,
    check_celery: bool = False,
) -> Settings:
    """Return the settings from what the user wrote (``given``: canonical key -> value).

    ``keys`` are the keys this front end has (others are unknown: a warning with the
    likely intended name). ``check_backends`` builds ``BACKENDS`` (nothing starts),
    ``check_curve_keys`` loads the client's CURVE keys and ``check_celery`` imports the
    ``CELERY`` app, as start-up checks do.
    """
    environ = os.environ if environ is None else environ
    if not isinstance(given, Mapping):
        whole = Problem(WHOLE, f"{shown(given)}: use a dict of settings", TYPE, EVERY_FEATURE)
        return _resolve(_DEFAULTS, [whole], environ)
    problems = unknown_keys(given, keys)
    values: dict[str, Any] = {}
    written: dict[str, str] = {}  # the name the user wrote, where it is a renamed one
    for old, new in RENAMED.items():
        if old in given:
            detail = "renamed, so that 'backend' alone always names a backend kind"
            problems.append(Problem(old, detail, DEPRECATED_KEY, (), new, error=False))
            if new not in given:
                values[new], written[new] = given[old], old
    values.update((key, value) for key, value in given.items() if key in keys)
    parsed = dict(_DEFAULTS)
    for name in keys:
        if name not in values:
            continue
        key = KEYS[name]
        try:
            parsed[name] = key.parse(values[name])
        except ConfigError as exc:
            category = REGEX if isinstance(exc, RegexError) else key.category
            problems.append(Problem(written.get(name, name), str(exc), category, (key.feature,)))
    if check_backends and not any(p.key == "BACKENDS" for p in problems):
        problems.extend(_check_backends(parsed["BACKENDS"]))
    if check_curve_keys:
        problems.extend(_check_curve_keys(parsed["CURVE"], environ))
    if check_celery and not any(p.key == "CELERY" for p in problems):
        problems.extend(_check_celery(parsed["CELERY"]))
    return _resolve(parsed, problems, environ)


def _resolve(
    parsed: Mapping[str, Any], problems: list[Problem], environ: Mapping[str, str]
) -> Settings:
    """Fill in what the user left to the environment: the address, the CURVE keys."""
    publish = parsed["PUBLISH"]
    if any(problem.key == "PUBLISH" for problem in problems):
        pass  # that problem switches the client off: no other address is guessed
    elif publish is None and environ.get(PUBLISH_ENV):
        try:
            publish = check_endpoint(environ[PUBLISH_ENV])
        except ConfigError as exc:
            problems.append(Problem("PUBLISH", f"${PUBLISH_ENV}: {exc}", ADDRESS, (CLIENT,)))
    elif publish is None:
        # The broker's own address tells where it is; if that is wrong, so is the client.
        problems = [
            replace(p, features=(*p.features, CLIENT)) if p.key == "BROKER_FRONTEND" else p
            for p in problems
        ]
        publish = connect_address(parsed["BROKER_FRONTEND"])
        if publish is None:
            detail = _unreachable(parsed["BROKER_FRONTEND"])
            problems.append(Problem("PUBLISH", detail, UNREACHABLE, (CLIENT,), error=False))
    return Settings(
        publish=publish,
        level=parsed["LEVEL"],
        source=parsed["SOURCE"],
        tags=parsed["TAGS"],
        curve=parsed["CURVE"] if parsed["CURVE"] is not None else environ.get(CURVE_ENV) or None,
        request_level=parsed["REQUEST_LEVEL"],
        db_level=parsed["DB_LEVEL"],
        exclude_paths=parsed["EXCLUDE_PATHS"],
        model_signals=parsed["MODEL_SIGNALS"],
        breakdown=parsed["BREAKDOWN"],
        http_client=parsed["HTTP_CLIENT"],
        cache=parsed["CACHE"],
        templates=parsed["TEMPLATES"],
        repeated_statements=parsed["REPEATED_STATEMENTS"],
        app_packages=parsed["APP_PACKAGES"],
        broker_frontend=parsed["BROKER_FRONTEND"],
        broker_backend_address=parsed["BROKER_BACKEND_ADDRESS"],
        backends=parsed["BACKENDS"],
        insecure=parsed["INSECURE"],
        celery=parsed["CELERY"],
        problems=tuple(problems),
        exclude=exclude_pattern(parsed["EXCLUDE_PATHS"]),
    )


def _unreachable(frontend: str) -> str:
    return (
        f"None, and {{BROKER_FRONTEND}} {shown(frontend)} binds a port the system picks, so "
        f"the client cannot know where to connect: set it (or ${PUBLISH_ENV}) to the "
        "address the broker prints"
    )


def exclude_pattern(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """Return one pattern searching for any of ``patterns`` (checked already), or None.

    Each is searched anywhere in the path, as OpenTelemetry's ``*_EXCLUDED_URLS``: a
    plain prefix such as ``/health`` matches ``/health`` and ``/health/ready``.
    """
    patterns = list(patterns)
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _check_backends(specs: tuple[Mapping[str, Any], ...]) -> list[Problem]:
    try:
        backend_kinds.build(specs)  # validation only: nothing starts
    except ConfigError as exc:
        return [Problem("BACKENDS", str(exc), BACKENDS, (BROKER,))]
    return []


def _check_curve_keys(curve: str | None, environ: Mapping[str, str]) -> list[Problem]:
    path = curve if curve is not None else environ.get(CURVE_ENV) or None
    if path is None:
        return []
    try:
        client_keys(path)
    except (ConfigError, OSError) as exc:
        where = "" if curve is not None else f"${CURVE_ENV}: "
        return [Problem("CURVE", f"{where}{exc}", CURVE, (CLIENT,))]
    return []


def _check_celery(spec: object) -> list[Problem]:
    if spec is None:
        return []
    from zibrato.framework.celery import load_app  # imports the app's module, not Celery

    try:
        load_app(spec)
    except ConfigError as exc:
        return [Problem("CELERY", str(exc), CELERY_APP, (TASKS,))]
    return []


def unknown_keys(given: Iterable[object], keys: Collection[str]) -> list[Problem]:
    """Return a warning for each key of ``given`` that is not a setting (renamed aside)."""
    found = []
    for key in given:
        if key in keys or key in RENAMED:
            continue
        name = one_line(str(key))[:SHOWN_CHARACTERS]
        suggestion = likely_meant(name.upper(), keys)
        found.append(
            Problem(name, "not a Zibrato setting", UNKNOWN_KEY, (), suggestion, error=False)
        )
    return found


def likely_meant(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate ``name`` most likely is a typo of, or None."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=CLOSE_ENOUGH)
    return close[0] if close else None


_DEFAULTS: dict[str, Any] = {name: key.parse(key.default) for name, key in KEYS.items()}
