"""Item 2 and issue 10 item 4: what answers on the publish address is not a broker.

libzmq 4.3.5 aborted the instrumented process (``Resource temporarily unavailable
(src/zmtp_engine.cpp:439)``) when a peer that does not speak ZeroMQ answered, typically at
exit, after counting the events as sent (see ``zibrato/security.py`` for the cause). Each
test here runs a real client in a subprocess against a real loopback peer.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys
import textwrap

from reliability_support import http_400, raw_peer, report, run_python, scaled

CLIENT = textwrap.dedent(
    """
    import json, logging, sys, time
    logging.basicConfig(format="%(relativeCreated)d|%(message)s")
    from zibrato import Zibrato

    address, events, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    z = Zibrato(publish=address)
    for i in range(events):
        z.incr("peer.events")
        time.sleep(seconds / events)
    z.close()
    print(json.dumps(z.stats()), flush=True)
    """
)


def _garbage(first: bytes) -> bytes:
    return random.Random(9).randbytes(4096)


def _zmtp_2(first: bytes) -> bytes:
    # A versioned greeting that asks for ZMTP 2.0 (revision 1): an old libzmq, say.
    return b"\xff" + b"\x00" * 7 + b"\x01\x7f" + b"\x01\x01" + b"\x00\x01"


def _zmtp_3_nonsense(first: bytes) -> bytes:
    return b"\xff" + b"\x00" * 7 + b"\x01\x7f" + b"\x03\x01" + b"NONSENSE" + b"\x00" * 40


PEERS = {
    "http-400": http_400,
    "random-bytes": _garbage,
    "zmtp-1.0-identity": lambda first: b"\x01\x00" * 64,
    "zmtp-2.0-greeting": _zmtp_2,
    "zmtp-3-bad-mechanism": _zmtp_3_nonsense,
}


def test_clients_publishing_to_peers_that_are_not_zeromq_exit_normally():
    """No abort; nothing counted as sent; every event counted as no_broker; one warning.

    One client per kind of peer at a time, all kinds at once (they mostly sleep).
    """
    runs = scaled(1, 10)
    events = 300
    with contextlib.ExitStack() as stack:
        peers = {kind: stack.enter_context(raw_peer(reply)) for kind, reply in PEERS.items()}
        for _ in range(runs):
            clients = {
                kind: subprocess.Popen(
                    [sys.executable, "-c", CLIENT, peer.address, str(events), "1.2"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for kind, peer in peers.items()
            }
            for kind, client in clients.items():
                out, err = client.communicate(timeout=60)
                assert client.returncode == 0, f"{kind}: exit status {client.returncode}: {err}"
                stats = json.loads(out)
                assert stats["sent_events"] == 0, kind
                assert stats["dropped"] == {"no_broker": events}, kind
                warnings = [line for line in err.splitlines() if "no broker" in line]
                assert len(warnings) == 1, f"{kind}: {err}"
                assert peers[kind].address in warnings[0] and "`zibrato run`" in warnings[0]
                assert re.search(r"\((something accepts|the ZeroMQ handshake)", warnings[0]), kind
        for kind, peer in peers.items():
            assert peer.connections > 0, kind
    report(f"non-ZeroMQ peers {sorted(PEERS)}: {runs} client(s) each, all exit 0")


def test_a_long_running_client_beside_an_http_server():
    """The peer answers every reconnection (each 100 ms); the client carries on."""
    seconds = scaled(2.5, 20.0)
    with raw_peer(http_400) as peer:
        result = run_python(CLIENT, peer.address, "500", str(seconds), timeout=120)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats == {
        "sent_events": 0,
        "sent_batches": 0,
        "filtered_events": 0,
        "dropped": {"no_broker": 500},
    } | {key: stats[key] for key in stats if key == "queued_events"}
    report(f"non-ZeroMQ peer: {seconds:g} s, {peer.connections} connections, exit 0")


def test_no_broker_is_said_once_a_few_seconds_after_the_first_event(dead_address):
    """Issue 10 item 4: one warning, ~3 s after the first event, naming what to run."""
    result = run_python(CLIENT, dead_address, "45", "4.5", timeout=60)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["dropped"] == {"no_broker": 45}
    assert stats["filtered_events"] == 0
    lines = [line for line in result.stderr.splitlines() if "|" in line]
    assert len(lines) == 1, result.stderr
    when, message = lines[0].split("|", 1)
    assert 2500 <= int(when) <= 6000, lines
    assert re.search(rf"no broker answers at {re.escape(dead_address)}\b", message)
    assert "`zibrato run`" in message and "no_broker" in message
