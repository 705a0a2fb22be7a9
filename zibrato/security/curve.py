"""CURVE security for brokers reachable beyond loopback: key files, and who may connect.

``zibrato keys DIR`` (:mod:`zibrato.security.keygen`) writes a keys directory in ZeroMQ's
certificate format::

    DIR/broker.key          the broker's public key: every client needs it
    DIR/broker.key_secret   the broker's key pair: never leaves the broker's host
    DIR/client.key          a client's public key
    DIR/client.key_secret   a client's key pair: publishers, backends, ``zibrato tail``
    DIR/authorized/*.key    the public keys the broker accepts (client.key is one)
    DIR/NAME/               with ``--client NAME``: broker.key + NAME's own client pair,
                            ready to copy to that host (its public key is authorized/NAME.key)

A broker given DIR (``--curve DIR``) encrypts both of its sides and accepts only clients
whose public key is in ``DIR/authorized``; a client given DIR (``Zibrato(curve=DIR)``,
``--curve DIR`` or ``$ZIBRATO_CURVE``) proves itself with ``client.key_secret`` and
checks the broker against ``broker.key``. The sockets' side of this is elsewhere: keys
go on a socket in :mod:`zibrato.security.policy`, :mod:`zibrato.security.handshake`
explains refusals, and :mod:`zibrato.security.authenticator` is the broker's ZAP handler.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import zmq
import zmq.auth
from zmq.utils import z85

from zibrato.addresses import is_loopback
from zibrato.errors import ConfigError
from zibrato.text import printable

log = logging.getLogger("zibrato")

CURVE_ENV = "ZIBRATO_CURVE"
BROKER = "broker"
CLIENT = "client"
AUTHORIZED = "authorized"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_Z85_KEY_LENGTH = 40

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ClientKeys:
    """What a publisher or subscriber needs: its key pair and the broker's public key."""

    public: bytes
    secret: bytes = field(repr=False)
    broker: bytes
    directory: str


@dataclass(frozen=True)
class BrokerKeys:
    """What a broker needs: its key pair and the (raw, 32-byte) public keys it accepts."""

    public: bytes
    secret: bytes = field(repr=False)
    authorized: frozenset[bytes]
    directory: str

    @property
    def authorized_dir(self) -> str:
        return os.path.join(self.directory, AUTHORIZED)


def resolve(curve: object, environ: Mapping[str, str] = os.environ) -> Any:
    """Return the keys directory to use: ``curve`` if given, else ``$ZIBRATO_CURVE``, else None."""
    if curve is None:
        return environ.get(CURVE_ENV) or None
    return curve


def require_support(has: Callable[[str], bool] = zmq.has) -> None:
    """Raise ConfigError unless the libzmq in use can do CURVE."""
    if not has("curve"):
        raise ConfigError(
            f"the libzmq in use ({zmq.zmq_version()}) was built without CURVE support: "
            "reinstall pyzmq from its wheels (pip install --force-reinstall pyzmq), which "
            "bundle a libzmq that has it"
        )


# -- reading keys ----------------------------------------------------------------------------
def client_keys(curve: ClientKeys | object) -> ClientKeys:
    """Load a client's keys from the directory ``curve``; raise ConfigError saying what to fix."""
    if isinstance(curve, ClientKeys):
        return curve
    root, public, secret = _key_pair(curve, CLIENT)
    broker, _ = _read_key_file(root / f"{BROKER}{PUBLIC_SUFFIX}", secret=False)
    return ClientKeys(public=public, secret=secret, broker=broker, directory=str(root))


def broker_keys(curve: BrokerKeys | object) -> BrokerKeys:
    """Load a broker's keys from the directory ``curve``; raise ConfigError saying what to fix."""
    if isinstance(curve, BrokerKeys):
        return curve
    root, public, secret = _key_pair(curve, BROKER)
    folder = root / AUTHORIZED
    try:
        files = sorted(folder.glob(f"*{PUBLIC_SUFFIX}")) if folder.is_dir() else []
    except OSError:
        files = []
    fix = "remove it, or put a client's public .key file there"
    authorized = frozenset(
        z85.decode(_read_key_file(path, secret=False, fix=fix)[0]) for path in files
    )
    if not authorized:
        raise ConfigError(
            f"{shown_path(folder)} holds no client keys, so the broker would refuse everybody: run "
            f"`zibrato keys {shown_path(root)}` or copy each client's public .key file there"
        )
    return BrokerKeys(public=public, secret=secret, authorized=authorized, directory=str(root))


def _key_pair(curve: object, name: str) -> tuple[Path, bytes, bytes]:
    """Return (directory, public key, secret key) of the pair ``name`` in the keys directory."""
    root = _keys_dir(curve)
    require_support()
    public, secret = _read_key_file(root / f"{name}{SECRET_SUFFIX}", secret=True)
    assert secret is not None
    return root, public, secret


def _keys_dir(curve: object) -> Path:
    if not isinstance(curve, str | os.PathLike) or not os.fspath(curve):
        raise ConfigError(
            f"CURVE keys must be given as a directory path (see `zibrato keys DIR`), not {curve!r}"
        )
    root = Path(curve)
    if not root.is_dir():
        raise ConfigError(
            f"{shown_path(root)} is not a directory of CURVE keys: create one with "
            f"`zibrato keys {shown_path(root)}`"
        )
    return root


def _read_key_file(path: Path, *, secret: bool, fix: str = "") -> tuple[bytes, bytes | None]:
    """Return (public, secret) Z85 keys from one certificate file; ``fix`` says what to do."""
    fix = (
        fix
        or f"create keys with `zibrato keys {shown_path(path.parent)}` (or copy them from where "
        "they were made)"
    )
    if not path.is_file():
        raise ConfigError(f"{shown_path(path)} is missing: {fix}")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read {shown_path(path)} ({exc.strerror or exc}); {fix}"
        ) from None
    except (ValueError, IndexError):
        raise ConfigError(
            f"{shown_path(path)} is not a ZeroMQ certificate (no public-key line); {fix}"
        ) from None
    if not _is_z85_key(public) or (secret and not _is_z85_key(secret_key)):
        raise ConfigError(f"{shown_path(path)} holds a malformed CURVE key; {fix}")
    if secret:
        _warn_if_exposed(path)
    return public, secret_key


def shown_path(path: PathLike) -> str:
    """Return ``path`` fit for a one-line message (a newline in a name is escaped)."""
    return printable(os.fspath(path))


def _is_z85_key(key: bytes | None) -> bool:
    return key is not None and len(key) == _Z85_KEY_LENGTH and all(c in z85.Z85CHARS for c in key)


def _warn_if_exposed(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "zibrato: %s holds a secret key and other users may read it: chmod 600 %s", path, path
        )


def curve_line(curve: PathLike, *, broker: bool) -> str:
    """Return the startup line that says how a broker (or a backend) uses the keys in ``curve``."""
    root = Path(curve)
    if broker:
        return (
            f"CURVE on: clients must present a key from {shown_path(root / AUTHORIZED)} and need "
            f"{shown_path(root / (BROKER + PUBLIC_SUFFIX))}"
        )
    return f"CURVE on: connecting with {shown_path(root / (CLIENT + SECRET_SUFFIX))}"


# -- policy ----------------------------------------------------------------------------------
def check_exposure(addresses: Iterable[str], *, curve: bool, insecure: bool) -> str | None:
    """Refuse a broker address beyond loopback without CURVE unless ``insecure``.

    Returns the warning to give when ``insecure`` allows it (None when there is nothing
    to say); raises ConfigError with the one line to print when it is refused.
    """
    exposed = [address for address in addresses if not is_loopback(address)]
    if not exposed or curve:
        return None
    where = " and ".join(exposed)
    if not insecure:
        raise ConfigError(
            f"refusing to bind {where} without CURVE: it is reachable beyond loopback, so "
            "anyone who reaches it could publish or read metrics; create keys with "
            "`zibrato keys DIR` and pass --curve DIR (or set CURVE), bind 127.0.0.1, or "
            "pass --insecure (or set INSECURE) on a network you trust"
        )
    return (
        f"{where} is reachable beyond loopback without CURVE (--insecure): anyone who "
        "reaches it can publish or read metrics"
    )


def keys_for_broker(
    addresses: Iterable[str], *, curve: BrokerKeys | PathLike | None, insecure: bool
) -> BrokerKeys | None:
    """Return a broker's keys (None without CURVE) once its ``addresses`` pass the exposure rule.

    Raises ConfigError for an address beyond loopback without CURVE (unless ``insecure``,
    which logs a warning instead) and for keys that cannot be used.
    """
    warning = check_exposure(addresses, curve=curve is not None, insecure=insecure)
    if warning is not None:
        log.warning("zibrato: %s", warning)
    return broker_keys(curve) if curve is not None else None


class AdapterKeywords(NamedTuple):
    """Keywords for ``Zibrato(**client)`` and ``Runner(**runner)``."""

    client: dict[str, Any]
    runner: dict[str, Any]


def adapter_keywords(
    curve: object = None, *, insecure: object = False, prefix: str = "", check: bool = False
) -> AdapterKeywords:
    """Turn a framework's CURVE settings into client and runner keywords.

    ``curve`` is a keys directory or None (then ``$ZIBRATO_CURVE`` applies, to both);
    ``prefix`` names the settings in messages (``"ZIBRATO_"`` for Flask). Raises
    ConfigError with one line for a value of the wrong type, and with ``check`` for
    client keys that cannot be loaded from the directory (what system checks want).

    >>> adapter_keywords("/etc/zibrato/keys").client
    {'curve': '/etc/zibrato/keys'}
    """
    if curve is not None and not isinstance(curve, str | os.PathLike):
        raise ConfigError(
            f"{prefix}CURVE must be the path of a keys directory (see `zibrato keys DIR`), "
            f"not {curve!r}"
        )
    if not isinstance(insecure, bool):
        raise ConfigError(f"{prefix}INSECURE must be True or False, not {insecure!r}")
    path = resolve(curve)
    path = os.fspath(path) if path is not None else None
    if check and path is not None:
        try:
            client_keys(path)
        except ConfigError as exc:
            setting = f"{prefix}CURVE" if curve is not None else f"${CURVE_ENV}"
            raise ConfigError(f"{setting}: {exc}") from None
    return AdapterKeywords(client={"curve": path}, runner={"curve": path, "insecure": insecure})
