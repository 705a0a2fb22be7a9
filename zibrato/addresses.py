"""Where the pieces meet by default, and checks for the addresses users give.

Every default address lives here once: publishers connect to ``DEFAULT_FRONTEND``,
subscribers and backends to ``DEFAULT_BACKEND``. :func:`check_endpoint` turns a mistyped
ZeroMQ address into one clear :class:`~zibrato.errors.ConfigError` before any socket sees
it (libzmq's own messages, such as "Invalid argument", do not say what to fix).
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


def check_endpoint(address: object, *, bind: bool = False) -> str:
    """Return ``address`` if it is a usable ZeroMQ endpoint; raise ConfigError if not.

    ``tcp://HOST:PORT`` (``PORT`` 0 or ``*`` only when binding), ``ipc://PATH`` or
    ``inproc://NAME``.

    >>> check_endpoint("tcp://127.0.0.1:5550")
    'tcp://127.0.0.1:5550'
    """
    example = DEFAULT_FRONTEND
    if not isinstance(address, str) or "://" not in address:
        raise ConfigError(
            f"{address!r} is not a ZeroMQ address: use tcp://HOST:PORT, e.g. {example}"
        )
    transport, _, rest = address.partition("://")
    if transport not in TRANSPORTS:
        raise ConfigError(
            f"{address!r}: unknown transport {transport!r}; use tcp://HOST:PORT, e.g. {example}"
        )
    if not rest:
        raise ConfigError(f"{address!r} names no {'path' if transport == 'ipc' else 'host'}")
    if transport != "tcp":
        return address
    host, colon, port = rest.rpartition(":")
    if not colon:
        raise ConfigError(f"{address!r} has no port: use tcp://HOST:PORT, e.g. {example}")
    if not host or host.startswith("[") != host.endswith("]"):
        raise ConfigError(f"{address!r} has no valid host: use tcp://HOST:PORT, e.g. {example}")
    if bind and port == "*":
        return address
    if not port.isdigit() or int(port) > 65535 or (int(port) == 0 and not bind):
        raise ConfigError(
            f"{address!r}: {port!r} is not a port number (1-65535); use tcp://HOST:PORT, "
            f"e.g. {example}"
        )
    return address


def is_loopback(address: str) -> bool:
    """Return whether a tcp ``address`` names a loopback host (ipc and inproc are local)."""
    transport, _, rest = address.partition("://")
    if transport != "tcp":
        return True
    host = rest.rpartition(":")[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")
