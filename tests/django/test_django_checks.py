"""Each system check fires with its stable id and a hint; good settings raise none."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.checks import CheckMessage
from django.test import override_settings

from zibrato_django.checks import check_settings
from zibrato_django.conf import MIDDLEWARE_PATH


def run_checks(**zibrato: Any) -> list[CheckMessage]:
    with override_settings(ZIBRATO={**settings.ZIBRATO, **zibrato}):
        return check_settings()


def ids(messages: list[CheckMessage]) -> list[str]:
    assert all(message.hint for message in messages), messages
    return [str(message.id) for message in messages]


def test_the_test_site_passes() -> None:
    assert check_settings() == []


@pytest.mark.parametrize("key", ["LEVEL", "REQUEST_LEVEL", "DB_LEVEL"])
def test_unknown_level_is_e001(key: str) -> None:
    messages = run_checks(**{key: "verbose"})
    assert ids(messages) == ["zibrato.E001"]
    assert "'verbose'" in messages[0].msg and "debug" in str(messages[0].hint)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PUBLISH", "127.0.0.1:5550"),
        ("PUBLISH", "tcp://127.0.0.1:0"),
        ("BROKER_FRONTEND", "udp://127.0.0.1:5550"),
        ("BROKER_BACKEND_ADDRESS", "tcp://127.0.0.1"),
    ],
)
def test_malformed_address_is_e002(key: str, value: str) -> None:
    messages = run_checks(**{key: value})
    assert ids(messages) == ["zibrato.E002"]
    assert key in messages[0].msg


@pytest.mark.parametrize(
    ("backends", "words"),
    [
        ([{"KIND": "carrier-pigeon"}], "unknown backend"),
        ([{"KIND": "jsonl", "PATHH": "x"}], "unknown option"),
        ([{"KIND": "statsd", "MAX_PACKET": "lots"}], "max"),
        ({"KIND": "console"}, "list"),
    ],
)
def test_bad_backends_are_e003(backends: object, words: str) -> None:
    messages = run_checks(BACKENDS=backends)
    assert ids(messages) == ["zibrato.E003"]
    assert words in messages[0].msg


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SOURCE", 12),
        ("TAGS", {"app": 1}),
        ("TAGS", "app=shop"),
        ("MODEL_SIGNALS", "yes"),
        ("EXCLUDE_PATHS", r"^/health"),
    ],
)
def test_wrong_types_are_e004(key: str, value: object) -> None:
    assert ids(run_checks(**{key: value})) == ["zibrato.E004"]


def test_zibrato_not_a_dict_is_e004() -> None:
    with override_settings(ZIBRATO=["PUBLISH"]):
        assert ids(check_settings()) == ["zibrato.E004"]


def test_bad_exclude_regex_is_e005() -> None:
    messages = run_checks(EXCLUDE_PATHS=[r"^/ok", r"^/(unclosed"])
    assert ids(messages) == ["zibrato.E005"]
    assert "(unclosed" in messages[0].msg


def test_missing_middleware_is_w001() -> None:
    rest = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
    with override_settings(MIDDLEWARE=rest):
        assert ids(check_settings()) == ["zibrato.W001"]


def test_middleware_not_first_is_w002() -> None:
    rest = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
    with override_settings(MIDDLEWARE=[rest[0], MIDDLEWARE_PATH, *rest[1:]]):
        messages = check_settings()
    assert ids(messages) == ["zibrato.W002"]
    assert rest[0] in messages[0].msg


def test_unknown_key_is_w003_with_the_closest_known_key() -> None:
    messages = run_checks(EXCLUDE_PATH=[r"^/health"], COLOUR="blue")
    assert ids(messages) == ["zibrato.W003", "zibrato.W003"]
    assert messages[0].hint == "Did you mean 'EXCLUDE_PATHS'?"
    assert "Known keys" in str(messages[1].hint)


def test_checks_run_through_manage_py_check() -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with (
        override_settings(ZIBRATO={**settings.ZIBRATO, "LEVEL": "loud"}),
        pytest.raises(SystemCheckError, match=r"zibrato\.E001"),
    ):
        call_command("check")
