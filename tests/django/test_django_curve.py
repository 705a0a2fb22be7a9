"""``ZIBRATO = {"CURVE": DIR}``: the shared client and ``manage.py zibrato_broker`` use the
keys; the system checks say when they cannot (R11 for Django)."""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import override_settings
from django_support import BROKER_LINE, wait_for_records
from process_support import SiteProcess

from zibrato.framework.settings import OFF_ADDRESS
from zibrato.security.curve import CURVE_ENV
from zibrato.security.keygen import write_keys
from zibrato_django.checks import check_settings
from zibrato_django.conf import DEFAULTS, build_runner, client_keywords

# Requests until the client has sent something or counted a CURVE refusal (a loaded
# machine may take a while to say either), then its stats.
REQUEST_AND_STATS = (
    "import time\n"
    "from django.test import Client\n"
    "from zibrato_django import zibrato\n"
    "deadline = time.monotonic() + 20\n"
    "while time.monotonic() < deadline:\n"
    "    assert Client().get('/shop/eu/shelves/top/').status_code == 200\n"
    "    zibrato.flush(timeout=5)\n"
    "    stats = zibrato.stats()\n"
    "    if stats['sent_events'] or 'curve_refused' in stats['dropped']:\n"
    "        break\n"
    "zibrato.close()\n"
    "print('stats', zibrato.stats())\n"
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    write_keys(tmp_path / "keys")
    return tmp_path / "keys"


def ids(config: dict[str, object]) -> list[str]:
    with override_settings(ZIBRATO=config):
        return [message.id or "" for message in check_settings()]


def test_curve_reaches_the_client_and_the_broker(
    keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CURVE_ENV, raising=False)
    config = {**DEFAULTS, "CURVE": str(keys), "INSECURE": True}
    assert client_keywords(config)["curve"] == str(keys)
    runner = build_runner(config)
    assert runner.curve == str(keys)
    assert runner.broker is not None and runner.broker.insecure is True
    assert client_keywords({**DEFAULTS})["curve"] is None  # the default: no CURVE
    monkeypatch.setenv(CURVE_ENV, str(keys))
    assert client_keywords({**DEFAULTS})["curve"] == str(keys)  # ... unless the environment


def test_a_bad_curve_setting_never_raises_and_never_sends_in_clear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="zibrato.django"):
        keywords = client_keywords({**DEFAULTS, "CURVE": 42})
    assert keywords["publish"] == OFF_ADDRESS  # the client is off: nothing sent in clear
    assert any("ZIBRATO['CURVE']" in record.getMessage() for record in caplog.records)


def test_checks_name_what_is_wrong_with_the_keys(keys: Path, tmp_path: Path) -> None:
    assert "zibrato.E006" not in ids({"CURVE": str(keys)})
    assert "zibrato.E006" in ids({"CURVE": str(tmp_path / "nowhere")})
    assert "zibrato.E006" in ids({"CURVE": 42})
    assert "zibrato.E004" in ids({"INSECURE": "yes"})
    (keys / "client.key_secret").unlink()
    with override_settings(ZIBRATO={"CURVE": str(keys)}):
        (message,) = [m for m in check_settings() if m.id == "zibrato.E006"]
    assert "client.key_secret is missing" in message.msg and "zibrato keys" in message.msg


def test_checks_read_the_environment_when_the_setting_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CURVE_ENV, str(tmp_path / "nowhere"))
    with override_settings(ZIBRATO={}):
        (message,) = [m for m in check_settings() if m.id == "zibrato.E006"]
    assert f"${CURVE_ENV}" in message.msg


def test_a_broker_beyond_loopback_needs_curve(
    start_site: Callable[..., SiteProcess], tmp_path: Path
) -> None:
    broker = start_site("zibrato_broker", DJTEST_FRONTEND="tcp://0.0.0.0:0")
    assert broker.finish(30) == 2, broker
    (line,) = broker.stderr
    assert line.startswith("zibrato_broker: refusing to bind tcp://0.0.0.0:0") and "CURVE" in line


def test_a_site_with_the_keys_delivers_and_one_without_is_refused(
    start_site: Callable[..., SiteProcess], tmp_path: Path, keys: Path
) -> None:
    jsonl = tmp_path / "metrics.jsonl"
    broker = start_site("zibrato_broker", DJTEST_JSONL=str(jsonl), DJTEST_CURVE=str(keys))
    frontend = broker.wait_line(BROKER_LINE)["frontend"]
    broker.wait_line(r"zibrato_broker: CURVE on: clients must present a key from ")
    broker.wait_line(r"zibrato_broker: running")

    refused = start_site("shell", "-c", REQUEST_AND_STATS, DJTEST_PUBLISH=frontend)
    assert refused.finish(60) == 0, refused
    stats = _stats(refused)
    assert stats["sent_events"] == 0 and "curve_refused" in stats["dropped"], stats
    assert any("requires CURVE" in line for line in refused.stderr), refused

    app = start_site(
        "shell", "-c", REQUEST_AND_STATS, DJTEST_PUBLISH=frontend, DJTEST_CURVE=str(keys)
    )
    assert app.finish(60) == 0, app
    assert _stats(app)["dropped"] == {}, app
    records = wait_for_records(
        jsonl, lambda rs: any(r["name"] == "http.server.request.duration" for r in rs)
    )
    (request, *_) = [r for r in records if r["name"] == "http.server.request.duration"]
    assert request["tags"]["http.response.status_code"] == "200"


def _stats(process: SiteProcess) -> dict[str, object]:
    (line,) = [line for line in process.stdout if line.startswith("stats ")]
    stats: dict[str, object] = ast.literal_eval(line.removeprefix("stats "))
    return stats
