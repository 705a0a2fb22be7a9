"""``statsd``: send each rollup over UDP to a statsd server, many lines per packet.

Names are built by :mod:`zibrato.backends.naming`, shared with the ``graphite`` backend,
so a series gets the same path whichever way it reaches Graphite.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from zibrato.aggregation import COUNTER, GAUGE, TIMER, Rollup, Series
from zibrato.backends.base import Backend, Option
from zibrato.backends.naming import (
    clean_name,
    clean_tag_key,
    clean_tag_value,
    dotted_name,
    format_number,
    parse_address,
    series_tags,
)

DEFAULT_ADDRESS = "127.0.0.1:8125"
DEFAULT_MAX_PACKET = 1432  # fits a 1500-byte Ethernet MTU with IPv6 + UDP headers
TAG_STYLES = ("name", "dogstatsd")


class StatsdBackend(Backend):
    """Send every rollup to a statsd server (Etsy statsd, statsite, Telegraf, DogStatsD).

    >>> StatsdBackend(connect="tcp://127.0.0.1:5551", address="127.0.0.1:8125",
    ...               prefix="shop", tag_style="name").start()        # doctest: +SKIP

    Each series becomes statsd lines that the server aggregates again over its own flush:

    * counter: ``name:SUM|c`` - the sum of this flush interval;
    * gauge: ``name:VALUE|g``; a negative value is sent as ``name:0|g`` then
      ``name:-5|g`` (in one packet), since a leading ``-`` alone means "decrement";
    * timer: every recorded value in milliseconds, one ``name:12.345|ms`` line each, so the
      server computes its own percentiles; when the aggregator kept only a sample of the
      values (``count`` above ``len(values)``), the kept values carry ``|@RATE`` with
      RATE = kept / count, so the server's counts stay right;
    * distribution: like a timer with ``|h`` and the values unscaled;
    * the backend's own ``zibrato.backend.*`` series are sent like any other.

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
    single longer line is sent alone). The address is resolved once, on the first emit
    that succeeds in opening the socket. A failed send (each lost packet that the
    kernel reports) is counted in ``zibrato.backend.target_errors`` and never raised.
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
    )

    def __init__(
        self,
        *,
        address: str = DEFAULT_ADDRESS,
        prefix: str | None = None,
        tag_style: str = "name",
        max_packet: int = DEFAULT_MAX_PACKET,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if tag_style not in TAG_STYLES:
            raise ValueError(f"tag_style must be one of {TAG_STYLES}, not {tag_style!r}")
        if max_packet < 1:
            raise ValueError("max_packet must be positive")
        self.address = address
        self.host, self.port = parse_address(address, default_port=8125)
        self.prefix = prefix
        self.tag_style = tag_style
        self.max_packet = max_packet
        self._socket: socket.socket | None = None
        self._send_lock = threading.Lock()

    def emit(self, rollup: Rollup) -> None:
        lines = self.lines(rollup)
        with self._send_lock:
            sock = self._open()
            if sock is None:
                return
            for packet in packets(lines, self.max_packet):
                try:
                    sock.send(packet)
                except OSError as exc:  # ECONNREFUSED (from ICMP), EAGAIN, ENOBUFS...
                    self.count_target_error(exc)

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
        """Return the statsd lines of one rollup (a negative gauge's two lines as one)."""
        out: list[str] = []
        for series in rollup.series:
            if self.tag_style == "name":
                name, suffix = dotted_name(series, self.prefix), ""
            else:
                name, suffix = clean_name(series.name, self.prefix), dogstatsd_tags(series)
            out.extend(series_lines(series, name, suffix))
        return out


def series_lines(series: Series, name: str, suffix: str = "") -> Iterator[str]:
    """Yield the statsd lines of one series; ``suffix`` (``|#tags``) ends each line."""
    stats = series.stats
    if series.type == COUNTER:
        yield f"{name}:{format_number(stats['sum'])}|c{suffix}"
    elif series.type == GAUGE:
        value = stats["value"]
        if value < 0:
            yield f"{name}:0|g{suffix}\n{name}:{format_number(value)}|g{suffix}"
        else:
            yield f"{name}:{format_number(value)}|g{suffix}"
    else:
        scale, kind = (1000.0, "ms") if series.type == TIMER else (1.0, "h")
        kept = len(series.values)
        count = stats.get("count", kept)
        if kept and count > kept:
            kind += "|@" + format_number(kept / count)
        for value in series.values:
            yield f"{name}:{format_number(value * scale)}|{kind}{suffix}"


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
