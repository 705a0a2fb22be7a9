"""Bursts of simultaneous connections to a real `zibrato backend prometheus` /metrics.

The server runs in its own process (as it does for users); this process opens BURST
connections at once (non-blocking sockets, one selector), sends one GET /metrics on each
as soon as it connects, and reads the answer to the end; ROUNDS times, one second apart.

Usage: python bench/http_burst.py [BURST] [ROUNDS]    (defaults: 300 connections, 5 rounds)
Prints, over all rounds: how the connections ended (200, 503 busy, reset, timed out), the
time to connect (p50, p99, max, and how many waited 0.9 s or more: a SYN the server's
listen backlog had no room for is retransmitted after 1 s), and the time to the full answer.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

BURST = int(sys.argv[1]) if len(sys.argv) > 1 else 300
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
REQUEST = b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
GIVE_UP = 20.0  # seconds a whole burst may take


@dataclass
class Connection:
    sock: socket.socket
    started: float
    connected: float | None = None
    finished: float | None = None
    answer: bytearray = field(default_factory=bytearray)
    outcome: str = "timed out"


def start_server() -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "zibrato", "backend", "prometheus", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        if found:
            return server, int(found.group(1))
        if not line and server.poll() is not None:
            break
    server.kill()
    raise SystemExit("the prometheus backend did not start")


def burst(port: int) -> list[Connection]:
    selector = selectors.DefaultSelector()
    connections = []
    for _ in range(BURST):
        sock = socket.socket()
        sock.setblocking(False)
        connection = Connection(sock, time.monotonic())
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE, connection)
        connections.append(connection)
    open_ = BURST
    deadline = time.monotonic() + GIVE_UP
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            connection = key.data
            now = time.monotonic()
            if connection.connected is None:
                error = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    connection.outcome, connection.finished = os.strerror(error), now
                    selector.unregister(connection.sock)
                    open_ -= 1
                    continue
                connection.connected = now
                connection.sock.send(REQUEST)
                selector.modify(connection.sock, selectors.EVENT_READ, connection)
                continue
            try:
                chunk = connection.sock.recv(65536)
            except ConnectionResetError:
                connection.outcome, chunk = "reset", b""
            if chunk:
                connection.answer += chunk
                continue
            connection.finished = now
            if connection.answer:
                connection.outcome = connection.answer.split(b" ", 2)[1].decode()
            selector.unregister(connection.sock)
            open_ -= 1
    for connection in connections:
        connection.sock.close()
    selector.close()
    return connections


def quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def main() -> None:
    server, port = start_server()
    try:
        everything: list[Connection] = []
        for round_ in range(ROUNDS):
            if round_:
                time.sleep(1.0)  # let the previous burst's connections close
            everything += burst(port)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    outcomes: dict[str, int] = {}
    for connection in everything:
        outcomes[connection.outcome] = outcomes.get(connection.outcome, 0) + 1
    connects = [c.connected - c.started for c in everything if c.connected is not None]
    answers = [c.finished - c.started for c in everything if c.outcome == "200" and c.finished]
    print(f"{ROUNDS} bursts of {BURST} connections to /metrics of `zibrato backend prometheus`")
    print("outcomes:", ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())))
    slow = sum(1 for seconds in connects if seconds >= 0.9)
    print(f"connect: {quantiles(connects)}; {slow} of {len(connects)} waited >= 0.9 s")
    print(f"full answer (200): {quantiles(answers)}")


if __name__ == "__main__":
    main()
