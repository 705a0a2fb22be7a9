"""A real OTLP receiver for the otlp backend's tests: rotel, read back from its debug log.

rotel (``pip install rotel``: an OpenTelemetry collector written in Rust, shipped as a
Python wheel holding the ``rotel-agent`` binary) takes OTLP/HTTP and OTLP/gRPC, and with
``--debug-log metrics --debug-log-verbosity detailed`` prints every metric it receives:
resource attributes, names, types, temporality, point attributes, values, histogram bounds
and bucket counts. :class:`Rotel` starts it on loopback ports and parses that log into
:class:`Received` points. Every wait has a deadline.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from server_process import START_TIMEOUT, WAIT, ServerProcess, free_port, start_with_retries

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ATTRIBUTE = re.compile(r"^\s+-> (.+?): (?:Str|Int|Double|Bool)\((.*)\)$")


def rotel_binary() -> Path:
    """The ``rotel-agent`` binary inside the installed ``rotel`` package."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        raise AssertionError("rotel is missing: pip install -e '.[test]' (make test does)")
    return Path(spec.origin).with_name("rotel-agent")


@dataclass
class Received:
    """One data point as rotel logged it, with its metric and resource."""

    resource: dict[str, str]
    name: str
    type: str  # Sum, Gauge, Histogram
    temporality: str  # CUMULATIVE, DELTA or "" (gauges)
    unit: str
    attributes: dict[str, str] = field(default_factory=dict)
    start: int = 0
    time: int = 0
    value: float | None = None
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bounds: list[float] = field(default_factory=list)
    buckets: list[int] = field(default_factory=list)


def parse(log: str) -> list[Received]:
    """Every data point of a rotel debug log (complete lines only)."""
    points: list[Received] = []
    resource: dict[str, str] = {}
    metric: dict[str, str] = {}
    section = ""
    point: Received | None = None
    for raw in log[: log.rfind("\n") + 1].splitlines():
        line = _ANSI.sub("", raw)
        attribute = _ATTRIBUTE.match(line)
        if line.startswith("ResourceMetrics #"):
            resource, section = {}, "resource"
        elif line.startswith("Descriptor:"):
            metric, section = {}, "descriptor"
        elif line.startswith(("NumberDataPoints #", "HistogramDataPoints #")):
            point = Received(
                dict(resource),
                metric.get("Name", ""),
                metric.get("DataType", ""),
                metric.get("AggregationTemporality", "").removeprefix("AGGREGATION_TEMPORALITY_"),
                metric.get("Unit", ""),
            )
            points.append(point)
            section = "point"
        elif attribute and section == "resource":
            resource[attribute[1]] = attribute[2]
        elif attribute and section == "point" and point is not None:
            point.attributes[attribute[1]] = attribute[2]
        elif line.startswith("     -> ") and section == "descriptor":
            key, _, value = line[8:].partition(": ")
            metric[key] = value
        elif point is not None and section == "point":
            _point_field(point, line)
    return points


def _point_field(point: Received, line: str) -> None:
    key, _, value = line.partition(": ")
    if key == "StartTimestamp":
        point.start = int(value)
    elif key == "Timestamp":
        point.time = int(value)
    elif key == "Value":
        point.value = float(value)
    elif key == "Count":
        point.count = int(value)
    elif key in ("Sum", "Min", "Max"):
        setattr(point, key.lower(), float(value))
    elif key.startswith("ExplicitBounds #"):
        point.bounds.append(float(value))
    elif key.startswith("Buckets #"):
        point.buckets.append(int(line.rpartition("Count: ")[2]))


class Rotel:
    """rotel-agent on loopback ports (``listen``: another 127.x address plays another host),
    printing what it receives; ``endpoint`` is its OTLP/HTTP metrics URL."""

    def __init__(self, workdir: Path, listen: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.listen = listen
        self.port = 0
        self.process: ServerProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.listen}:{self.port}/v1/metrics"

    def start(self, *, same_port: bool = False) -> Rotel:
        """Start rotel (again, on its previous port with ``same_port``)."""
        if same_port:
            process = self._start(self.port)
            if process is None:
                raise AssertionError(f"rotel could not bind its port {self.port} again")
            self.process = process
        else:
            self.process = start_with_retries(lambda: self._start(free_port()), "rotel")
        return self

    def _start(self, port: int) -> ServerProcess | None:
        self.port = port
        log = self.workdir / "rotel.log"
        offset = len(log.read_text()) if log.exists() else 0  # a restart appends to it
        process = ServerProcess(
            [
                str(rotel_binary()),
                "start",
                f"--otlp-http-endpoint={self.listen}:{port}",
                f"--otlp-grpc-endpoint={self.listen}:{free_port()}",
                "--exporter=blackhole",
                "--debug-log=metrics",
                "--debug-log-verbosity=detailed",
                "--batch-timeout=50ms",
                f"--pid-file={self.workdir / 'rotel.pid'}",
                f"--log-file={self.workdir / 'rotel-agent.log'}",
            ],
            log,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while process.popen.poll() is None:
            text = process.text()[offset:]
            if "Starting Rotel" in text and self._listening(port):
                return process
            if time.monotonic() > deadline:
                raise AssertionError(f"rotel did not start: {process!r}")
            time.sleep(0.05)
        if "in use" in process.text()[offset:].lower():
            process.stop()
            return None
        raise AssertionError(f"rotel exited: {process!r}")

    def _listening(self, port: int) -> bool:
        import socket

        try:
            with socket.create_connection((self.listen, port), timeout=0.5):
                return True
        except OSError:
            return False

    def received(self) -> list[Received]:
        assert self.process is not None
        return parse(self.process.text())

    def wait_for(
        self, done: Callable[[list[Received]], bool], what: str, timeout: float = WAIT
    ) -> list[Received]:
        """Read rotel's log until ``done(points)``; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            points = self.received()
            if done(points):
                return points
            if time.monotonic() > deadline:
                names = sorted({point.name for point in points})
                raise AssertionError(f"rotel never received {what}; it has {names}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
