"""A real Redis server for a test: Debian's ``redis-server`` (``.ci/get-servers`` installs it)
on a random loopback port, with no persistence, always stopped.

    with redis_server(tmp_path) as redis:
        redis.url        # "redis://127.0.0.1:PORT/0"
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 15.0


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """Start ``redis-server`` on a free loopback port (retried if the port is taken)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise AssertionError("redis-server is missing: run `make test` (.ci/get-servers)")
    for _ in range(3):
        port = _free_port()
        log = (workdir / f"redis-{port}.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                *("--bind", "127.0.0.1", "--port", str(port), "--save", ""),
                *("--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = RedisServer(port, process)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and not server.ping() and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None and server.ping():
            try:
                yield server
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
                log.close()
            return
        process.kill()
        process.wait(10)
        log.close()
    raise AssertionError("redis-server did not start on a free port three times")
