"""``manage.py zibrato_broker`` as a real subprocess, fed by a second process of the site."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django_support import (
    BROKER_LINE,
    free_port,
    manage,
    site_env,
    wait_for_records,
)
from process_support import SiteProcess

ROUTE = "shop/<str:region>/shelves/<slug:slug>/"
REQUEST_IN_A_SUBPROCESS = (
    "from django.test import Client\n"
    "from zibrato_django import zibrato\n"
    "assert Client().get('/shop/eu/shelves/top/').status_code == 200\n"
    "zibrato.flush(timeout=10)\n"
    "print('stats', zibrato.stats())\n"
)


def has_request(records: list[dict[str, Any]]) -> bool:
    return any(
        r["name"] == "http.server.request.duration" and r["tags"].get("http.route") == ROUTE
        for r in records
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_broker_command_receives_a_real_requests_metrics_and_stops_cleanly(
    start_site: Callable[..., SiteProcess], tmp_path: Path, signum: signal.Signals
) -> None:
    jsonl = tmp_path / "metrics.jsonl"
    broker = start_site("zibrato_broker", DJTEST_JSONL=str(jsonl), DJTEST_DB=str(tmp_path / "db"))
    frontend = broker.wait_line(BROKER_LINE)["frontend"]
    broker.wait_line(r"zibrato_broker: jsonl backend: .*metrics\.jsonl")
    broker.wait_line(r"zibrato_broker: running; Ctrl-C to stop")

    app = start_site("shell", "-c", REQUEST_IN_A_SUBPROCESS, DJTEST_PUBLISH=frontend)
    assert app.finish(60) == 0, app
    records = wait_for_records(jsonl, has_request)
    (request,) = [r for r in records if r["name"] == "http.server.request.duration"]
    assert request["tags"]["http.request.method"] == "GET"
    assert request["tags"]["http.response.status_code"] == "200"
    assert request["count"] == 1 and request["source"] == socket.gethostname()

    broker.signal(signum)
    assert broker.finish(10) == 0, broker
    assert broker.stdout[-1] == "zibrato_broker: stopped"
    assert broker.stderr == []


def test_a_taken_port_is_one_line_and_exit_2(
    start_site: Callable[..., SiteProcess], tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"tcp://127.0.0.1:{holder.getsockname()[1]}"
        broker = start_site(
            "zibrato_broker", DJTEST_FRONTEND=taken, DJTEST_JSONL=str(tmp_path / "m.jsonl")
        )
        assert broker.finish(30) == 2, broker
    (line,) = broker.stderr
    assert line.startswith("zibrato_broker: ") and "in use" in line, line


def test_an_address_libzmq_refuses_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        manage("zibrato_broker"),
        # A directory that does not exist (an interface name would be refused earlier: no
        # address beyond loopback without CURVE).
        env=site_env(DJTEST_FRONTEND="ipc:///no-such-dir/zibrato-frontend"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("zibrato_broker: cannot bind ipc:///no-such-dir/zibrato-frontend")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--backend", "carrier-pigeon"], "unknown backend 'carrier-pigeon'"),
        (["--backend", "jsonl", "--backend", "nosuch.module:Backend"], "cannot load backend"),
    ],
)
def test_a_bad_backend_is_one_line_and_exit_2(args: list[str], words: str) -> None:
    result = subprocess.run(
        manage("zibrato_broker", *args), env=site_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("zibrato_broker: ") and words in line
    assert "Traceback" not in result.stderr and "CommandError" not in result.stderr


def test_backend_option_overrides_the_configured_backends(
    start_site: Callable[..., SiteProcess],
) -> None:
    broker = start_site("zibrato_broker", "--backend", "console")
    broker.wait_line(r"zibrato_broker: console backend: ")
    broker.wait_line(r"zibrato_broker: running")
    assert not any("jsonl backend" in line for line in broker.stdout)


def test_runserver_with_its_autoreloader_reconnects_after_a_broker_restart(
    start_site: Callable[..., SiteProcess], tmp_path: Path
) -> None:
    first_jsonl, second_jsonl = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = start_site("zibrato_broker", DJTEST_JSONL=str(first_jsonl))
    addresses = first.wait_line(BROKER_LINE)
    first.wait_line("running")
    port = free_port()
    server = start_site(
        "runserver",
        f"127.0.0.1:{port}",
        DJTEST_PUBLISH=addresses["frontend"],
        DJTEST_DB=str(tmp_path / "db.sqlite3"),
    )
    url = f"http://127.0.0.1:{port}/shop/eu/shelves/top/"

    def request_until(path: Path) -> list[dict[str, Any]]:
        return wait_for_records(path, lambda records: get(url) and has_request(records), 30)

    request_until(first_jsonl)
    first.signal(signal.SIGTERM)
    assert first.finish(10) == 0
    # The same addresses again, as a restarted `manage.py zibrato_broker` would bind them.
    second = start_site(
        "zibrato_broker",
        DJTEST_JSONL=str(second_jsonl),
        DJTEST_FRONTEND=addresses["frontend"],
        DJTEST_BACKEND=addresses["backend"],
    )
    second.wait_line("running")
    request_until(second_jsonl)
    assert server.popen.poll() is None, server  # the site never noticed


def get(url: str) -> bool:
    """GET ``url`` on the dev server (True on 200; False while it is starting)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize(
    ("zibrato", "line"),
    [
        (
            "{'PUBLISH': 'tcp://127.0.0.1:²'}",
            "zibrato_broker: ZIBRATO['PUBLISH']: 'tcp://127.0.0.1:²': '²' is not a port number "
            "(1-65535); use tcp://HOST:PORT, e.g. tcp://127.0.0.1:5550 (zibrato.E002)",
        ),
        (
            "{'BACKENDS': [{'KIND': 'prometheus', 'LISTEN': 9102}]}",
            "zibrato_broker: ZIBRATO['BACKENDS']: prometheus backend: option 'listen' must be a "
            "string of printable characters, not 9102 (zibrato.E003)",
        ),
        (
            "{'BACKENDS': [{'KIND': 'console', 'FLUSH': 1e308}]}",
            "zibrato_broker: ZIBRATO['BACKENDS']: console backend: the flush interval must be "
            "more than 0 seconds and at most 86400 (a day), not 1e+308 (zibrato.E003)",
        ),
        (
            "['PUBLISH']",
            "zibrato_broker: settings.ZIBRATO: ['PUBLISH']: use a dict of settings (zibrato.E004)",
        ),
    ],
    ids=["non-ASCII digit", "int LISTEN", "FLUSH 1e308", "not a dict"],
)
def test_a_setting_that_cannot_work_is_one_line_and_exit_2(zibrato: str, line: str) -> None:
    result = subprocess.run(
        manage("zibrato_broker"),
        env=site_env(DJTEST_ZIBRATO=zibrato),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (2, [line], "")


def test_the_command_users_run_shows_a_typo_with_the_likely_name(
    start_site: Callable[..., SiteProcess], tmp_path: Path
) -> None:
    settings = {
        "BROKER_FRONTEND": "tcp://127.0.0.1:0",
        "BROKER_BACKEND_ADDRESS": "tcp://127.0.0.1:0",
        "PUBLISH": "tcp://127.0.0.1:9",
        "BACKEND": [{"KIND": "jsonl", "PATH": str(tmp_path / "m.jsonl")}],
    }
    broker = start_site("zibrato_broker", DJTEST_ZIBRATO=repr(settings), DJTEST_ZIBARTO="{}")
    broker.wait_line("running; Ctrl-C to stop")
    broker.signal(signal.SIGINT)
    assert broker.finish(10) == 0
    assert broker.stderr == [
        "zibrato_broker: warning: settings.ZIBARTO is not a Zibrato setting; did you mean "
        "settings.ZIBRATO? (zibrato.W004)",
        "zibrato_broker: warning: ZIBRATO['BACKEND']: not a Zibrato setting; did you mean "
        "ZIBRATO['BACKENDS']? (zibrato.W003)",
    ]
