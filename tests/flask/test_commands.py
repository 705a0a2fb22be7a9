"""``flask zibrato broker`` and ``flask zibrato tail`` as subprocesses (issue 7 item 4), and
a forked worker's metrics reaching the same broker."""

from __future__ import annotations

import json
import multiprocessing
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_support import build_shop

from zibrato.framework import schema
from zibrato_flask import Zibrato

SITE = Path(__file__).with_name("command_site.py")
READY = re.compile(r"publishers connect to (tcp://\S+); subscribers connect to (tcp://\S+)")
WAIT = 15.0

RunCli = Callable[..., Any]


def flask_zibrato(run_cli: RunCli, *args: str, **config: Any) -> Any:
    """Start ``flask --app command_site zibrato ARGS`` with ``FLASK_<key>`` settings."""
    env = {
        f"FLASK_{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in config.items()
    }
    return run_cli("--app", f"{SITE}:create_app", "zibrato", *args, env=env, module="flask")


def instrumented(publish: str) -> Flask:
    app = build_shop({"ZIBRATO_PUBLISH": publish})
    Zibrato(app)
    return app


def request_until(app: Flask, arrived: Callable[[], bool], what: str) -> None:
    """Serve a request now and then until ``arrived()`` (a publisher may connect before the
    broker has heard of its subscriber: those first events are held, then dropped)."""
    deadline = time.monotonic() + WAIT
    client = app.test_client()
    while True:
        assert client.get("/items/7").json == {"pk": 7}
        app.extensions["zibrato"].client().flush(timeout=1.0)
        pause = time.monotonic() + 1.0
        while time.monotonic() < pause:
            if arrived():
                return
            time.sleep(0.05)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not arrive within {WAIT} s")


def jsonl_names(path: Path) -> set[str]:
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    return {json.loads(line)["name"] for line in text[: text.rfind("\n") + 1].splitlines()}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_broker_command_receives_a_real_request_and_stops_cleanly(
    run_cli: RunCli, tmp_path: Path, stop: signal.Signals
) -> None:
    rollups = tmp_path / "metrics.jsonl"
    broker = flask_zibrato(
        run_cli,
        "broker",
        ZIBRATO_BROKER_FRONTEND="tcp://127.0.0.1:0",
        ZIBRATO_BROKER_BACKEND_ADDRESS="tcp://127.0.0.1:0",
        ZIBRATO_BACKENDS=[{"kind": "jsonl", "path": str(rollups), "flush": 0.2}],
    )
    frontend = broker.wait_line(READY.pattern, WAIT)[1]
    broker.wait_line("flask zibrato broker: jsonl backend: appending to", WAIT)
    broker.wait_line("flask zibrato broker: running; Ctrl-C to stop", WAIT)
    request_until(
        instrumented(frontend),
        lambda: schema.REQUEST_DURATION in jsonl_names(rollups),
        "the request's rollup",
    )
    assert schema.VIEW_DURATION in jsonl_names(rollups)
    broker.signal(stop)
    assert broker.finish(WAIT) == 0, broker
    assert broker.stdout[-1] == "flask zibrato broker: stopped"
    assert broker.stderr == []


def test_the_broker_command_runs_the_backends_named_on_the_command_line(
    run_cli: RunCli,
) -> None:
    broker = flask_zibrato(
        run_cli,
        "broker",
        "--backend",
        "console",
        ZIBRATO_BROKER_FRONTEND="tcp://127.0.0.1:0",
        ZIBRATO_BROKER_BACKEND_ADDRESS="tcp://127.0.0.1:0",
        ZIBRATO_BACKENDS=[{"kind": "jsonl", "path": "never-written.jsonl"}],
    )
    broker.wait_line("flask zibrato broker: console backend:", WAIT)
    broker.wait_line("running; Ctrl-C to stop", WAIT)
    assert not broker.lines_matching(lambda line: "jsonl" in line)
    broker.signal(signal.SIGINT)
    assert broker.finish(WAIT) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("broker", "--backend", "carrier-pigeon"), "flask zibrato broker: unknown backend"),
        (("broker", "--colour", "red"), "flask zibrato broker: No such option"),
        (("tail", "--level", "loud"), "flask zibrato tail: unknown level 'loud'"),
        (("tail", "--connect", "localhost:5551"), "flask zibrato tail: 'localhost:5551' is not"),
    ],
)
def test_command_mistakes_are_one_line_and_exit_2(
    run_cli: RunCli, args: tuple[str, ...], message: str
) -> None:
    process = flask_zibrato(run_cli, *args)
    assert process.finish(WAIT) == 2
    assert len(process.stderr) == 1 and process.stderr[0].startswith(message), process


def test_an_address_in_use_is_one_line_and_exit_2(run_cli: RunCli, broker: Any) -> None:
    process = flask_zibrato(run_cli, "broker", ZIBRATO_BROKER_FRONTEND=broker.frontend)
    assert process.finish(WAIT) == 2
    assert len(process.stderr) == 1 and "already in use" in process.stderr[0], process


def test_tail_prints_a_real_requests_metrics(run_cli: RunCli, broker: Any) -> None:
    tail = flask_zibrato(run_cli, "tail", "--json", "--connect", broker.backend)
    request_until(
        instrumented(broker.frontend),
        lambda: bool(tail.lines_matching(lambda line: schema.REQUEST_DURATION in line)),
        "a tailed request",
    )
    (line, *_) = tail.lines_matching(lambda line: schema.REQUEST_DURATION in line)
    record = json.loads(line)
    assert record["tags"]["http.route"] == "/items/<int:pk>" and record["type"] == "timer"
    tail.signal(signal.SIGINT)
    assert tail.finish(WAIT) == 0


def serve_one_in_a_forked_worker(app: Flask) -> None:
    assert app.test_client().get("/items/2").json == {"pk": 2}
    app.extensions["zibrato"].client().flush(timeout=5.0)


def test_a_forked_worker_publishes_through_its_own_socket(broker: Any, subscribe: Any) -> None:
    collector = subscribe()
    app = instrumented(broker.frontend)
    app.test_client().get("/items/1")  # the parent's publisher exists before the fork
    worker = multiprocessing.get_context("fork").Process(
        target=serve_one_in_a_forked_worker, args=(app,)
    )
    worker.start()
    worker.join(WAIT)
    assert worker.exitcode == 0
    app.extensions["zibrato"].client().flush(timeout=5.0)
    collector.wait_for(
        lambda got: len([e for e in got if e.name == schema.REQUEST_DURATION]) == 2, "two requests"
    )
    publishers = {e.publisher for e in collector.named(schema.REQUEST_DURATION)}
    assert len(publishers) == 2, "the worker got a socket of its own"


def test_a_misspelled_key_is_one_line_with_the_likely_name(run_cli: RunCli) -> None:
    broker = flask_zibrato(
        run_cli,
        "broker",
        ZIBRATO_BROKER_FRONTEND="tcp://127.0.0.1:0",
        ZIBRATO_BROKER_BACKEND_ADDRESS="tcp://127.0.0.1:0",
        ZIBRATO_BACKEND=[{"kind": "jsonl", "path": "never-written.jsonl"}],
    )
    broker.wait_line("running; Ctrl-C to stop", WAIT)
    broker.signal(signal.SIGINT)
    assert broker.finish(WAIT) == 0
    assert broker.stderr == [
        "ZIBRATO_BACKEND: not a Zibrato setting; did you mean ZIBRATO_BACKENDS?"
    ]


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        (
            "ZIBRATO_PUBLISH",
            "tcp://127.0.0.1:²",
            "flask zibrato broker: ZIBRATO_PUBLISH: 'tcp://127.0.0.1:²': '²' is not a port "
            "number (1-65535); use tcp://HOST:PORT, e.g. tcp://127.0.0.1:5550",
        ),
        (
            "ZIBRATO_BACKENDS",
            [{"kind": "prometheus", "listen": 9102}],
            "flask zibrato broker: ZIBRATO_BACKENDS: prometheus backend: option 'listen' must "
            "be a string of printable characters, not 9102",
        ),
    ],
)
def test_a_setting_that_cannot_work_is_one_line_and_exit_2(
    run_cli: RunCli, key: str, value: Any, line: str
) -> None:
    process = flask_zibrato(run_cli, "broker", **{key: value})
    assert process.finish(WAIT) == 2
    assert process.stderr == [line]
