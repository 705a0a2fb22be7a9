"""Backends: where aggregated metrics go. Each kind is one module.

``load(kind)`` returns the class for a built-in kind (``console``, ``jsonl``, ``statsd``,
``graphite``, ``prometheus``, ``librato``, ``otlp``, ``remote-write``, ``dashboard``) or for
a dotted path ``package.module:Class``.
``build(specs)`` turns plain data — what a settings dict or the command line holds — into
backends ready to start::

    build([{"kind": "prometheus", "listen": "127.0.0.1:9102"}, {"kind": "console"}])

Every front end (the ``zibrato`` command, ``manage.py zibrato_broker``, ``flask zibrato
broker``) goes through :func:`build`, so an option means the same thing everywhere.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from zibrato import levels
from zibrato.addresses import DEFAULT_BACKEND, check_endpoint, shown
from zibrato.aggregation import DEFAULT_PERCENTILES
from zibrato.backends.base import DEFAULT_FLUSH_INTERVAL, Backend, Option
from zibrato.errors import ConfigError

BUILTIN: dict[str, str] = {
    "console": "zibrato.backends.console:ConsoleBackend",
    "jsonl": "zibrato.backends.jsonl:JsonLinesBackend",
    "statsd": "zibrato.backends.statsd:StatsdBackend",
    "graphite": "zibrato.backends.graphite:GraphiteBackend",
    "prometheus": "zibrato.backends.prometheus:PrometheusBackend",
    "librato": "zibrato.backends.librato:LibratoBackend",
    "otlp": "zibrato.backends.otlp:OtlpBackend",
    "remote-write": "zibrato.backends.remote_write:RemoteWriteBackend",
    "dashboard": "zibrato.backends.dashboard:DashboardBackend",
}

# Options every kind takes, beside its own (``level``, ``flush``, ``percentiles``).
COMMON_OPTIONS = ("level", "flush", "percentiles")
# Bounds that keep a number from overflowing a clock, a buffer size or a timeout.
MAX_FLUSH_SECONDS = 86_400.0
MAX_OPTION_NUMBER = 1e9
MAX_PERCENTILES = 20


class UnknownBackend(ConfigError, LookupError):
    """The named backend kind or class could not be found."""


class BackendConfigError(ConfigError):
    """A backend's settings cannot work: unknown option, bad value, missing credentials."""


def load(kind: str) -> type[Backend]:
    """Return the backend class for a built-in ``kind`` or a ``module:Class`` path.

    A dotted path is imported with the current directory on the import path, as gunicorn
    and uvicorn do, so ``--backend mypkg.alerts:Alerts`` works from the folder holding
    ``mypkg/`` whichever way ``zibrato`` was started.
    """
    if not isinstance(kind, str):
        raise UnknownBackend(f"a backend kind must be a string, not {kind!r}")
    if "://" in kind:
        raise UnknownBackend(
            f"{shown(kind)} is an address, not a backend kind: use one of {', '.join(BUILTIN)} "
            "or package.module:Class (the broker's address for backends is --backend-address)"
        )
    target = BUILTIN.get(kind, kind)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise UnknownBackend(
            f"unknown backend {kind!r}: use one of {', '.join(BUILTIN)} or package.module:Class"
        )
    if kind not in BUILTIN and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownBackend(f"cannot load backend {kind!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UnknownBackend(f"{kind!r} is not a zibrato.backends.Backend subclass")
    return cls


def build(
    specs: Iterable[Mapping[str, Any]],
    *,
    connect: str = DEFAULT_BACKEND,
    level: str = levels.DEFAULT_THRESHOLD,
    flush: float = DEFAULT_FLUSH_INTERVAL,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> list[Backend]:
    """Return one backend per mapping in ``specs``, not yet started.

    Each mapping names its ``kind`` and any options of that kind, spelled as the command
    line flags without their dashes (``listen``, ``max-packet`` or ``max_packet``); keys are
    case-insensitive, so Django's ``{"KIND": "jsonl", "PATH": "m.jsonl"}`` works too.
    ``level``, ``flush`` and ``percentiles`` may be given per backend; the keywords are the
    defaults. Raises :class:`BackendConfigError` (one line: which backend, what is wrong,
    what is accepted) for an unknown kind, an unknown option or a value that cannot work.
    """
    if isinstance(specs, Mapping | str | bytes):
        raise BackendConfigError("backends must be a list of mappings, e.g. [{'kind': 'console'}]")
    defaults = {"connect": connect, "level": level, "flush": flush, "percentiles": percentiles}
    return [_build_one(spec, position, defaults) for position, spec in enumerate(specs, 1)]


def _build_one(spec: object, position: int, defaults: Mapping[str, Any]) -> Backend:
    if not isinstance(spec, Mapping):
        raise BackendConfigError(
            f"backend #{position} must be a mapping like {{'kind': 'console'}}, not {spec!r}"
        )
    options = {_option_key(key, position): value for key, value in spec.items()}
    kind = options.pop("kind", None)
    if kind is None:
        raise BackendConfigError(
            f"backend #{position} names no kind: add 'kind': one of {', '.join(BUILTIN)}"
        )
    cls = load(kind)
    where = f"{kind} backend"
    known = {option.dest: option for option in cls.options}
    unknown = sorted(set(options) - set(known) - set(COMMON_OPTIONS))
    if unknown:
        accepted = ", ".join([*(o.name for o in cls.options), *COMMON_OPTIONS])
        raise BackendConfigError(
            f"{where}: unknown option {', '.join(map(repr, unknown))}; it accepts {accepted}"
        )
    values = {
        dest: _convert(known[dest], value, where)
        for dest, value in options.items()
        if dest in known
    }
    common = {key: options.get(key, default) for key, default in defaults.items()}
    try:
        common["level"] = levels.normalize(common["level"])
        # A runner may connect backends to a broker it binds on port 0: checked loosely here.
        common["connect"] = check_endpoint(common["connect"], bind=True)
        common["flush_interval"] = positive_seconds(common.pop("flush"))
        common["percentiles"] = percentile_list(common["percentiles"])
        return cls.from_options(common, values)
    except (ValueError, TypeError) as exc:
        raise BackendConfigError(f"{where}: {_bounded(exc)}") from None
    except Exception as exc:  # a constructor's own failure: still one line, no traceback
        raise BackendConfigError(
            f"{where} cannot be built: {type(exc).__name__}: {_bounded(exc)}"
        ) from None


def _bounded(exc: BaseException) -> str:
    """A constructor's message, kept to one short line whatever value it quotes."""
    text = " ".join(str(exc).splitlines())
    return text if len(text) <= 300 else text[:297] + "..."


def _option_key(key: object, position: int) -> str:
    if not isinstance(key, str):
        raise BackendConfigError(f"backend #{position}: option names are strings, not {key!r}")
    return key.lower().replace("-", "_")


def _convert(option: Option, value: Any, where: str) -> Any:
    """Return ``value`` as ``option`` takes it: strings are parsed as the command line does."""
    try:
        return option_value(option, value)
    except ValueError as exc:
        raise BackendConfigError(f"{where}: option {option.name!r} {exc}") from None


def option_value(option: Option, value: Any) -> Any:
    """Return ``value`` as ``option`` takes it; raise ValueError saying what it accepts.

    The command line's options and the settings' backend dicts both go through here.
    """
    try:
        if option.flag:
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, not {shown(value)}")
            return value
        value = _typed(option.type, value)
        if option.choices is not None and value not in option.choices:
            choices = ", ".join(map(str, option.choices))
            raise ValueError(f"must be one of {choices}, not {shown(value)}")
        return value
    except (TypeError, ArithmeticError, RecursionError) as exc:
        raise ValueError(f"cannot take {shown(value)}: {exc}") from None
    except ValueError as exc:
        text = str(exc)
        raise ValueError(text if len(text) < 300 else f"cannot take {shown(value)}") from None


def _typed(kind: Any, value: Any) -> Any:
    """Return ``value`` as an option of type ``kind`` takes it (strings parsed as the
    command line parses them); raise ValueError naming what is accepted."""
    if kind is str:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            value = ",".join(value)  # the command line's comma-separated form
        if not isinstance(value, str) or not value.isprintable():
            raise ValueError(f"must be a string of printable characters, not {shown(value)}")
        return value
    if kind is int:
        number = _parsed(int, value)  # ASCII digits only: int() would also read '٣' as 3
        if type(number) is not int or abs(number) > MAX_OPTION_NUMBER:
            raise ValueError(f"must be a whole number, not {shown(value)}")
        return number
    if kind is float:
        number = _parsed(float, value)
        if type(number) not in (int, float) or not abs(number) <= MAX_OPTION_NUMBER:
            raise ValueError(f"must be a finite number, not {shown(value)}")
        return float(number)
    return kind(value)  # the option's own parser (bucket lists): its ValueError says why


def _parsed(kind: type[float], value: Any) -> Any:
    """Return a string as ``kind`` parses it (None when it cannot); other values as they are."""
    if not isinstance(value, str):
        return value
    try:
        return kind(value) if value.isascii() else None
    except ValueError:
        return None


def positive_seconds(value: object) -> float:
    """Return ``value`` as a positive number of seconds, at most a day; raise ValueError
    if it is not (a longer one would overflow the clocks that wait for it)."""
    if isinstance(value, bool) or (isinstance(value, str) and not value.isascii()):
        value = None  # True is not 1 second, and '²' is not a number
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"the flush interval must be a number of seconds, not {shown(value)}"
        ) from None
    if not 0 < seconds <= MAX_FLUSH_SECONDS:
        raise ValueError(
            f"the flush interval must be more than 0 seconds and at most {MAX_FLUSH_SECONDS:g} "
            f"(a day), not {shown(value)}"
        )
    return seconds


def percentile_list(value: object) -> tuple[float, ...]:
    """Return percentiles from ``"90,95,99"`` or a sequence of numbers, each in (0, 100]."""
    try:
        parts: Iterable[Any] = value.split(",") if isinstance(value, str) else value  # type: ignore[assignment]
        pcts = tuple(_number(p) for p in parts if not isinstance(p, str) or p.strip())
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"percentiles must be numbers like 90,95,99, not {shown(value)}") from None
    if not pcts or len(pcts) > MAX_PERCENTILES or not all(0 < p <= 100 for p in pcts):
        raise ValueError(
            f"percentiles must be in (0, 100], 1-{MAX_PERCENTILES} of them, not {shown(value)}"
        )
    return pcts


def _number(part: object) -> float:
    if isinstance(part, bool) or (isinstance(part, str) and not part.isascii()):
        raise ValueError(part)
    return float(part)  # type: ignore[arg-type]


__all__ = [
    "BUILTIN",
    "Backend",
    "BackendConfigError",
    "Option",
    "UnknownBackend",
    "build",
    "load",
]
