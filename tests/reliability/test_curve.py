"""R11: CURVE for networked brokers, with a real broker process on loopback.

Right keys deliver; a NULL client, a client whose key is not authorized, a client that
trusts the wrong broker key and subscribers with wrong or no keys get nothing through,
while the application never blocks or raises and counts what it lost. Keys are private
files; a broker refuses to bind beyond loopback without CURVE (decided before any bind:
the refusals use 0.0.0.0, and nothing here listens beyond loopback).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import http_400, raw_peer, report

from zibrato import Zibrato
from zibrato.broker import Broker
from zibrato.errors import ConfigError
from zibrato.publisher import Publisher
from zibrato.runner import Runner, serve
from zibrato.security.authenticator import ZapHandler
from zibrato.security.curve import (
    CURVE_ENV,
    adapter_keywords,
    broker_keys,
    check_exposure,
    client_keys,
    keys_for_broker,
    require_support,
)
from zibrato.security.handshake import peer_mechanism
from zibrato.security.keygen import write_keys
from zibrato.security.policy import apply_handshake_policy
from zibrato.subscriber import Subscriber

TIMEOUT = 10.0
BROKER_READY = re.compile(
    r"publishers connect to (?P<frontend>tcp://\S+); subscribers connect to (?P<backend>tcp://\S+)"
)
PROBE = "curve.probe"


# -- helpers ---------------------------------------------------------------------------------
def start_curve_broker(run_cli, keys: Path, *extra: str) -> tuple[Any, str, str]:
    broker = run_cli(
        "broker",
        "--frontend",
        "tcp://127.0.0.1:0",
        "--backend-address",
        "tcp://127.0.0.1:0",
        "--curve",
        str(keys),
        *extra,
    )
    match = broker.wait_line(BROKER_READY.pattern, timeout=TIMEOUT)
    return broker, match["frontend"], match["backend"]


def wait_for_stderr(process, text: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = [line for line in process.stderr if text in line]
        if lines:
            assert len(lines) == 1, process
            return lines[0]
        assert time.monotonic() < deadline, f"no {text!r} on stderr: {process!r}"
        time.sleep(0.05)


class Received:
    """Names (and values) of every event a subscriber got, with bounded waits."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.events: list[tuple[str, float]] = []

    def poll(self, timeout: float) -> None:
        batch = self.subscriber.receive(timeout)
        while batch is not None:
            self.events.extend((event[1], event[2]) for event in batch.events)
            batch = self.subscriber.receive_ready()

    def names(self) -> set[str]:
        return {name for name, _ in self.events}

    def total(self, name: str) -> float:
        return sum(value for got, value in self.events if got == name)

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not predicate():
            assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s: {self.events}"
            self.poll(0.05)

    def ready(self, frontend: str, curve: Path) -> None:
        """Wait until the broker knows our subscription: a probe from a good client got here."""
        probe = Zibrato(frontend, curve=str(curve))
        try:
            deadline = time.monotonic() + TIMEOUT
            while PROBE not in self.names():
                assert time.monotonic() < deadline, "no probe reached the subscriber"
                probe.incr(PROBE)
                probe.flush(timeout=0.1)
                self.poll(0.05)
        finally:
            probe.close()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(address: str, curve: Any = None) -> Received:
        subscriber = Subscriber(address, curve=curve)
        made.append(subscriber)
        return Received(subscriber)

    yield make
    for subscriber in made:
        subscriber.close()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    write_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def stranger(tmp_path: Path, keys: Path) -> Path:
    """Keys of a client the broker does not know, that does trust the right broker key."""
    write_keys(tmp_path / "stranger")
    shutil.copyfile(keys / "broker.key", tmp_path / "stranger" / "broker.key")
    return tmp_path / "stranger"


@pytest.fixture
def impostor_trust(tmp_path: Path, keys: Path) -> Path:
    """An authorized client key, but trusting a broker key that is not our broker's."""
    write_keys(tmp_path / "impostor")
    shutil.copyfile(keys / "client.key_secret", tmp_path / "impostor" / "client.key_secret")
    return tmp_path / "impostor"


def patient_client(frontend: str, curve: Path) -> Zibrato:
    """A client with the right keys that waits up to 5 s for the broker (a loaded machine)."""
    return Zibrato(publisher=Publisher(frontend, curve=str(curve), startup_hold=5.0))


def close_within(client: Zibrato, timeout: float = TIMEOUT) -> None:
    """Close ``client`` on a thread; fail if it has not returned within ``timeout`` s."""
    closer = threading.Thread(target=client.close, daemon=True)
    closer.start()
    closer.join(timeout)
    assert not closer.is_alive(), "close() blocked"


def wait_dropped(client: Zibrato, reason: str) -> None:
    """Record until the client has counted a drop for ``reason`` (it learns of the refusal)."""
    deadline = time.monotonic() + TIMEOUT
    while reason not in client.stats()["dropped"]:
        assert time.monotonic() < deadline, f"no {reason} drop: {client.stats()}"
        client.incr("curve.first")
        client.flush(timeout=0.1)


def zibrato_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "zibrato" and record.levelno == logging.WARNING
    ]


# -- keys --------------------------------------------------------------------------------------
def test_keys_command_writes_private_key_files_and_says_how_to_use_them(run_cli, tmp_path):
    target = tmp_path / "new" / "keys"
    made = run_cli("keys", str(target))
    assert made.finish() == 0, made
    files = ["broker.key", "broker.key_secret", "client.key", "client.key_secret"]
    for path in [*(target / name for name in files), target / "authorized" / "client.key"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "authorized").stat().st_mode) == 0o700
    output = "\n".join(made.stdout)
    assert f"--curve {target}" in output and CURVE_ENV in output
    assert (target / "client.key").read_bytes() == (target / "authorized/client.key").read_bytes()
    # The files are ZeroMQ certificates that our loaders (and pyzmq's) read.
    assert client_keys(target).broker == broker_keys(target).public
    before = (target / "broker.key_secret").read_bytes()

    again = run_cli("keys", str(target))
    assert again.finish() == 2
    assert len(again.stderr) == 1 and "--force" in again.stderr[0], again
    assert (target / "broker.key_secret").read_bytes() == before

    forced = run_cli("keys", str(target), "--force")
    assert forced.finish() == 0, forced
    assert (target / "broker.key_secret").read_bytes() != before
    assert stat.S_IMODE((target / "broker.key_secret").stat().st_mode) == 0o600


def test_keys_for_one_more_client_make_a_folder_to_copy(run_cli, keys):
    broker_secret = (keys / "broker.key_secret").read_bytes()
    made = run_cli("keys", str(keys), "--client", "web-1")
    assert made.finish() == 0, made
    folder = keys / "web-1"
    assert sorted(path.name for path in folder.iterdir()) == [
        "broker.key",
        "client.key",
        "client.key_secret",
    ]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in folder.iterdir())
    assert (keys / "broker.key_secret").read_bytes() == broker_secret  # the broker keeps its keys
    web1 = client_keys(folder)
    assert web1.public != client_keys(keys).public
    assert web1.broker == broker_keys(keys).public
    assert len(broker_keys(keys).authorized) == 2

    again = run_cli("keys", str(keys), "--client", "web-1")
    assert again.finish() == 2 and len(again.stderr) == 1, again
    bad = run_cli("keys", str(keys), "--client", "../escape")
    assert bad.finish() == 2 and len(bad.stderr) == 1, bad


def test_keys_in_an_unwritable_place_is_one_line(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    made = run_cli("keys", str(blocker / "keys"))
    assert made.finish() == 2
    assert len(made.stderr) == 1, made
    assert made.stderr[0].startswith("zibrato keys: cannot write keys in ")


@pytest.mark.parametrize("missing", ["broker.key_secret", "authorized/client.key"])
def test_broker_with_incomplete_keys_exits_with_one_line(run_cli, keys, missing):
    (keys / missing).unlink()
    broker = run_cli("broker", "--frontend", "tcp://127.0.0.1:0", "--curve", str(keys))
    assert broker.finish() == 2
    assert len(broker.stderr) == 1, broker
    assert str(keys) in broker.stderr[0] and "zibrato keys" in broker.stderr[0]


@pytest.mark.parametrize("command", [["tail"], ["backend", "console"]])
def test_subscribers_with_missing_keys_exit_with_one_line(run_cli, tmp_path, command):
    process = run_cli(*command, "--curve", str(tmp_path / "nowhere"))
    assert process.finish() == 2
    assert len(process.stderr) == 1, process
    assert "is not a directory of CURVE keys" in process.stderr[0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=400))
def test_any_key_file_content_loads_or_is_one_clear_error(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("fuzzed")
    (folder / "client.key_secret").write_bytes(content)
    (folder / "broker.key").write_bytes(content)
    try:
        loaded = client_keys(folder)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(folder) in str(exc)
    else:
        assert len(loaded.public) == len(loaded.secret) == len(loaded.broker) == 40
        assert loaded.secret.decode() not in repr(loaded)


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=30))
def test_any_keys_directory_name_is_one_clear_error(name):
    for loader in (client_keys, broker_keys):
        try:
            loader(name)
        except ConfigError as exc:
            assert "\n" not in str(exc) and "\r" not in str(exc)
        else:
            raise AssertionError(f"{name!r} loaded as keys")


# -- delivery and refusal ------------------------------------------------------------------------
def test_right_keys_deliver_and_the_stream_is_encrypted(run_cli, keys, subscribers, monkeypatch):
    broker, frontend, backend = start_curve_broker(run_cli, keys)
    assert any("CURVE on" in line for line in broker.stdout), broker
    good = subscribers(backend, client_keys(keys))
    good.ready(frontend, keys)
    monkeypatch.setenv(CURVE_ENV, str(keys))  # the environment is enough for a client
    client = Zibrato(frontend)
    for _ in range(1000):
        client.incr("curve.delivered")
    client.flush()
    good.wait_for(lambda: good.total("curve.delivered") == 1000, "1000 events")
    close_within(client)
    assert client.stats()["dropped"] == {}


WHY_REFUSED = {
    "null": "requires CURVE: give this client its keys",
    "stranger": "refused this client's CURVE key",
    "impostor_trust": "broker.key the public key of that broker?",
}


@pytest.mark.parametrize("who", sorted(WHY_REFUSED))
def test_refused_publishers_get_nothing_through_and_count_it(
    run_cli, keys, subscribers, caplog, request, who
):
    broker, frontend, backend = start_curve_broker(run_cli, keys)
    good = subscribers(backend, client_keys(keys))
    good.ready(frontend, keys)
    curve = None if who == "null" else str(request.getfixturevalue(who))
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        refused = Zibrato(frontend, curve=curve)
        wait_dropped(refused, "curve_refused")
        started = time.perf_counter()
        for i in range(10_000):  # never raises, never blocks
            refused.incr("curve.refused")
            refused.gauge("curve.refused.gauge", i)
        per_call = (time.perf_counter() - started) / 20_000
        close_within(refused)
    stats = refused.stats()
    assert stats["sent_events"] == 0
    assert set(stats["dropped"]) == {"curve_refused"}, stats
    assert stats["dropped"]["curve_refused"] >= 20_000
    assert stats["dropped"]["curve_refused"] + stats["filtered_events"] >= 20_001
    warnings = zibrato_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert frontend in warnings[0] and "curve_refused" in warnings[0]
    assert WHY_REFUSED[who] in warnings[0], warnings
    if who == "stranger":  # the broker says whom it refused, once
        line = wait_for_stderr(broker, "refused a CURVE client from 127.0.0.1")
        assert client_keys(request.getfixturevalue(who)).public.decode() in line

    # The path works for a good client, before and after: nothing of the refused one came.
    good_client = patient_client(frontend, keys)
    good_client.incr("curve.marker")
    good_client.flush()
    good.wait_for(lambda: "curve.marker" in good.names(), "the marker")
    close_within(good_client)
    good.poll(0.3)
    assert not {name for name in good.names() if name.startswith("curve.refused")}
    assert "curve.first" not in good.names()
    assert broker.popen.poll() is None, "the broker died"
    report(
        f"R11 refused publisher ({who}): 0 of {stats['dropped']['curve_refused']} events "
        f"through, all counted curve_refused; {per_call * 1e9:.0f} ns per call; one warning"
    )


def test_a_client_with_keys_never_talks_to_a_broker_without_curve(run_cli, keys, caplog):
    broker = run_cli(
        "broker", "--frontend", "tcp://127.0.0.1:0", "--backend-address", "tcp://127.0.0.1:0"
    )
    frontend = broker.wait_line(BROKER_READY.pattern, timeout=TIMEOUT)["frontend"]
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        client = Zibrato(frontend, curve=str(keys))
        wait_dropped(client, "curve_refused")
        close_within(client)
    assert client.stats()["sent_events"] == 0
    (warning,) = zibrato_warnings(caplog)
    assert "does not use CURVE" in warning and frontend in warning


@pytest.mark.parametrize("who", ["null", "stranger"])
def test_refused_subscribers_get_nothing_and_say_why_once(
    run_cli, keys, subscribers, caplog, request, who
):
    _, frontend, backend = start_curve_broker(run_cli, keys)
    good = subscribers(backend, client_keys(keys))
    curve = None if who == "null" else client_keys(request.getfixturevalue(who))
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        refused = subscribers(backend, curve)
        good.ready(frontend, keys)
        client = patient_client(frontend, keys)
        for _ in range(100):
            client.incr("curve.secret")
        client.flush()
        good.wait_for(lambda: good.total("curve.secret") == 100, "100 events")
        close_within(client)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            refused.poll(0.1)
    assert refused.events == []
    warnings = zibrato_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert backend in warnings[0]


def test_a_refused_client_gets_in_once_the_broker_knows_its_key(
    run_cli, keys, stranger, subscribers
):
    broker, frontend, backend = start_curve_broker(run_cli, keys)
    client = Zibrato(frontend, curve=str(stranger))
    wait_dropped(client, "curve_refused")
    broker.stop()
    shutil.copyfile(stranger / "client.key", keys / "authorized" / "stranger.key")
    restarted = run_cli(
        "broker", "--frontend", frontend, "--backend-address", backend, "--curve", str(keys)
    )
    restarted.wait_line(BROKER_READY.pattern, timeout=TIMEOUT)
    good = subscribers(backend, client_keys(keys))
    good.ready(frontend, keys)
    deadline = time.monotonic() + TIMEOUT  # the client asks again every 2 s
    while "curve.welcome" not in good.names():
        assert time.monotonic() < deadline, f"never let in: {client.stats()}"
        client.incr("curve.welcome")
        client.flush(timeout=0.1)
        good.poll(0.1)
    close_within(client)


def test_client_with_unusable_keys_drops_and_never_raises(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        client = Zibrato("tcp://127.0.0.1:9", curve=str(tmp_path / "nowhere"))
        wait_dropped(client, "curve_keys")
        client.incr("curve.more")
        close_within(client)
    assert client.stats()["sent_events"] == 0
    assert set(client.stats()["dropped"]) == {"curve_keys"}
    warnings = zibrato_warnings(caplog)
    assert len(warnings) == 1 and "zibrato keys" in warnings[0], warnings


def test_run_with_curve_feeds_its_backends_and_tail(run_cli, keys, tmp_path, subscribers):
    out = tmp_path / "rollups.jsonl"
    run = run_cli(
        "run",
        "--frontend",
        "tcp://127.0.0.1:0",
        "--backend-address",
        "tcp://127.0.0.1:0",
        "--curve",
        str(keys),
        "--backend",
        "jsonl",
        "--jsonl-path",
        str(out),
        "--flush",
        "0.2",
    )
    match = run.wait_line(BROKER_READY.pattern, timeout=TIMEOUT)
    frontend, backend = match["frontend"], match["backend"]
    tail = run_cli("tail", "--connect", backend, "--json", env={CURVE_ENV: str(keys)})
    client = patient_client(frontend, keys)
    deadline = time.monotonic() + TIMEOUT
    while not (out.exists() and "curve.run" in out.read_text()) or not tail.lines_matching(
        lambda line: "curve.run" in line
    ):
        assert time.monotonic() < deadline, f"nothing arrived: {run!r} {tail!r}"
        client.incr("curve.run")
        client.flush(timeout=0.1)
        time.sleep(0.05)
    close_within(client)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_publishes_with_the_parents_keys(run_cli, keys, subscribers):
    _, frontend, backend = start_curve_broker(run_cli, keys)
    good = subscribers(backend, client_keys(keys))
    good.ready(frontend, keys)
    client = patient_client(frontend, keys)
    client.incr("curve.parent")
    client.flush()
    pid = os.fork()
    if pid == 0:  # the child: record, send, leave without running the parent's test code
        code = 1
        try:
            client.incr("curve.child", 7)
            client.flush(timeout=TIMEOUT)  # its own connection and handshake, then send
            client.close()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + TIMEOUT
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    good.wait_for(lambda: good.total("curve.child") == 7, "the child's event")
    close_within(client)


# -- what a mismatch means ---------------------------------------------------------------------
def _zmtp_3_greeting(mechanism: bytes) -> Callable[[bytes], bytes]:
    def reply(first: bytes) -> bytes:
        return b"\xff" + bytes(8) + b"\x7f\x03\x01" + mechanism.ljust(20, b"\x00") + bytes(32)

    return reply


def test_the_peer_mechanism_is_read_from_its_greeting(keys, dead_address, tmp_path):
    curve = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", curve=str(keys))
    plain = Broker("tcp://127.0.0.1:0", "ipc://" + str(tmp_path / "plain-backend"))
    try:
        curve_frontend, curve_backend = curve.start()
        plain_frontend, plain_backend = plain.start()
        assert peer_mechanism(curve_frontend) == peer_mechanism(curve_backend) == "CURVE"
        assert peer_mechanism(plain_frontend) == peer_mechanism(plain_backend) == "NULL"
    finally:
        curve.stop()
        plain.stop()
    assert peer_mechanism(dead_address) is None
    assert peer_mechanism("ipc://" + str(tmp_path / "nobody")) is None
    assert peer_mechanism("inproc://somewhere") is None
    with raw_peer(http_400) as http, raw_peer(_zmtp_3_greeting(b"NONSENSE")) as odd:
        assert peer_mechanism(http.address) is None
        assert peer_mechanism(odd.address) == "NONSENSE"
    with raw_peer(lambda first: b"") as silent:  # answers nothing, hangs up
        assert peer_mechanism(silent.address) is None


def test_a_broker_socket_without_its_authenticator_lets_nobody_in(keys):
    """Fail closed: libzmq alone would accept any CURVE key when no ZAP handler answers."""
    context: zmq.Context[Any] = zmq.Context()
    made: list[zmq.Socket[Any]] = []

    def socket(kind: int) -> zmq.Socket[Any]:
        sock = context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        made.append(sock)
        return sock

    handler = None
    try:
        server = socket(zmq.PULL)
        apply_handshake_policy(server, broker_keys(keys))
        address = f"tcp://127.0.0.1:{server.bind_to_random_port('tcp://127.0.0.1')}"
        early = socket(zmq.PUSH)
        apply_handshake_policy(early, client_keys(keys))
        early.connect(address)
        early.send(b"before the authenticator", zmq.NOBLOCK)
        assert not server.poll(1000), "a CURVE client got in without an authenticator"
        # It keeps trying, and would get in (its keys are good) once the handler runs.
        early.close(linger=0)
        handler = ZapHandler(context, broker_keys(keys))
        late = socket(zmq.PUSH)
        apply_handshake_policy(late, client_keys(keys))
        late.connect(address)
        late.send(b"vetted")
        assert server.poll(int(TIMEOUT * 1000)), "the authorized client never got in"
        assert server.recv(zmq.NOBLOCK) == b"vetted"
    finally:
        for sock in made:
            sock.close(linger=0)
        if handler is not None:
            handler.stop()
        context.term()


# -- exposure beyond loopback ------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["broker", "--frontend", "tcp://0.0.0.0:0", "--backend-address", "tcp://127.0.0.1:0"],
        ["broker", "--frontend", "tcp://127.0.0.1:0", "--backend-address", "tcp://*:0"],
        ["run", "--frontend", "tcp://0.0.0.0:0", "--backend-address", "tcp://127.0.0.1:0"],
    ],
)
def test_a_broker_beyond_loopback_without_curve_is_refused_with_one_line(run_cli, args):
    process = run_cli(*args)
    assert process.finish() == 2
    assert len(process.stderr) == 1, process
    assert "refusing to bind" in process.stderr[0] and "--insecure" in process.stderr[0]
    assert "Traceback" not in "\n".join(process.stderr)


def test_runner_refuses_beyond_loopback_for_the_framework_commands():
    out, err = _Lines(), _Lines()
    runner = Runner(frontend="tcp://0.0.0.0:0", backend_address="tcp://127.0.0.1:0")
    assert serve(runner, name="zibrato_broker", stop=threading.Event(), out=out, err=err) == 2
    assert len(err.lines) == 1 and err.lines[0].startswith("zibrato_broker: refusing to bind")
    assert out.lines == []


def test_the_exposure_decision():
    exposed = ["tcp://0.0.0.0:5550", "tcp://*:5550", "tcp://10.1.2.3:5550", "tcp://[::]:5550"]
    local = ["tcp://127.0.0.1:5550", "tcp://localhost:5550", "tcp://[::1]:5550", "ipc:///tmp/z"]
    for address in exposed:
        with pytest.raises(ConfigError, match="refusing to bind"):
            check_exposure([address], curve=False, insecure=False)
        warning = check_exposure([address], curve=False, insecure=True)
        assert warning is not None and address in warning
        assert check_exposure([address], curve=True, insecure=False) is None
    for address in local:
        assert check_exposure([address], curve=False, insecure=False) is None


def test_insecure_warns_once_and_binds_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        keys = keys_for_broker(
            ("tcp://10.1.2.3:5550", "tcp://127.0.0.1:5551"), curve=None, insecure=True
        )
    assert keys is None
    warnings = zibrato_warnings(caplog)
    assert len(warnings) == 1 and "tcp://10.1.2.3:5550" in warnings[0], warnings


def test_insecure_on_loopback_runs_quietly(run_cli):
    broker = run_cli(
        "broker",
        "--frontend",
        "tcp://127.0.0.1:0",
        "--backend-address",
        "tcp://127.0.0.1:0",
        "--insecure",
    )
    broker.wait_line(BROKER_READY.pattern, timeout=TIMEOUT)
    assert broker.stderr == [], broker


def test_a_libzmq_without_curve_is_one_line():
    with pytest.raises(ConfigError) as refused:
        require_support(has=lambda feature: False)
    assert "\n" not in str(refused.value) and "CURVE" in str(refused.value)


def test_broker_object_with_keys_binds_loopback(keys):
    broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", curve=str(keys))
    try:
        frontend, _ = broker.start()
        assert frontend.startswith("tcp://127.0.0.1:")
    finally:
        broker.stop()


# -- the broker's authenticator ----------------------------------------------------------------
@pytest.fixture(scope="module")
def zap_handler(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zap") / "keys"
    write_keys(folder)
    context: zmq.Context[Any] = zmq.Context()
    handler = ZapHandler(context, broker_keys(folder))
    yield handler
    handler.stop()
    context.term()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=st.lists(st.binary(max_size=48), max_size=9))
def test_any_zap_request_gets_a_well_formed_answer(zap_handler, request):
    answer = zap_handler.reply(request)
    assert len(answer) == 6 and answer[0] == b"1.0"
    assert answer[2] in (b"200", b"400", b"500")
    if answer[2] == b"200":
        assert request[5] == b"CURVE" and request[6] in zap_handler.authorized


def test_zap_accepts_only_authorized_curve_keys(zap_handler):
    (key,) = zap_handler.authorized
    request = [b"1.0", b"7", b"zibrato", b"10.0.0.7", b"", b"CURVE"]
    assert zap_handler.reply([*request, key])[2] == b"200"
    assert zap_handler.reply([*request, bytes(32)])[2] == b"400"
    assert zap_handler.reply([*request[:5], b"NULL"])[2] == b"400"
    assert zap_handler.reply([*request[:5], b"PLAIN", b"user", b"pass"])[2] == b"400"


# -- the adapters' seam ------------------------------------------------------------------------
def test_adapter_keywords_from_settings(monkeypatch, keys):
    monkeypatch.delenv(CURVE_ENV, raising=False)
    assert adapter_keywords(None).client == {"curve": None}
    assert adapter_keywords(keys, insecure=True).runner == {"curve": str(keys), "insecure": True}
    monkeypatch.setenv(CURVE_ENV, "/from/env")
    assert adapter_keywords(None).runner["curve"] == "/from/env"
    assert adapter_keywords(str(keys)).client == {"curve": str(keys)}  # the setting wins
    with pytest.raises(ConfigError, match=r"^ZIBRATO_CURVE must be the path"):
        adapter_keywords(42, prefix="ZIBRATO_")
    with pytest.raises(ConfigError, match=r"^INSECURE must be True or False"):
        adapter_keywords(None, insecure="yes")


class _Lines:
    """A text stream that keeps what is printed, line by line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.extend(line for line in text.splitlines() if line)
        return len(text)

    def flush(self) -> None:
        pass
