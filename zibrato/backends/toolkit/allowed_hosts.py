"""Which ``Host`` headers the backends' HTTP servers answer (against DNS rebinding).

A DNS-rebinding page makes a browser on this machine send requests to a loopback server
under a name the attacker controls (``rebound.example`` resolving to 127.0.0.1), so that
the page may read the answers as its own. Such a request always carries that name in its
``Host`` header, never an address: answering only known names stops it. Accepted without
configuration:

* ``localhost`` and names under ``.localhost`` (loopback by RFC 6761: no outsider owns them);
* any IP address (``127.0.0.1:9102``, ``[::1]``, ``10.0.0.5``): an address cannot be
  rebound, so Prometheus scraping the host by its address always works;
* the host name the server listens on (``--listen metrics.internal:9102``);
* no ``Host`` header, or an empty one (HTTP/1.0 clients; no browser sends that).

Other names must be listed in the backend's ``allowed-hosts`` option: exact names
(``metrics.example.com``), ``.example.com`` for that domain and every name under it, or
``*`` for any name (no protection: for a server that only a trusted proxy reaches).
Ports are not compared.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

ANY = "*"
LOOPBACK_NAME = "localhost"
# The help of the ``allowed-hosts`` option, the same on every backend that serves HTTP.
OPTION_HELP = (
    "more names the Host header may carry, comma-separated: metrics.example.com, "
    ".example.com for a domain, * for any (default: none; localhost, IP addresses and "
    "the listen name are always accepted)"
)
# Letters, digits, hyphens and underscores (some internal names have them), dot-separated.
_NAME = re.compile(r"\.?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")
_MAX_NAME = 253


def parse_allowed_hosts(spec: object) -> tuple[str, ...]:
    """Return the entries of an ``allowed-hosts`` option, lowercased and checked.

    Takes a comma-separated string, a list of strings or None (settings are plain data of
    any type); raises ValueError naming the first entry that is not a host name, an IP
    address, ``.domain`` or ``*``.

    >>> parse_allowed_hosts("Metrics.example.com, .internal.example")
    ('metrics.example.com', '.internal.example')
    """
    if spec is None:
        return ()
    if isinstance(spec, bytes | bytearray | Mapping) or not isinstance(spec, Iterable):
        raise ValueError(f"allowed-hosts must be host names separated by commas, not {spec!r}")
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    entries: dict[str, None] = {}
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"allowed-hosts are host names (strings), not {part!r}")
        entry = part.strip().lower()
        if entry:
            entries[_checked_entry(entry)] = None
    return tuple(entries)


def _checked_entry(entry: str) -> str:
    if entry == ANY or _is_address(entry.strip("[]")):
        return entry.strip("[]")
    if ":" in entry:
        raise ValueError(f"allowed-hosts takes host names without a port, not {entry!r}")
    if not entry.isascii():
        raise ValueError(
            f"allowed-hosts takes ASCII host names (an international name in its xn-- "
            f"form), not {entry!r}"
        )
    if len(entry) > _MAX_NAME or _NAME.fullmatch(entry) is None or entry in (".", ".."):
        raise ValueError(
            "allowed-hosts takes host names (metrics.example.com), .domain for a domain "
            f"and the names under it, or * for any name; not {entry!r}"
        )
    return entry


def host_name(host_header: str) -> str:
    """Return the name or address part of a ``Host`` header, lowercased, port dropped.

    >>> host_name("[::1]:9102"), host_name("Metrics.Example:80")
    ('::1', 'metrics.example')
    """
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HostCheck:
    """Decide whether a request's ``Host`` header names this server (see the module doc).

    >>> check = HostCheck(("metrics.example.com",), listen_host="127.0.0.1")
    >>> check.allows("metrics.example.com:9102"), check.allows("rebound.example")
    (True, False)
    """

    def __init__(self, allowed: str | Iterable[str] | None, *, listen_host: str) -> None:
        entries = parse_allowed_hosts(allowed)
        self.any = ANY in entries
        self.entries = entries
        names = {entry.rstrip(".") for entry in entries if not entry.startswith(".")}
        names.add(LOOPBACK_NAME)
        if listen_host and not _is_address(listen_host):
            names.add(listen_host.lower().rstrip("."))
        self._names = frozenset(names)
        self._domains = tuple(
            entry.rstrip(".") for entry in (*entries, f".{LOOPBACK_NAME}") if entry[:1] == "."
        )

    def allows(self, host_header: str | None) -> bool:
        """Return whether a request with this ``Host`` header (None: none) may be answered."""
        if self.any or not host_header or not host_header.strip():
            return True
        name = host_name(host_header)
        if _is_address(name):
            return True
        name = name.rstrip(".")
        if name in self._names:
            return True
        return any(name.endswith(domain) or name == domain[1:] for domain in self._domains)

    def describe(self) -> str:
        """Return what is accepted, for the line logged at a first refusal."""
        listed = ", ".join(self.entries) if self.entries else "nothing more"
        return f"localhost, IP addresses, the listen name; allowed-hosts: {listed}"
