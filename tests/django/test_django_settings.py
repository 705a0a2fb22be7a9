"""Settings: defaults merged, cached, reloaded on setting_changed; the shared client."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django_support import site_env
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from zibrato import levels
from zibrato.addresses import DEFAULT_FRONTEND
from zibrato.framework.settings import OFF_ADDRESS
from zibrato.testing import CapturedMetrics
from zibrato_django import zibrato
from zibrato_django.conf import DEFAULTS, build_runner, client_keywords, get_config


def test_user_settings_are_merged_over_the_defaults() -> None:
    config = get_config()
    assert set(config) == set(DEFAULTS)
    assert config["EXCLUDE_PATHS"] == [r"^/health"]  # the test site's
    assert config["REQUEST_LEVEL"] == "info" and config["MODEL_SIGNALS"] is True


def test_source_defaults_to_the_host_name_and_publish_to_the_broker_frontend() -> None:
    with override_settings(ZIBRATO={}):
        keywords = client_keywords(get_config())
    assert keywords["source"] == socket.gethostname()
    assert keywords["publish"] == DEFAULT_FRONTEND
    assert keywords["level"] == "debug" and keywords["tags"] == {}


@pytest.mark.parametrize(
    ("frontend", "publish"),
    [
        ("tcp://0.0.0.0:6001", "tcp://127.0.0.1:6001"),
        ("tcp://*:6001", "tcp://127.0.0.1:6001"),
        ("tcp://[::]:6001", "tcp://[::1]:6001"),
        ("ipc:///run/zibrato.sock", "ipc:///run/zibrato.sock"),
    ],
)
def test_publish_default_reaches_a_broker_bound_to_every_interface(
    frontend: str, publish: str
) -> None:
    assert client_keywords({**DEFAULTS, "BROKER_FRONTEND": frontend})["publish"] == publish


def test_publish_default_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZIBRATO_PUBLISH", "tcp://127.0.0.1:7001")
    assert client_keywords({**DEFAULTS})["publish"] == "tcp://127.0.0.1:7001"
    assert client_keywords({**DEFAULTS, "PUBLISH": "ipc:///x"})["publish"] == "ipc:///x"


def test_override_settings_restarts_the_client_only_when_its_keywords_change(
    metrics: CapturedMetrics,
) -> None:
    zibrato.incr("djtest.before")
    assert zibrato.started
    publisher = zibrato.publisher
    with override_settings(ZIBRATO={**settings.ZIBRATO, "REQUEST_LEVEL": "warning"}):
        assert zibrato.publisher is publisher  # not a client setting: same client
    with override_settings(ZIBRATO={**settings.ZIBRATO, "SOURCE": "web-7", "TAGS": {"a": "b"}}):
        zibrato.incr("djtest.during")
        assert zibrato.publisher is not publisher
    zibrato.incr("djtest.after")
    (during,) = metrics.filter("djtest.during")
    assert during.source == "web-7" and during.tags == {"a": "b"}
    (after,) = metrics.filter("djtest.after")
    assert after.source == socket.gethostname() and after.tags == {}


def test_the_shared_client_speaks_the_2013_and_the_modern_api(metrics: CapturedMetrics) -> None:
    @zibrato.time_me(level="debug", name="djtest.report", source="reports")
    def report() -> int:
        return 7

    assert report() == 7
    with zibrato.Count_me(level="info", name="djtest.counted"):
        pass
    zibrato.incr("djtest.placed", 2)
    with zibrato.timer("djtest.block", tags={"shop": "eu"}):
        pass
    assert metrics.filter("djtest.report")[0].source == "reports"
    assert metrics.total("djtest.counted") == 1 and metrics.total("djtest.placed") == 2
    assert metrics.filter("djtest.block", tags={"shop": "eu"})


@pytest.mark.parametrize(
    ("key", "value"),
    [("PUBLISH", "tcp://127.0.0.1:²"), ("LEVEL", "loud"), ("SOURCE", 3), ("TAGS", [1])],
)
def test_a_bad_client_setting_switches_the_client_off_with_one_line_logged_once(
    key: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    @zibrato.time_me(name="djtest.decorated")  # at "import time": nothing starts
    def decorated() -> int:
        return 7

    assert not zibrato.started
    with override_settings(ZIBRATO={**settings.ZIBRATO, key: value}):
        for _ in range(3):
            zibrato.incr("djtest.off")
            assert decorated() == 7
        zibrato.flush(timeout=2)
        assert zibrato.publisher.address == OFF_ADDRESS  # never a guessed address
        assert zibrato.stats()["dropped"].get("invalid_address", 0) >= 6
        zibrato.reset(linger=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "zibrato.django"]
    assert len(lines) == 1 and lines[0].startswith(f"ZIBRATO[{key!r}]: "), lines
    assert "the client is off" in lines[0]


settings_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.sampled_from(
        [*levels.LEVELS, "tcp://127.0.0.1:5550", "ipc:///tmp/x", r"^/(", "[{", "²", "\u0663"]
    ),
    st.sampled_from(["", "x" * 5000, 1e308, float("inf"), "tcp://127.0.0.1:²", "tcp://*:0"]),
    st.lists(
        st.fixed_dictionaries(
            {"KIND": st.sampled_from(["console", "jsonl", "statsd", "prometheus", "dashboard"])},
            optional={
                option: st.one_of(st.text(max_size=8), st.integers(), st.floats(), st.none())
                for option in ("FLUSH", "LISTEN", "MAX_PACKET", "WIDTH", "PERCENTILES", "LEVEL")
            },
        ),
        max_size=2,
    ),
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(DEFAULTS)), settings_values, max_size=5))
def test_any_settings_give_a_check_message_and_never_an_exception_in_the_app(
    user: dict[str, Any],
) -> None:
    from django.test import Client

    from zibrato_django.checks import check_settings
    from zibrato_django.conf import request_plan

    @zibrato.time_me(name="djtest.fuzzed")
    def decorated() -> int:
        return 7

    with override_settings(ZIBRATO=user):
        messages = check_settings()  # never raises
        plan = request_plan()
        assert plan.request_level in levels.LEVELS and plan.db_level in levels.LEVELS
        try:
            build_runner(get_config())
        except ValueError as exc:
            assert [m for m in messages if m.is_serious()], f"not in the checks: {exc}"
            assert "\n" not in str(exc)
        # The application: a request, a decorated function, a counter. Nothing raises.
        response = Client().get("/")
        assert (response.status_code, response.content) == (200, b"home")
        assert decorated() == 7
        zibrato.incr("djtest.fuzzed.count")
        zibrato.reset(linger=0)


def test_importing_the_app_and_decorating_with_it_has_no_side_effects() -> None:
    code = (
        "import threading, sys\n"
        "before = threading.active_count()\n"
        "import zibrato_django, zibrato_django.middleware, zibrato_django.db, "
        "zibrato_django.checks, zibrato_django.conf, zibrato_django.model_signals, "
        "zibrato_django.apps\n"
        "@zibrato_django.zibrato.time_me(name='report')\n"  # decorating, as a module does
        "def report(): pass\n"
        "@zibrato_django.zibrato.count_me(name='exports')\n"
        "def export(): pass\n"
        "from django.conf import settings\n"
        "assert not settings.configured, 'settings were read'\n"
        "assert threading.active_count() == before, 'a thread started'\n"
        "assert not zibrato_django.zibrato.started, 'the client started'\n"
        "print('clean')\n"
    )
    env = site_env()
    env.pop("DJANGO_SETTINGS_MODULE")
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "clean", result.stderr
