"""The demo's two web sites, each a gunicorn child serving on a socket the runner binds.

The runner binds each listening socket itself and hands it to gunicorn (``fd://N``): a
taken port is one clear line before anything starts, and port 0 (tests) gives a real
port that is known at once, without parsing gunicorn's log.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from demo_site.children import Child
from zibrato.backends.toolkit.httpserver import base_url, parse_listen
from zibrato.errors import AddressInUse, ConfigError

THREADS = 4  # per gunicorn worker process: the slow page must not hold up the others
GRACEFUL_TIMEOUT = 2  # seconds gunicorn gives a request in flight when told to stop
READY_TIMEOUT = 60.0  # a loaded machine may take a while to import Django
_READY_POLL = 0.2


def listening_socket(listen: str, *, what: str, option: str) -> socket.socket:
    """Bind and listen on ``listen`` (HOST:PORT) for a child; one clear line if it cannot."""
    host, port = parse_listen(listen)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        where = f"{what} cannot listen on {listen}"
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(
                f"{where}: the address is already in use; stop what holds it "
                f"or choose another with {option}"
            ) from None
        raise ConfigError(f"{where}: {exc.strerror or exc}; check {option}") from None
    return listener


@dataclass
class WebSite:
    """One WSGI app served by gunicorn with ``workers`` processes."""

    key: str  # "django": its option (--django-listen), log and traffic flag are named after it
    title: str  # "Django shop"
    app: str  # gunicorn's APP_MODULE, "demo_site.wsgi:application"
    listen: str  # HOST:PORT
    workers: int
    logs: Path
    url: str = ""
    child: Child | None = field(default=None, repr=False)

    @property
    def option(self) -> str:
        """The runner's option that sets ``listen`` (named in errors)."""
        return f"--{self.key}-listen"

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.key}.log"

    def start(self, env: dict[str, str]) -> Child:
        """Bind the socket, start gunicorn on it, and return the child (not yet answering)."""
        listener = self._bind()
        with listener:
            self.url = base_url(*listener.getsockname()[:2]) + "/"
            self.child = Child(
                self.title,
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    f"--bind=fd://{listener.fileno()}",
                    f"--workers={self.workers}",
                    f"--threads={THREADS}",
                    f"--graceful-timeout={GRACEFUL_TIMEOUT}",
                    # Two sites (and parallel tests) must not fight over ~/.gunicorn's socket.
                    "--no-control-socket",
                    self.app,
                ],
                log_path=self.log_path,
                env=env,
                pass_fds=[listener.fileno()],
            )
            self.child.start()
        # Our copy is closed: gunicorn holds the socket from here on.
        return self.child

    def _bind(self) -> socket.socket:
        return listening_socket(self.listen, what=f"the {self.title}", option=self.option)

    def wait_until_answering(self, stop: threading.Event, timeout: float = READY_TIMEOUT) -> None:
        """Return once the site answers HTTP (or ``stop`` is set); raise ConfigError if the
        server exits or stays silent for ``timeout`` seconds."""
        assert self.child is not None, "start() first"
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            if not self.child.running:
                raise ConfigError(
                    f"the {self.title} exited at startup (status {self.child.returncode}): "
                    f"{self.child.log_tail()} (whole log: {self.log_path})"
                )
            try:
                requests.get(self.url, timeout=2).close()
                return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the {self.title} did not answer at {self.url} within {timeout:g} s; "
                    f"see {self.log_path}"
                )
            stop.wait(_READY_POLL)
