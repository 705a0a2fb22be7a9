"""Fixtures for the backend tests (helper functions are in ``backend_support.py``).

* ``inproc_broker``: a :class:`zibrato.broker.Broker` in this process on OS-chosen loopback
  ports; yields ``(frontend, backend)``. (``broker`` from ``tests/conftest.py`` is a
  ``zibrato broker`` subprocess instead.)
* ``receiver``: an HTTP :class:`http_receiver.Receiver` on a loopback port, for the
  backends that push (the push toolkit, otlp, remote_write).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_receiver import Receiver

from zibrato.broker import Broker


@pytest.fixture
def inproc_broker() -> Iterator[tuple[str, str]]:
    b = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    addresses = b.start()
    yield addresses
    b.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()
