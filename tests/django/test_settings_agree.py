"""One meaning per settings key: Django, Flask and the ``zibrato`` command agree.

Every key of the settings core (docs/settings.md), given the same value in Django's
``ZIBRATO`` dict, in a Flask app's ``ZIBRATO_*`` config and (where the key has one) in
the matching command-line option, resolves to the same value or is refused with the same
one-line error: only the way each front end spells the key differs. A third front end
with names of its own (as Celery's will be) is checked alike: a translation, no more.
Then the values a hostile user tries (a wrong type, a non-ASCII digit, NaN, inf, 1e308,
an empty and a huge string) on every key and every backend option: never a traceback,
never two lines.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import celery_site
import pytest
from django.test import override_settings
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zibrato import backends, cli
from zibrato.errors import ConfigError
from zibrato.framework import celery
from zibrato.framework import settings as kit
from zibrato.security.curve import client_keys
from zibrato.security.keygen import write_keys
from zibrato_django import conf
from zibrato_django.checks import check_config
from zibrato_flask import Zibrato, clients

HUGE = "x" * 100_000
# The command-line option of a key: the command line before the value, and where it lands.
OPTIONS: dict[str, tuple[list[str], str]] = {
    "PUBLISH": (["tail", "--connect"], "connect"),  # where a client connects: same rule
    "LEVEL": (["tail", "--level"], "level"),
    "CURVE": (["tail", "--curve"], "curve"),
    "BROKER_FRONTEND": (["broker", "--frontend"], "frontend"),
    "BROKER_BACKEND_ADDRESS": (["broker", "--backend-address"], "backend_address"),
}


class Value(NamedTuple):
    value: Any


class Refused(NamedTuple):
    detail: str  # the line without the front end's spelling of the key


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ZIBRATO_PUBLISH", raising=False)
    monkeypatch.delenv("ZIBRATO_CURVE", raising=False)
    yield
    clients.close_all(linger=0)
    celery.uninstrument(celery_site.app)  # a Flask app measures its tasks until then


def in_django(key: str, value: Any, extra: Mapping[str, Any] | None = None) -> Value | Refused:
    with override_settings(ZIBRATO={**(extra or {}), key: value}):
        errors = [message for message in check_config() if message.is_serious()]
        if errors:
            (error,) = errors
            return Refused(_without(str(error.msg), f"ZIBRATO[{key!r}]: "))
        return Value(getattr(conf.current(), key.lower()))


def in_flask(key: str, value: Any, extra: Mapping[str, Any] | None = None) -> Value | Refused:
    app = Flask("agree")
    app.config.update({f"ZIBRATO_{k}": v for k, v in {**(extra or {}), key: value}.items()})
    try:
        Zibrato(app)
    except ConfigError as exc:
        return Refused(_without(str(exc), f"ZIBRATO_{key}: "))
    return Value(getattr(app.extensions["zibrato"].settings, key.lower()))


def on_the_command_line(key: str, value: str) -> Value | Refused:
    words, dest = OPTIONS[key]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args, _ = cli.build_parser().parse_known_args([*words, value])
    except SystemExit:
        (line,) = errors.getvalue().splitlines()
        detail = _without(line, f"zibrato {words[0]}: argument {words[1]}: ")
        return Refused(detail.removesuffix(f" (see zibrato {words[0]} --help)"))
    if key == "CURVE":
        # `zibrato tail` loads the client keys when it starts: one line, exit status 2.
        try:
            client_keys(args.curve)
        except ConfigError as exc:
            return Refused(str(exc))
    return Value(getattr(args, dest))


def _without(line: str, prefix: str) -> str:
    assert line.startswith(prefix) and "\n" not in line and len(line) < 600, line
    return line[len(prefix) :]


def in_a_third_front_end(
    key: str, value: Any, extra: Mapping[str, Any] | None = None
) -> Value | Refused:
    """A front end with names of its own (Celery's ``zibrato_publish``, say) is a
    translation of names around the settings core, and nothing more."""
    names = {f"zibrato_{k.lower()}": v for k, v in {**(extra or {}), key: value}.items()}
    given = {name.removeprefix("zibrato_").upper(): v for name, v in names.items()}
    found = kit.read_settings(given, keys=kit.FLASK_KEYS, check_backends=True, check_celery=True)
    if found.errors:
        (error,) = found.errors
        return Refused(
            _without(error.line(lambda k: f"zibrato_{k.lower()}"), f"zibrato_{key.lower()}: ")
        )
    return Value(getattr(found, key.lower()))


def outcomes(key: str, value: Any, extra: Mapping[str, Any] | None = None) -> list[Any]:
    found = [in_django(key, value, extra)]
    if key in kit.FLASK_KEYS and key != "CURVE":  # (it checks no CURVE keys: none to load)
        found.append(in_a_third_front_end(key, value, extra))
    if key in kit.FLASK_KEYS:
        found.append(in_flask(key, value, extra))
    if key in OPTIONS and isinstance(value, str) and not extra:
        found.append(on_the_command_line(key, value))
    return found


@pytest.fixture
def keys_dir(tmp_path: Path) -> str:
    write_keys(tmp_path / "keys")
    return str(tmp_path / "keys")


TABLE: list[tuple[str, Any, Any]] = [
    ("PUBLISH", "tcp://127.0.0.1:6000", Value("tcp://127.0.0.1:6000")),
    ("PUBLISH", "tcp://127.0.0.1:²", Refused("'tcp://127.0.0.1:²': '²' is not a port number")),
    ("PUBLISH", 6000, Refused("6000 is not a ZeroMQ address")),
    ("PUBLISH", "tcp://127.0.0.1:0", Refused("'0' is not a port number (1-65535)")),
    ("LEVEL", "WARN", Value("warning")),
    ("LEVEL", "verbose", Refused("unknown level 'verbose': use one of debug, info")),
    ("LEVEL", math.nan, Refused("unknown level nan")),
    ("SOURCE", "web-1", Value("web-1")),
    ("SOURCE", "", Refused("'': use a name for this process")),
    ("SOURCE", HUGE, Refused("'xxxxxxxx")),
    ("TAGS", {"app": "shop"}, Value((("app", "shop"),))),
    ("TAGS", {"app": 1}, Refused("{'app': 1}: use a dict of at most 32 names")),
    ("TAGS", "app=shop", Refused("'app=shop': use a dict")),
    ("CURVE", None, Value(None)),
    ("CURVE", "", Refused("'': use the path of a keys directory")),
    ("CURVE", 42, Refused("42: use the path of a keys directory")),
    ("REQUEST_LEVEL", "crit", Value("crit")),
    ("DB_LEVEL", 3, Refused("unknown level 3")),
    ("EXCLUDE_PATHS", ["/health"], Value(("/health",))),
    ("EXCLUDE_PATHS", "/health", Refused("'/health': use a list of regular expressions")),
    ("EXCLUDE_PATHS", ["^/(x"], Refused("'^/(x' is not a regular expression")),
    ("MODEL_SIGNALS", False, Value(False)),
    ("MODEL_SIGNALS", "yes", Refused("'yes': use True or False")),
    ("BREAKDOWN", False, Value(False)),
    ("BREAKDOWN", 1, Refused("1: use True or False")),
    ("HTTP_CLIENT", False, Value(False)),
    ("HTTP_CLIENT", "off", Refused("'off': use True or False")),
    ("CACHE", False, Value(False)),
    ("CACHE", None, Refused("None: use True or False")),
    ("TEMPLATES", True, Value(True)),
    ("TEMPLATES", [], Refused("[]: use True or False")),
    ("REPEATED_STATEMENTS", False, Value(False)),
    ("REPEATED_STATEMENTS", "no", Refused("'no': use True or False")),
    ("APP_PACKAGES", ["myproject", "vendor.shop"], Value(("myproject", "vendor.shop"))),
    ("APP_PACKAGES", "myproject", Refused("'myproject': use a list of at most 100 package")),
    ("APP_PACKAGES", ["my-project"], Refused("['my-project']: use a list of at most 100")),
    ("APP_PACKAGES", ["²"], Refused("['²']: use a list")),
    ("BROKER_FRONTEND", "tcp://*:0", Value("tcp://*:0")),
    ("BROKER_FRONTEND", "tcp://[::]:5550", Value("tcp://[::]:5550")),
    ("BROKER_FRONTEND", "tcp://0.0.0.0:1e308", Refused("'1e308' is not a port number")),
    ("BROKER_BACKEND_ADDRESS", "udp://x:1", Refused("'udp://x:1': unknown transport 'udp'")),
    ("BACKENDS", [{"kind": "console"}], Value(({"kind": "console"},))),
    ("BACKENDS", {"kind": "console"}, Refused("{'kind': 'console'}: use a list of backends")),
    (
        "BACKENDS",
        [{"kind": "statsd", "max-packet": "²"}],
        Refused("statsd backend: option 'max-packet' must be a whole number, not '²'"),
    ),
    (
        "BACKENDS",
        [{"kind": "prometheus", "listen": 9102}],
        Refused("prometheus backend: option 'listen' must be a string"),
    ),
    (
        "BACKENDS",
        [{"kind": "jsonl", "flush": 1e308}],
        Refused("jsonl backend: the flush interval must be more than 0 seconds and at most"),
    ),
    ("INSECURE", True, Value(True)),
    ("INSECURE", "yes", Refused("'yes': use True or False")),
    ("CELERY", None, Value(None)),
    ("CELERY", "celery_site:app", Value("celery_site:app")),
    ("CELERY", "celery_site.app", Value("celery_site.app")),
    ("CELERY", celery_site.app, Value(celery_site.app)),
    ("CELERY", "no_such_module:app", Refused("'no_such_module:app': cannot import it")),
    ("CELERY", "celery_site:not_an_app", Refused("is a object, not a Celery app")),
    ("CELERY", "celery_site", Refused("'celery_site': use where your Celery app is")),
    ("CELERY", True, Refused("True: use where your Celery app is")),
    ("CELERY", "proj.celery:²", Refused("use where your Celery app is")),
]


@pytest.mark.parametrize(("key", "value", "expected"), TABLE)
def test_every_front_end_resolves_or_refuses_a_value_alike(
    key: str, value: Any, expected: Value | Refused
) -> None:
    found = outcomes(key, value)
    assert len(set(map(repr, found))) == 1, found  # the same in every front end
    if isinstance(expected, Refused):
        assert isinstance(found[0], Refused) and expected.detail in found[0].detail
    else:
        assert found[0] == expected


def test_every_key_is_in_the_table() -> None:
    assert {key for key, _, _ in TABLE} == set(kit.KEYS)


def test_a_curve_directory_resolves_alike(keys_dir: str) -> None:
    assert outcomes("CURVE", keys_dir) == [Value(keys_dir)] * 3  # Django, Flask, the option


@pytest.mark.parametrize(
    ("frontend", "publish"),
    [
        ("tcp://0.0.0.0:6001", "tcp://127.0.0.1:6001"),
        ("tcp://*:6001", "tcp://127.0.0.1:6001"),
        ("tcp://[::]:6001", "tcp://[::1]:6001"),
        ("tcp://:::6001", "tcp://[::1]:6001"),
        ("ipc:///run/zibrato.sock", "ipc:///run/zibrato.sock"),
        ("tcp://127.0.0.1:0", None),  # a port the system picks: the client is off
    ],
)
def test_the_client_reaches_the_broker_it_binds_alike(frontend: str, publish: str | None) -> None:
    found = outcomes("PUBLISH", None, {"BROKER_FRONTEND": frontend})
    assert found == [Value(publish)] * 3


# -- what a hostile user tries, on every key and every backend option -----------------------
HOSTILE = [3, "²", "٣", math.nan, math.inf, 1e308, "", HUGE, None, [], {}, True, b"x"]


@pytest.mark.parametrize("key", sorted(kit.KEYS))
def test_hostile_values_are_refused_alike_in_one_short_line(key: str) -> None:
    for value in HOSTILE:
        found = outcomes(key, value)
        assert len(set(map(repr, found))) == 1, (key, value, found)


OPTION_NAMES = sorted(
    {(kind, option.name) for kind in backends.BUILTIN for option in backends.load(kind).options}
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from([*OPTION_NAMES, *((k, o) for k in ("console",) for o in ("flush",))]),
    value=st.one_of(
        st.sampled_from([v for v in HOSTILE if v is not HUGE] + ["x" * 5000]),
        st.text(max_size=12),
        st.floats(),
        st.integers(),
    ),
)
def test_any_backend_option_value_is_refused_alike_or_built(
    target: tuple[str, str], value: Any
) -> None:
    kind, option = target
    specs = [{"kind": kind, option: value}]
    if kind == "librato":
        specs[0] |= (
            {"email": "ops@example.com", "token": "t"} if option not in ("email", "token") else {}
        )
    found = outcomes("BACKENDS", specs, {"BROKER_BACKEND_ADDRESS": "tcp://127.0.0.1:0"})
    assert len(set(map(repr, found))) == 1, found
    flags = {o.name for o in backends.load(kind).options if o.flag}  # no value on a command line
    if isinstance(value, str) and value.isprintable() and option not in flags:
        command_line = backend_on_the_command_line(kind, option, value, specs[0])
        if isinstance(found[0], Value):
            assert isinstance(command_line, Value), (found, command_line)
        else:
            assert isinstance(command_line, Refused), (found, command_line)
            assert command_line.detail in found[0].detail or found[0].detail in command_line.detail


def backend_on_the_command_line(
    kind: str, option: str, value: str, spec: Mapping[str, Any]
) -> Value | Refused:
    """``zibrato run --backend KIND --KIND-OPTION VALUE``, parsed and built, nothing started."""
    flag = "--flush" if option == "flush" else f"--{kind}-{option}"
    others = [f"--{kind}-{k}={v}" for k, v in spec.items() if k not in ("kind", option)]
    argv = ["--backend", kind, *others, "--backend-address", "tcp://127.0.0.1:0", f"{flag}={value}"]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser, classes = cli.run_parser(argv)
            parsed = parser.parse_args(argv)
            specs = [cli.backend_spec(kind, classes[kind], parsed, f"{kind}-")]
            cli.build_backends(parser, specs, parsed, parsed.backend_address)
    except SystemExit:
        (line,) = errors.getvalue().splitlines()
        detail = line.removeprefix("zibrato run: ").removesuffix(" (see zibrato run --help)")
        return Refused(detail.removeprefix(f"argument {flag}: "))
    return Value(None)
