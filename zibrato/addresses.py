"""Where the pieces meet by default, and checks for the addresses users give.

Every default address lives here once: publishers connect to ``DEFAULT_FRONTEND``,
subscribers and backends to ``DEFAULT_BACKEND``. :func:`check_endpoint` turns a mistyped
ZeroMQ address into one clear :class:`~zibrato.errors.ConfigError` before any socket sees
it (libzmq's own messages, such as "Invalid argument", do not say what to fix), and
:func:`connect_address` is the one rule for reaching a broker from the address it binds.
"""

from __future__ import annotations

from zibrato.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_FRONTEND_PORT = 5550
DEFAULT_BACKEND_PORT = 5551
DEFAULT_FRONTEND = f"tcp://{DEFAULT_HOST}:{DEFAULT_FRONTEND_PORT}"
DEFAULT_BACKEND = f"tcp://{DEFAULT_HOST}:{DEFAULT_BACKEND_PORT}"

TRANSPORTS = ("tcp", "ipc", "inproc")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# A broker bound to every interface is reached on loopback from the same host.
WILDCARD_HOSTS = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}
# Ports a broker may bind but nobody can connect to as written: the system picks one.
PICKED_PORTS = ("0", "*")
# How much of a bad value an error message shows (a huge string stays one short line).
SHOWN_CHARACTERS = 60


def shown(value: object) -> str:
    """Return ``repr(value)``, cut to :data:`SHOWN_CHARACTERS` (for one-line errors)."""
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[: SHOWN_CHARACTERS - 3]}... ({len(text)} characters)"


def check_endpoint(address: object, *, bind: bool = False) -> str:
    """Return ``address`` if it is a usable ZeroMQ endpoint; raise ConfigError if not.

    ``tcp://HOST:PORT`` (``PORT`` 0 or ``*`` only when binding), ``ipc://PATH`` or
    ``inproc://NAME``. Port numbers are ASCII digits: ``int()`` would take an Arabic-Indic
    five, and libzmq would not.

    >>> check_endpoint("tcp://127.0.0.1:5550")
    'tcp://127.0.0.1:5550'
    """
    example = DEFAULT_FRONTEND
    if not isinstance(address, str) or "://" not in address:
        raise ConfigError(
            f"{shown(address)} is not a ZeroMQ address: use tcp://HOST:PORT, e.g. {example}"
        )
    transport, _, rest = address.partition("://")
    if transport not in TRANSPORTS:
        raise ConfigError(
            f"{shown(address)}: unknown transport {shown(transport)}; use tcp://HOST:PORT, "
            f"e.g. {example}"
        )
    if not rest or not address.isprintable():
        what = "path" if transport == "ipc" else "host"
        raise ConfigError(f"{shown(address)} names no usable {what}")
    if transport != "tcp":
        return address
    host, colon, port = rest.rpartition(":")
    if not colon:
        raise ConfigError(f"{shown(address)} has no port: use tcp://HOST:PORT, e.g. {example}")
    if not host or host.startswith("[") != host.endswith("]"):
        raise ConfigError(
            f"{shown(address)} has no valid host: use tcp://HOST:PORT, e.g. {example}"
        )
    if bind and port == "*":
        return address
    if (
        not (port.isascii() and port.isdigit())
        or int(port) > 65535
        or (int(port) == 0 and not bind)
    ):
        raise ConfigError(
            f"{shown(address)}: {shown(port)} is not a port number (1-65535); use "
            f"tcp://HOST:PORT, e.g. {example}"
        )
    return address


def connect_address(bound: str) -> str | None:
    """Return where a client on this host connects to reach a broker bound at ``bound``.

    A wildcard host (``*``, ``0.0.0.0``, ``::``, ``[::]``) is reached on loopback; a port
    the system picks (``0``, ``*``) cannot be known in advance: None. ``ipc`` and
    ``inproc`` addresses are the same on both sides.

    >>> connect_address("tcp://0.0.0.0:6000"), connect_address("tcp://127.0.0.1:0")
    ('tcp://127.0.0.1:6000', None)
    """
    transport, _, rest = bound.partition("://")
    if transport != "tcp":
        return bound
    host, _, port = rest.rpartition(":")
    if port in PICKED_PORTS:
        return None
    return f"tcp://{WILDCARD_HOSTS.get(host, host)}:{port}"


def is_loopback(address: str) -> bool:
    """Return whether a tcp ``address`` names a loopback host (ipc and inproc are local)."""
    transport, _, rest = address.partition("://")
    if transport != "tcp":
        return True
    host = rest.rpartition(":")[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")
