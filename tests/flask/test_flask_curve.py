"""``ZIBRATO_CURVE``: the app's publisher, ``flask zibrato broker`` and ``flask zibrato tail``
use the keys; ``init_app`` says when they cannot (R11 for Flask)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from flask_support import build_shop
from test_commands import READY, WAIT, RunCli, flask_zibrato, jsonl_names, request_until

from zibrato.errors import ConfigError
from zibrato.framework import schema
from zibrato.security.curve import CURVE_ENV
from zibrato.security.keygen import write_keys
from zibrato_flask import Zibrato, clients


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(CURVE_ENV, raising=False)
    write_keys(tmp_path / "keys")
    return tmp_path / "keys"


def curve_broker(run_cli: RunCli, keys: Path, rollups: Path) -> tuple[Any, str, str]:
    """Start ``flask zibrato broker`` with ZIBRATO_CURVE; return it and its two addresses."""
    broker = flask_zibrato(
        run_cli,
        "broker",
        ZIBRATO_BROKER_FRONTEND="tcp://127.0.0.1:0",
        ZIBRATO_BROKER_BACKEND_ADDRESS="tcp://127.0.0.1:0",
        ZIBRATO_BACKENDS=[{"kind": "jsonl", "path": str(rollups), "flush": 0.2}],
        ZIBRATO_CURVE=str(keys),
    )
    frontend, backend = broker.wait_line(READY.pattern, WAIT).groups()
    broker.wait_line("flask zibrato broker: CURVE on: ", WAIT)
    return broker, frontend, backend


def instrumented(publish: str, **config: Any) -> Any:
    app = build_shop({"ZIBRATO_PUBLISH": publish, **config})
    Zibrato(app)
    return app


def test_the_setting_wins_over_the_environment_and_picks_the_publisher(
    keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = instrumented("tcp://127.0.0.1:6200")
    assert plain.extensions["zibrato"].settings.curve is None
    monkeypatch.setenv(CURVE_ENV, str(keys))
    from_env = instrumented("tcp://127.0.0.1:6200")
    assert from_env.extensions["zibrato"].settings.curve == str(keys)
    secured = instrumented("tcp://127.0.0.1:6200", ZIBRATO_CURVE=keys, ZIBRATO_INSECURE=True)
    settings = secured.extensions["zibrato"].settings
    assert (settings.curve, settings.insecure) == (str(keys), True)
    # Apps with and without keys never share a publisher (one socket, one mechanism).
    publishers = {app.extensions["zibrato"].client().publisher for app in (plain, secured)}
    assert len(publishers) == 2 and clients.publisher_count() == 2
    assert secured.extensions["zibrato"].client().publisher.curve == str(keys)


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        (42, "ZIBRATO_CURVE: 42: use the path of a keys directory"),
        ("nowhere", "ZIBRATO_CURVE: nowhere is not a directory of CURVE keys"),
    ],
)
def test_a_curve_setting_that_cannot_work_is_one_clear_error(value: object, advice: str) -> None:
    app = build_shop({"ZIBRATO_CURVE": value})
    with pytest.raises(ConfigError) as raised:
        Zibrato(app)
    assert str(raised.value).startswith(advice) and "\n" not in str(raised.value)
    assert "zibrato" not in app.extensions


def test_missing_key_files_and_a_bad_insecure_are_one_clear_error(keys: Path) -> None:
    (keys / "broker.key").unlink()
    with pytest.raises(ConfigError, match=r"^ZIBRATO_CURVE: .*broker\.key is missing"):
        Zibrato(build_shop({"ZIBRATO_CURVE": str(keys)}))
    with pytest.raises(ConfigError, match=r"^ZIBRATO_INSECURE: 'yes': use True or False"):
        Zibrato(build_shop({"ZIBRATO_INSECURE": "yes"}))


def test_broker_tail_and_app_with_the_keys_deliver(
    run_cli: RunCli, tmp_path: Path, keys: Path
) -> None:
    rollups = tmp_path / "metrics.jsonl"
    broker, frontend, backend = curve_broker(run_cli, keys, rollups)
    tail = flask_zibrato(run_cli, "tail", "--connect", backend, "--json", ZIBRATO_CURVE=str(keys))
    request_until(
        instrumented(frontend, ZIBRATO_CURVE=str(keys)),
        lambda: (
            schema.REQUEST_DURATION in jsonl_names(rollups)
            and bool(tail.lines_matching(lambda line: schema.REQUEST_DURATION in line))
        ),
        "the request's rollup and its tail line",
    )
    tail.signal(signal.SIGINT)
    assert tail.finish(WAIT) == 0, tail
    broker.signal(signal.SIGINT)
    assert broker.finish(WAIT) == 0, broker


def test_an_app_without_the_keys_is_refused_and_counts_it(
    run_cli: RunCli, tmp_path: Path, keys: Path
) -> None:
    _, frontend, _ = curve_broker(run_cli, keys, tmp_path / "m.jsonl")
    app = instrumented(frontend)
    client = app.extensions["zibrato"].client()
    request_until(app, lambda: "curve_refused" in client.stats()["dropped"], "a refusal")
    stats = client.stats()
    assert stats["sent_events"] == 0 and "curve_refused" in stats["dropped"], stats


def test_the_broker_refuses_to_bind_beyond_loopback_without_curve(run_cli: RunCli) -> None:
    broker = flask_zibrato(
        run_cli,
        "broker",
        ZIBRATO_BROKER_FRONTEND="tcp://0.0.0.0:0",
        ZIBRATO_BROKER_BACKEND_ADDRESS="tcp://127.0.0.1:0",
    )
    assert broker.finish(WAIT) == 2, broker
    (line,) = broker.stderr
    assert line.startswith("flask zibrato broker: refusing to bind tcp://0.0.0.0:0"), line
