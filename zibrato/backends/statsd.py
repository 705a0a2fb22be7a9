"""``statsd``: send each rollup over UDP to a statsd server, many lines per packet.

Names are built by :mod:`zibrato.backends.toolkit.naming`, shared with the ``graphite`` backend,
so a series gets the same path whichever way it reaches Graphite. Packets are paced by
:mod:`zibrato.backends.toolkit.pacing`, because UDP receivers drop bursts without telling anyone.
"""

from __future__ import annotations

import math
import random
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar, Unpack

from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import Backend, BackendOptions, Option
from zibrato.backends.toolkit.naming import (
    clean_name,
    clean_tag_key,
    clean_tag_value,
    dotted_name,
    format_number,
    parse_address,
    series_tags,
    split_health,
)
from zibrato.backends.toolkit.pacing import paced

DEFAULT_ADDRESS = "127.0.0.1:8125"
DEFAULT_MAX_PACKET = 1432  # fits a 1500-byte Ethernet MTU with IPv6 + UDP headers
DEFAULT_MAX_SENT_VALUES = 1000
TAG_STYLES = ("name", "dogstatsd")
PACING_SHARE = 0.5  # a flush's packets are spread over this share of the flush interval
STOP_WINDOW = 0.25  # seconds: once stopping, what is left goes out within this
_INF = math.inf


class StatsdBackend(Backend):
    """Send every rollup to a statsd server (Etsy statsd, statsite, Telegraf, DogStatsD).

    >>> StatsdBackend(connect="tcp://127.0.0.1:5551", address="127.0.0.1:8125",
    ...               prefix="shop", tag_style="name").start()        # doctest: +SKIP

    Each series becomes statsd lines that the server aggregates again over its own flush:

    * counter: ``name:SUM|c`` - the sum of this flush interval;
    * gauge: ``name:VALUE|g``; a negative value is sent as ``name:0|g`` then
      ``name:-5|g`` (in one packet), since a leading ``-`` alone means "decrement";
    * timer: the recorded values in milliseconds, ``name:12.345|ms`` each, so the server
      computes its own percentiles. At most ``max_sent_values`` per series and flush
      (0: no limit): past that a uniform random sample is sent. Whenever fewer values
      go out than were recorded (this sample, or the aggregator's own), they carry
      ``|@RATE`` with RATE = sent / count, so the server's counts stay right. Values
      below 0 (a clock stepping back) are sent as 0, which statsd accepts, and counted
      in ``clamped_values``: the count stays right, only that value is bent (so are
      the absurd ones whose milliseconds would overflow a float);
    * distribution: like a timer but unscaled, as ``|ms`` with the default tag style
      (Etsy statsd counts ``|h`` and ``|d`` as counters) and as ``|d`` (a DogStatsD
      distribution, not clamped) with ``tag_style="dogstatsd"``;
    * set: ``name:N|g``, the number of distinct members in this flush interval;
    * the backend's own ``zibrato.backend.*`` series go first, so they are the last to
      suffer when the server is overwhelmed.

    Names (``tag_style="name"``, the default): ``[PREFIX.]NAME[.KEY.VALUE]...`` with the
    tags sorted by key; a series' source is the tag ``source`` (replacing a tag of that
    name). In NAME and PREFIX every character outside ``A-Z a-z 0-9 _ . -`` becomes ``_``
    and empty dot-separated parts are dropped; in each tag KEY and VALUE every character
    outside ``A-Z a-z 0-9 _ -`` (so dots too) becomes ``_``, and an empty one is ``_``.
    ``{"http.route": "/orders", "method": "GET"}`` on ``http.server.request.duration``
    gives ``http.server.request.duration.http_route._orders.method.GET``.

    With ``tag_style="dogstatsd"`` the name is ``[PREFIX.]NAME`` (same rule) and the tags
    follow as ``|#key:value,...`` (the source as ``source:VALUE`` here too), after any
    ``|@RATE``; keys keep ``A-Z a-z 0-9 _ . - /`` and values also ``:``, anything else
    becomes ``_``. Numbers are plain decimals (no exponent, 15 significant digits).

    Lines go out joined by newlines in UDP packets of at most ``max_packet`` bytes (a
    single longer line is sent alone). The first 16 packets of a flush go at once, the
    rest spread evenly over half the flush interval; once stopping, what is left goes
    within 0.25 s. The address is resolved once, on the first emit that succeeds in
    opening the socket. A failed send (each lost packet that the kernel reports) is
    counted in ``zibrato.backend.target_errors`` and never raised.
    """

    kind = "statsd"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "address", "statsd server host:port (default: %(default)s)", default=DEFAULT_ADDRESS
        ),
        Option("prefix", "prefix every metric name with PREFIX."),
        Option(
            "tag-style",
            "send tags folded into the name or as DogStatsD |#k:v (default: %(default)s)",
            default="name",
            choices=TAG_STYLES,
        ),
        Option(
            "max-packet",
            "largest UDP payload in bytes (default: %(default)s)",
            type=int,
            default=DEFAULT_MAX_PACKET,
        ),
        Option(
            "max-sent-values",
            "raw values sent per timer or distribution and flush; past it a uniform "
            "sample goes with |@rate (0: all; default: %(default)s)",
            type=int,
            default=DEFAULT_MAX_SENT_VALUES,
        ),
    )

    def __init__(
        self,
        *,
        address: str = DEFAULT_ADDRESS,
        prefix: str | None = None,
        tag_style: str = "name",
        max_packet: int = DEFAULT_MAX_PACKET,
        max_sent_values: int = DEFAULT_MAX_SENT_VALUES,
        rng: random.Random | None = None,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        if tag_style not in TAG_STYLES:
            raise ValueError(f"tag_style must be one of {TAG_STYLES}, not {tag_style!r}")
        if max_packet < 1:
            raise ValueError("max_packet must be positive")
        if max_sent_values < 0:
            raise ValueError("max_sent_values must not be negative (0: send every value)")
        self.address = address
        self.host, self.port = parse_address(address, default_port=8125)
        self.prefix = prefix
        self.tag_style = tag_style
        self.max_packet = max_packet
        self.max_sent_values = max_sent_values
        self.clamped_values = 0
        self.unsent_values = 0
        self._rng = rng or random.Random()
        self._socket: socket.socket | None = None
        self._send_lock = threading.Lock()

    def emit(self, rollup: Rollup) -> None:
        datagrams = list(packets(self.lines(rollup), self.max_packet))
        with self._send_lock:
            sock = self._open()
            if sock is None:
                return
            for packet in paced(
                datagrams,
                window=self.flush_interval * PACING_SHARE,
                hurry_window=STOP_WINDOW,
                wait=self.stop_event.wait,
            ):
                try:
                    sock.send(packet)
                except OSError as exc:  # ECONNREFUSED (from ICMP), EAGAIN, ENOBUFS...
                    self.count_target_error(exc)

    def target_counters(self) -> Mapping[str, float]:
        return {"clamped_values": self.clamped_values, "unsent_values": self.unsent_values}

    def describe(self) -> str:
        return f"sending to statsd at {self.host}:{self.port} (UDP)"

    def close_target(self) -> None:
        with self._send_lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _open(self) -> socket.socket | None:
        if self._socket is not None:
            return self._socket
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self.count_target_error(exc)
            return None
        try:
            sock.setblocking(False)
            # A connected UDP socket reports ICMP "port unreachable" as ECONNREFUSED.
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            self.count_target_error(exc)
            return None
        self._socket = sock
        return sock

    # -- rendering ---------------------------------------------------------------------
    def lines(self, rollup: Rollup) -> list[str]:
        """Return the statsd lines of one rollup, the backend's own health first.

        A negative gauge's two lines come as one string, so they share a packet.
        """
        health, data = split_health(rollup.series, self.kind)
        out: list[str] = []
        for series in (*health, *data):
            if self.tag_style == "name":
                name, suffix = dotted_name(series, self.prefix), ""
            else:
                name, suffix = clean_name(series.name, self.prefix), dogstatsd_tags(series)
            # a set: its distinct members, a gauge
            if series.type in (SeriesType.COUNTER, SeriesType.GAUGE, SeriesType.SET):
                out.extend(scalar_lines(series, name, suffix))
            else:
                out.extend(self._value_lines(series, name, suffix))
        return out

    def _value_lines(self, series: Series, name: str, suffix: str) -> Iterator[str]:
        values = series.values
        count = series.stats.get("count", len(values))
        if self.max_sent_values and len(values) > self.max_sent_values:
            self.unsent_values += len(values) - self.max_sent_values
            values = self._rng.sample(values, self.max_sent_values)
        if series.type == SeriesType.TIMER:
            scale, kind = 1000.0, "ms"
        else:
            scale, kind = 1.0, "ms" if self.tag_style == "name" else "d"
        clamp = kind == "ms"
        if values and count > len(values):
            kind += "|@" + format_number(len(values) / count)
        for value in values:
            value *= scale
            if clamp and value < 0:
                self.clamped_values += 1
                value = 0
            elif value in (_INF, -_INF):  # seconds that overflow as milliseconds
                self.clamped_values += 1
                value = math.copysign(sys.float_info.max, value)
            yield f"{name}:{format_number(value)}|{kind}{suffix}"


def scalar_lines(series: Series, name: str, suffix: str = "") -> Iterator[str]:
    """Yield the statsd line of a counter, gauge or set; ``suffix`` (``|#tags``) ends it."""
    stats = series.stats
    if series.type == SeriesType.COUNTER:
        yield f"{name}:{format_number(stats['sum'])}|c{suffix}"
    elif stats["value"] < 0:
        yield f"{name}:0|g{suffix}\n{name}:{format_number(stats['value'])}|g{suffix}"
    else:
        yield f"{name}:{format_number(stats['value'])}|g{suffix}"


def packets(lines: Iterable[str], max_packet: int) -> Iterator[bytes]:
    """Join ``lines`` with newlines into payloads of at most ``max_packet`` bytes each.

    A line longer than ``max_packet`` makes a payload of its own.
    """
    batch: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode()
        if batch and size + 1 + len(data) > max_packet:
            yield b"\n".join(batch)
            batch, size = [], 0
        size += len(data) + (1 if batch else 0)
        batch.append(data)
    if batch:
        yield b"\n".join(batch)


# -- names shared with the graphite backend -------------------------------------------
def dogstatsd_tags(series: Series) -> str:
    """Return ``|#key:value,...`` for the tags and source of ``series``, or ``""``."""
    tags = series_tags(series)
    if not tags:
        return ""
    return "|#" + ",".join(f"{clean_tag_key(k)}:{clean_tag_value(v)}" for k, v in tags.items())
