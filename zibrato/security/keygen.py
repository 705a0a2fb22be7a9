"""``zibrato keys``: write a directory of CURVE keys (layout: :mod:`zibrato.security.curve`).

Every key file is mode 0600 from the moment it exists (it is made in a private scratch
directory and moved into place), every directory made is 0700, and existing keys are
never replaced unless asked.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import zmq.auth

from zibrato.errors import ConfigError
from zibrato.security.curve import (
    AUTHORIZED,
    BROKER,
    CLIENT,
    CURVE_ENV,
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    PathLike,
    shown_path,
)

KEY_FILE_MODE = 0o600
KEYS_DIR_MODE = 0o700
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def write_keys(
    directory: PathLike, *, client: str | None = None, force: bool = False
) -> list[Path]:
    """Write a broker key pair and a client key pair into ``directory``; return the files.

    Without ``client``: ``broker.*``, ``client.*`` and ``authorized/client.key``, refusing to
    replace existing keys unless ``force``. With ``client=NAME``: the broker's keys if
    missing, and a ready-to-copy ``NAME/`` folder whose public key goes to
    ``authorized/NAME.key`` (``force`` replaces NAME's keys only). Every file is mode 0600;
    directories we create are 0700.
    """
    root = Path(directory)
    if client is not None and (not _CLIENT_NAME.fullmatch(client) or client == AUTHORIZED):
        raise ConfigError(
            f"{client!r} is not a usable client name: letters, digits, '.', '_' or '-' "
            f"(at most 64), not {AUTHORIZED!r}"
        )
    broker_files = [root / f"{BROKER}{suffix}" for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX)]
    client_dir = root if client is None else root / client
    client_files = [client_dir / f"{CLIENT}{suffix}" for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX)]
    ours = broker_files + client_files if client is None else client_files
    existing = [path for path in ours if path.exists()]
    if existing and not force:
        names = ", ".join(shown_path(path) for path in existing)
        raise ConfigError(
            f"keys exist already ({names}): keep them, or pass --force to replace them "
            "(then every client needs the new files)"
        )
    try:
        return _write_key_files(
            root, client, client_dir, broker_files, replace_broker=client is None
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot write keys in {shown_path(root)}: {exc.strerror or exc}; choose a directory "
            "you can write"
        ) from None


def _write_key_files(
    root: Path,
    client: str | None,
    client_dir: Path,
    broker_files: list[Path],
    *,
    replace_broker: bool,
) -> list[Path]:
    for folder in (root, root / AUTHORIZED, client_dir):
        _make_private_dir(folder)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=root, prefix=".zibrato-keys-") as scratch:
        # The scratch directory is 0700, so no key is readable by others at any moment.
        if replace_broker or not all(path.exists() for path in broker_files):
            written += _install_pair(Path(scratch), BROKER, root)
        written += _install_pair(Path(scratch), CLIENT, client_dir)
        public = client_dir / f"{CLIENT}{PUBLIC_SUFFIX}"
        written.append(
            _install_copy(
                public, root / AUTHORIZED / f"{client or CLIENT}{PUBLIC_SUFFIX}", Path(scratch)
            )
        )
        if client is not None:
            broker_public = root / f"{BROKER}{PUBLIC_SUFFIX}"
            written.append(
                _install_copy(broker_public, client_dir / broker_public.name, Path(scratch))
            )
    return written


def _make_private_dir(folder: Path) -> None:
    if folder.is_dir():
        return
    folder.mkdir(mode=KEYS_DIR_MODE, parents=True)
    folder.chmod(KEYS_DIR_MODE)


def _install_pair(scratch: Path, name: str, target_dir: Path) -> list[Path]:
    public, secret = zmq.auth.create_certificates(scratch, name)
    return [_install(Path(path), target_dir / Path(path).name) for path in (public, secret)]


def _install_copy(source: Path, target: Path, scratch: Path) -> Path:
    staged = scratch / f"copy-{target.name}"
    shutil.copyfile(source, staged)
    return _install(staged, target)


def _install(staged: Path, target: Path) -> Path:
    staged.chmod(KEY_FILE_MODE)
    os.replace(staged, target)
    return target


def usage_lines(root: PathLike, client: str | None = None) -> list[str]:
    """Return how to use the keys ``zibrato keys`` just wrote."""
    root = Path(root)
    use = f"then Zibrato(curve=DIR), {CURVE_ENV}=DIR, or --curve DIR for zibrato backend / tail"
    if client is not None:
        return [
            f"copy {shown_path(root / client)} to {client}'s host (broker.key and its own key "
            f"pair), {use}",
            f"restart the broker to let {client} in; remove "
            f"{shown_path(root / AUTHORIZED / (client + PUBLIC_SUFFIX))} and restart to shut "
            "it out",
        ]
    return [
        f"on the broker's host: zibrato run --curve {shown_path(root)} (or zibrato broker "
        f"--curve {shown_path(root)}); "
        f"it accepts the clients whose public key is in {shown_path(root / AUTHORIZED)}",
        f"on each client's host: a directory with {BROKER}{PUBLIC_SUFFIX} and "
        f"{CLIENT}{SECRET_SUFFIX} from {shown_path(root)}, {use}",
        f"never copy {BROKER}{SECRET_SUFFIX} off the broker's host; one key pair per client "
        f"host: zibrato keys {shown_path(root)} --client NAME",
    ]
