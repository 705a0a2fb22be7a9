"""The extension (issue 7 item 1): init_app, config keys, the client, one publisher per process."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import pytest
from flask import Flask
from flask_support import MakeApp, build_shop, only

from zibrato.errors import ConfigError
from zibrato.framework import schema
from zibrato.testing import CapturedMetrics
from zibrato_flask import Zibrato, clients
from zibrato_flask.settings import DEFAULTS


def publisher_threads() -> int:
    return sum(thread.name == "zibrato-publisher" for thread in threading.enumerate())


def test_constructor_and_init_app_keep_state_in_app_extensions() -> None:
    app_one, app_two = build_shop(), build_shop()
    direct = Zibrato(app_one)
    factory = Zibrato()
    factory.init_app(app_two)
    for extension, app in ((direct, app_one), (factory, app_two)):
        assert "app" not in vars(extension), "the extension never stores an app"
        assert app.extensions["zibrato"].settings.publish == "tcp://127.0.0.1:5550"


def test_every_key_is_set_with_setdefault() -> None:
    app = build_shop({"ZIBRATO_SOURCE": "web-7"})
    Zibrato(app)
    assert app.config["ZIBRATO_SOURCE"] == "web-7", "a value the user set is kept"
    for key, default in DEFAULTS.items():
        if key != "ZIBRATO_SOURCE":
            assert app.config[key] == default
    assert app.config["ZIBRATO_BACKENDS"] is not DEFAULTS["ZIBRATO_BACKENDS"]


@pytest.mark.parametrize(
    ("key", "value", "advice"),
    [
        ("ZIBRATO_PUBLISH", "127.0.0.1:5550", "tcp://HOST:PORT"),
        ("ZIBRATO_PUBLISH", "tcp://127.0.0.1:0", "port number"),
        ("ZIBRATO_LEVEL", "loud", "debug, info, warning, error, crit"),
        ("ZIBRATO_LEVEL", 3, "debug, info"),
        ("ZIBRATO_SOURCE", "", "a name for this process"),
        ("ZIBRATO_SOURCE", 12, "a name for this process"),
        ("ZIBRATO_TAGS", {"app": 1}, "names to string values"),
        ("ZIBRATO_TAGS", ["app"], "names to string values"),
        ("ZIBRATO_EXCLUDE_PATHS", "/health", "a list of regular expressions"),
        ("ZIBRATO_EXCLUDE_PATHS", ["^/(health"], "is not a regular expression"),
        ("ZIBRATO_BACKENDS", {"kind": "console"}, "a list of backends"),
        ("ZIBRATO_BACKENDS", [{"kind": "carrier-pigeon"}], "unknown backend"),
        ("ZIBRATO_BACKENDS", [{"kind": "jsonl", "colour": "red"}], "unknown option 'colour'"),
        ("ZIBRATO_BACKENDS", 7, "a list of backends"),
        ("ZIBRATO_BROKER_FRONTEND", "udp://x:1", "unknown transport"),
        ("ZIBRATO_BROKER_BACKEND_ADDRESS", "tcp://127.0.0.1", "has no port"),
    ],
)
def test_each_bad_setting_is_one_clear_error(key: str, value: Any, advice: str) -> None:
    app = build_shop({key: value})
    with pytest.raises(ConfigError) as raised:
        Zibrato(app)
    message = str(raised.value)
    assert message.startswith(key) and advice in message and "\n" not in message
    assert "zibrato" not in app.extensions, "a failed init_app can be retried"
    app.config[key] = DEFAULTS[key]
    Zibrato(app)


def test_a_second_init_app_on_the_same_app_raises() -> None:
    app = build_shop()
    zibrato = Zibrato(app)
    with pytest.raises(RuntimeError, match="already instrumented; call Zibrato"):
        zibrato.init_app(app)
    with pytest.raises(RuntimeError, match="once per app"):
        Zibrato(app)


def test_publish_follows_the_environment_then_the_broker_frontend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZIBRATO_PUBLISH", "tcp://127.0.0.1:6001")
    app = build_shop({"ZIBRATO_BROKER_FRONTEND": "tcp://127.0.0.1:6100"})
    Zibrato(app)
    assert app.extensions["zibrato"].settings.publish == "tcp://127.0.0.1:6001"
    monkeypatch.delenv("ZIBRATO_PUBLISH")
    for frontend, publish in (
        ("tcp://127.0.0.1:6100", "tcp://127.0.0.1:6100"),
        ("tcp://*:6100", "tcp://127.0.0.1:6100"),  # bound everywhere: reached on loopback
        ("tcp://0.0.0.0:6100", "tcp://127.0.0.1:6100"),
        ("tcp://[::]:6100", "tcp://[::1]:6100"),
        ("tcp://127.0.0.1:0", None),  # a port the system picks: nobody can know it
    ):
        app = build_shop({"ZIBRATO_BROKER_FRONTEND": frontend})
        Zibrato(app)
        assert app.extensions["zibrato"].settings.publish == publish


def test_the_extension_is_a_client_before_and_after_init_app(metrics: CapturedMetrics) -> None:
    zibrato = Zibrato()

    @zibrato.time_me(name="report", level="info")  # at import time, in an app factory's module
    def report() -> int:
        return 42

    @zibrato.count_me(name="exports", value=5)
    def export() -> str:
        return "csv"

    @zibrato.timer("async.job")
    async def job() -> str:
        await asyncio.sleep(0)
        return "async"

    assert not zibrato.started and clients.publisher_count() == 0, "decorating starts nothing"
    app = build_shop({"ZIBRATO_SOURCE": "web-3", "ZIBRATO_TAGS": {"app": "shop"}})
    zibrato.init_app(app)
    assert not zibrato.started and clients.publisher_count() == 0, "init_app starts nothing"
    assert (report(), export(), asyncio.run(job())) == (42, "csv", "async")
    zibrato.incr("orders.placed", 2)
    with zibrato.Time_me(level="debug", name="block"):
        pass
    with zibrato.Count_me(level="info", name="blocks", source="deathstar"):
        pass
    zibrato.gauge(level="crit", name="queue", value=123)
    assert only(metrics, "report").source == "web-3", "the first app's settings apply"
    assert only(metrics, "report").tags == {"app": "shop"}
    assert metrics.total("exports") == 5 and metrics.total("orders.placed") == 2
    assert len(metrics.values("async.job")) == 1 and len(metrics.values("block")) == 1
    assert only(metrics, "blocks").source == "deathstar"
    assert metrics.gauge("queue") == 123
    app.test_client().get("/items/1")
    assert clients.publisher_count() == 1, "the extension and its app share one publisher"


def test_used_before_init_app_then_the_app_settings_apply(metrics: CapturedMetrics) -> None:
    zibrato = Zibrato()
    zibrato.incr("early")  # before init_app: the defaults
    zibrato.init_app(build_shop({"ZIBRATO_SOURCE": "web-9"}))
    zibrato.incr("late")
    assert only(metrics, "early").source == socket.gethostname()  # the default source
    assert only(metrics, "late").source == "web-9"


def test_many_apps_from_a_factory_share_one_publisher(metrics: CapturedMetrics) -> None:
    zibrato = Zibrato()
    before = publisher_threads()

    def create_app() -> Flask:
        app = build_shop({"TESTING": True})
        zibrato.init_app(app)
        return app

    apps = [create_app() for _ in range(5)] + [build_shop()]
    Zibrato(apps[-1])  # a second extension object, same settings
    # (<=: publishers of earlier tests may still be finishing)
    assert publisher_threads() <= before and clients.publisher_count() == 0
    for pk, app in enumerate(apps):
        assert app.test_client().get(f"/items/{pk}").json == {"pk": pk}
    assert clients.publisher_count() == 1
    assert publisher_threads() <= before + 1
    assert len(metrics.filter(schema.REQUEST_DURATION)) == 6


def test_apps_with_different_publish_settings_get_one_publisher_each(
    metrics: CapturedMetrics,
) -> None:
    plain, tagged, quiet = build_shop(), build_shop(), build_shop()
    tagged.config["ZIBRATO_TAGS"] = {"app": "admin"}
    quiet.config["ZIBRATO_LEVEL"] = "error"  # a level is a client threshold: same publisher
    for app in (plain, tagged, quiet):
        Zibrato(app)
        app.test_client().get("/items/1")
    assert clients.publisher_count() == 2
    tagged_by_app = [event.tags.get("app") for event in metrics.filter(schema.REQUEST_DURATION)]
    assert sorted(tagged_by_app, key=str) == [None, "admin"]  # "None" < "admin"


def test_reset_closes_the_publishers_and_the_next_metric_starts_again(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    zibrato = Zibrato()
    app = make_app(zibrato=False)
    zibrato.init_app(app)
    app.test_client().get("/items/1")
    zibrato.incr("before.reset")
    assert clients.publisher_count() == 1
    zibrato.reset(linger=0)
    assert clients.publisher_count() == 0 and not zibrato.started
    app.test_client().get("/items/2")
    zibrato.incr("after.reset")
    assert clients.publisher_count() == 1
    assert len(metrics.filter(schema.REQUEST_DURATION)) == 2
    assert metrics.total("before.reset") == metrics.total("after.reset") == 1
    assert metrics.dropped == {}


def test_deferred_instruments_take_the_clients_options(metrics: CapturedMetrics) -> None:
    zibrato = Zibrato()
    sampled = zibrato.timer("sampled.job", rate=1.0)
    manual = zibrato.timer("manual.job")
    counted = zibrato.counter("sampled.count", 3, rate=1.0)

    @sampled
    def job() -> str:
        return "done"

    zibrato.init_app(build_shop())
    assert job() == "done"
    manual.start()
    assert manual.stop() >= 0
    with counted:
        pass
    assert len(metrics.values("sampled.job")) == len(metrics.values("manual.job")) == 1
    assert metrics.total("sampled.count") == 3


def test_the_no_broker_warning_names_the_flask_command(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as holder:  # bound, never listening: nobody answers there
        holder.bind(("127.0.0.1", 0))
        app = make_app(ZIBRATO_PUBLISH=f"tcp://127.0.0.1:{holder.getsockname()[1]}")
        assert app.test_client().get("/items/1").json == {"pk": 1}
        with caplog.at_level(logging.WARNING, logger="zibrato"):
            clients.close_all(linger=0.1)
    (warning,) = [r.getMessage() for r in caplog.records if "no broker answers" in r.getMessage()]
    assert "start one with `flask zibrato broker`" in warning
