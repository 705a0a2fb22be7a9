"""The real servers the backends talk to, run for a test and read back.

* :class:`EtsyStatsd` - Etsy statsd (node) with a JSON backend of ours that prints what it
  holds at each of its flushes;
* :class:`CarbonCache` - Debian's carbon-cache writing whisper files under a temp dir,
  read back with the ``whisper`` module;
* :class:`Prometheus` - Debian's Prometheus scraping one target (directly, and by other
  names through it as a proxy), asked over its HTTP API.

``make test`` puts them in the venv (``.ci/get-servers``). Each listens on loopback ports
of its own (the OS picks a free port; where a server needs a port number up front, a port
the OS just handed out, tried again on a clash), is bounded in time, and is stopped by
its ``stop()``. Every wait has a deadline.
"""

from __future__ import annotations

import json
import math
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import whisper
from server_process import (
    CARBON_ROOT,
    PROMETHEUS,
    START_TIMEOUT,
    STATSD_JS,
    WAIT,
    ServerProcess,
    free_port,
    require,
    start_with_retries,
    wait_until,
)

JSON_BACKEND = Path(__file__).with_name("statsd_json_backend.js")


# -- Etsy statsd ---------------------------------------------------------------------------
@dataclass
class StatsdHolds:
    """What statsd held over all its flushes so far (counters and timer counts added up)."""

    counters: dict[str, float] = field(default_factory=dict)
    timers: dict[str, list[float]] = field(default_factory=dict)
    timer_counts: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)

    def counter(self, name: str) -> float:
        return self.counters.get(name, 0)


class EtsyStatsd:
    """Etsy statsd on a random loopback UDP port, flushing every ``flush_ms`` milliseconds.

    Its ``statsd.*`` counters (``bad_lines_seen``...) are among the counters.
    """

    def __init__(self, workdir: Path, flush_ms: int = 250) -> None:
        self.workdir = workdir
        self.flush_ms = flush_ms
        self.port = 0
        self.process: ServerProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EtsyStatsd:
        stats_js = require(STATSD_JS)
        self.process = start_with_retries(lambda: self._start(stats_js), "Etsy statsd")
        return self

    def _start(self, stats_js: Path) -> ServerProcess | None:
        self.port = free_port(socket.SOCK_DGRAM)
        config = self.workdir / "statsd-config.js"
        config.write_text(
            json.dumps(
                {
                    "address": "127.0.0.1",
                    "port": self.port,
                    "mgmt_address": "127.0.0.1",
                    "mgmt_port": free_port(),
                    "flushInterval": self.flush_ms,
                    "backends": [str(JSON_BACKEND)],
                    "deleteIdleStats": True,
                }
            )
        )
        process = ServerProcess(["node", str(stats_js), str(config)], self.workdir / "statsd.log")
        # Ours once a line sent to the port comes back in a flush (a clash kills statsd).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            deadline = time.monotonic() + START_TIMEOUT
            while process.popen.poll() is None:
                probe.sendto(b"zibrato_test.ready:1|c", ("127.0.0.1", self.port))
                if self._holds(process).counter("zibrato_test.ready"):
                    return process
                if time.monotonic() > deadline:
                    raise AssertionError(f"Etsy statsd did not start: {process!r}")
                time.sleep(0.1)
        process.stop()
        return None

    def holds(self) -> StatsdHolds:
        """Add up every flush statsd has printed so far."""
        assert self.process is not None
        return self._holds(self.process)

    @staticmethod
    def _holds(process: ServerProcess) -> StatsdHolds:
        held = StatsdHolds()
        text = process.text()
        for line in text[: text.rfind("\n") + 1].splitlines():  # complete lines only
            if not line.startswith("ZIBRATO-STATSD-FLUSH "):
                continue
            flush: dict[str, Any] = json.loads(line.split(" ", 1)[1])
            for name, value in flush["counters"].items():
                held.counters[name] = held.counters.get(name, 0) + value
            for name, values in flush["timers"].items():
                held.timers.setdefault(name, []).extend(values)
            for name, count in flush["timer_counters"].items():
                held.timer_counts[name] = held.timer_counts.get(name, 0) + count
            held.gauges.update(flush["gauges"])
        return held

    def wait_for(
        self, done: Callable[[StatsdHolds], bool], what: str, timeout: float = WAIT
    ) -> StatsdHolds:
        """Read statsd's flushes until ``done(holds)``; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            held = self.holds()
            if done(held):
                return held
            if time.monotonic() > deadline:
                raise AssertionError(f"statsd never held {what}; it holds {held}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# -- carbon-cache ----------------------------------------------------------------------------
CARBON_CONF = """\
[cache]
STORAGE_DIR = {storage}/
LOCAL_DATA_DIR = {storage}/whisper/
CONF_DIR = {conf}/
LOG_DIR = {storage}/log/
PID_DIR = {storage}/
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = 0
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 0
ENABLE_TAGS = False
CARBON_METRIC_INTERVAL = 0
LOG_LISTENER_CONNECTIONS = True
"""
# One point per second, kept for an hour: a whisper file keeps one value per timestamp.
STORAGE_SCHEMAS = "[everything]\npattern = .*\nretentions = 1s:1h\n"


class CarbonCache:
    """carbon-cache on a loopback port, whisper files under ``workdir``; restartable."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.port = 0
        self.process: ServerProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, same_port: bool = False) -> CarbonCache:
        """Start carbon (again, on its previous port with ``same_port``)."""
        script = require(CARBON_ROOT / "usr" / "bin" / "carbon-cache")
        if same_port:
            process = self._start(script, self.port)
            if process is None:
                raise AssertionError(f"carbon could not bind its port {self.port} again")
            self.process = process
        else:
            self.process = start_with_retries(
                lambda: self._start(script, free_port()), "carbon-cache"
            )
        return self

    def _start(self, script: Path, port: int) -> ServerProcess | None:
        self.port = port
        conf = self.workdir / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "carbon.conf").write_text(
            CARBON_CONF.format(storage=self.storage, conf=conf, port=port)
        )
        (conf / "storage-schemas.conf").write_text(STORAGE_SCHEMAS)
        log = self.workdir / "carbon.log"
        offset = len(log.read_text()) if log.exists() else 0  # a restart appends to it
        process = ServerProcess(
            [sys.executable, str(script), f"--config={conf / 'carbon.conf'}", "--debug", "start"],
            log,
            env={
                "PYTHONPATH": str(CARBON_ROOT / "usr" / "lib" / "python3" / "dist-packages"),
                # carbon's own protobuf code predates the protobuf the venv holds (for the
                # otlp and remote-write extras): the pure-Python runtime still loads it.
                "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            },
        )
        ready = rf"CarbonReceiverFactory starting on {port}\b"
        deadline = time.monotonic() + START_TIMEOUT
        while process.popen.poll() is None:
            if re.search(ready, process.text()[offset:]):
                return process
            if time.monotonic() > deadline:
                raise AssertionError(f"carbon-cache did not start: {process!r}")
            time.sleep(0.05)
        process.stop()  # it exited: reap it and close its log
        if "Address already in use" in process.text()[offset:]:
            return None
        raise AssertionError(f"carbon-cache exited: {process!r}")

    def stop(self) -> None:
        """Stop carbon (it writes what it caches first)."""
        if self.process is not None:
            self.process.stop()

    def points(self, path: str) -> dict[int, float]:
        """Return the points whisper holds for ``path`` (dotted), by timestamp."""
        file = self.storage / "whisper" / (path.replace(".", "/") + ".wsp")
        if not file.exists():
            return {}
        now = int(time.time())
        try:
            (start, _, step), values = whisper.fetch(str(file), now - 3500, now + 1)
        except whisper.CorruptWhisperFile:  # carbon is creating it right now
            return {}
        return {start + i * step: v for i, v in enumerate(values) if v is not None}

    def total(self, path: str) -> float:
        return math.fsum(self.points(path).values())

    def wait_total(self, path: str, expected: float, timeout: float = WAIT) -> None:
        """Wait until the points of ``path`` add up to ``expected``."""
        wait_until(
            lambda: self.total(path) == expected,
            f"{path} to add up to {expected} (it holds {self.points(path)})",
            timeout,
        )


# -- Prometheus ------------------------------------------------------------------------------
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: zibrato
    static_configs:
      - targets: ["{target}"]
"""
# A job that reaches its targets through an HTTP proxy: Prometheus then names the target
# host in the request (``GET http://NAME:PORT/metrics``, ``Host: NAME:PORT``) and connects
# to the proxy, so a server on loopback can be scraped "by a DNS name" that no resolver
# knows.
PROMETHEUS_PROXIED_JOB = """\
  - job_name: {job}
    proxy_url: "http://{proxy}"
    static_configs:
      - targets: ["{target}"]
"""


class Prometheus:
    """Prometheus scraping ``target`` (host:port serving /metrics) every second, or with no
    target, taking remote write on ``write_url`` (``--web.enable-remote-write-receiver``).

    ``listen`` is its loopback host (another 127.x address plays another host);
    ``proxied``: more jobs, ``{job name: NAME:PORT}``, each scraped through the HTTP proxy
    ``target`` (see ``PROMETHEUS_PROXIED_JOB``).
    """

    def __init__(
        self,
        workdir: Path,
        target: str | None = None,
        listen: str = "127.0.0.1",
        proxied: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.target = target
        self.listen = listen
        self.proxied = dict(proxied or {})
        self.url = ""
        self.starts = 0
        self.process: ServerProcess | None = None

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def start(self) -> Prometheus:
        binary = require(PROMETHEUS)
        config = self.workdir / "prometheus.yml"
        if self.target is None:
            config.write_text("global:\n  scrape_interval: 1s\n")
        else:
            config.write_text(
                PROMETHEUS_CONFIG.format(target=self.target)
                + "".join(
                    PROMETHEUS_PROXIED_JOB.format(job=job, proxy=self.target, target=target)
                    for job, target in self.proxied.items()
                )
            )
        self.process = ServerProcess(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address={self.listen}:0",  # it logs the port it got
                *(["--web.enable-remote-write-receiver"] if self.target is None else []),
            ],
            # A restart (same storage, new port) writes a log of its own.
            self.workdir / f"prometheus-{self.starts}.log",
        )
        self.starts += 1
        match = self.process.wait_for_log(r'msg="Listening on" address=(127\.\d+\.\d+\.\d+:\d+)')
        if match is None:
            raise AssertionError(f"Prometheus did not start: {self.process!r}")
        self.url = f"http://{match.group(1)}"
        wait_until(self._ready, "Prometheus to be ready", START_TIMEOUT)
        return self

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Evaluate ``expr`` now; return {sorted labels (no __name__): value}."""
        reply = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        assert body["status"] == "success", body
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(
                r["value"][1]
            )
            for r in body["data"]["result"]
        }

    def targets(self) -> dict[str, dict[str, Any]]:
        """Return the active targets by job name (``health``, ``lastError``...)."""
        reply = requests.get(f"{self.url}/api/v1/targets", timeout=10)
        body = reply.json()
        assert body["status"] == "success", body
        return {t["labels"]["job"]: t for t in body["data"]["activeTargets"]}

    def wait_query(
        self,
        expr: str,
        expected: dict[tuple[tuple[str, str], ...], float],
        timeout: float = WAIT,
    ) -> None:
        """Wait until ``expr`` evaluates to ``expected`` (after real scrapes)."""
        found: dict[tuple[tuple[str, str], ...], float] = {}

        def check() -> bool:
            nonlocal found
            found = self.query(expr)
            return found == expected

        try:
            wait_until(check, f"{expr} == {expected}", timeout)
        except AssertionError:
            raise AssertionError(f"{expr} is {found}, not {expected}") from None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
