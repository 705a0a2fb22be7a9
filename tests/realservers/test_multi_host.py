"""Several "hosts" on loopback aliases (the whole of 127.0.0.0/8 is this machine's
loopback; nothing here reaches another address): publishers on 127.0.0.2 and 127.0.0.3
reach a broker on 127.0.0.4 over CURVE, whose backends push remote write to a real
Prometheus and OTLP to a real receiver, both on 127.0.0.5, the central engine.

The publishers connect from their own address (ZeroMQ's ``tcp://SOURCE:0;BROKER:PORT``),
with a key pair each, as ``zibrato keys --client NAME`` writes them; the broker is
``zibrato run``, its backends named on its command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PUBLISH, PUBLISH_TIMEOUT
from otlp_receiver import Rotel
from real_servers import Prometheus

from zibrato.security.keygen import write_keys

pytestmark = pytest.mark.realserver

BROKER_HOST, ENGINE_HOST = "127.0.0.4", "127.0.0.5"
PUBLISHERS = {"web-1": "127.0.0.2", "web-2": "127.0.0.3"}
WORKLOAD = [
    ["incr", ["shop.orders", 1], {"tags": {"shop": "eu"}}, 500],
    ["timing", ["shop.load", 0.02], {}, 50],
    ["observe", ["shop.items", 3], {}, 5],
    ["gauge", ["shop.depth", 7], {}, 1],
]


def publish_from(host: str, source: str, frontend: str, keys: Path) -> dict[str, Any]:
    """Publish WORKLOAD as ``source`` from the address ``host``; return the client's stats."""
    port = frontend.rpartition(":")[2]
    process = subprocess.run(
        [
            sys.executable,
            str(PUBLISH),
            f"tcp://{host}:0;{BROKER_HOST}:{port}",
            json.dumps({"source": source, "calls": WORKLOAD}),
        ],
        capture_output=True,
        text=True,
        timeout=PUBLISH_TIMEOUT,
        env={**os.environ, "ZIBRATO_CURVE": str(keys / source)},
    )
    assert process.returncode == 0, process
    stats: dict[str, Any] = json.loads(process.stdout)
    return stats


def test_publishers_on_two_hosts_reach_a_curve_broker_whose_backends_push_to_the_engines(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    keys = tmp_path / "keys"
    write_keys(keys)
    for source in PUBLISHERS:
        write_keys(keys, client=source)
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "rotel").mkdir()
    prometheus = Prometheus(tmp_path / "prometheus", listen=ENGINE_HOST)
    rotel = Rotel(tmp_path / "rotel", listen=ENGINE_HOST)
    try:
        prometheus.start()
        rotel.start()
        broker = run_cli(
            *("run", "--frontend", f"tcp://{BROKER_HOST}:0"),
            *("--backend-address", f"tcp://{BROKER_HOST}:0", "--curve", str(keys)),
            *("--flush", "0.5", "--backend", "remote-write", "--backend", "otlp"),
            *("--remote-write-url", prometheus.write_url, "--remote-write-instance", "broker-1"),
            *("--otlp-endpoint", rotel.endpoint),
        )
        frontend = broker.wait_line(r"publishers connect to (tcp://\S+);")[1]
        broker.wait_line("otlp", timeout=10)
        stats = [publish_from(host, source, frontend, keys) for source, host in PUBLISHERS.items()]
        assert all(not s["dropped"] and s["sent_events"] == 556 for s in stats), stats

        def labels(source: str, **extra: str) -> tuple[tuple[str, str], ...]:
            found = {"instance": "broker-1", "job": "zibrato", "source": source, **extra}
            return tuple(sorted(found.items()))

        prometheus.wait_query(
            "shop_orders_total",
            {labels("web-1", shop="eu"): 500, labels("web-2", shop="eu"): 500},
        )
        prometheus.wait_query("shop_load_seconds_count", {labels("web-1"): 50, labels("web-2"): 50})
        prometheus.wait_query(
            'shop_items_bucket{le="5.0"}',
            {labels("web-1", le="5.0"): 5, labels("web-2", le="5.0"): 5},
        )
        prometheus.wait_query("shop_depth", {labels("web-1"): 7, labels("web-2"): 7})

        def arrived(points: list[Any]) -> bool:
            final = {(p.resource["service.name"], p.name): p for p in points}
            return all(
                (orders := final.get((source, "shop.orders"))) is not None
                and orders.value == 500
                and (load := final.get((source, "shop.load"))) is not None
                and load.count == 50
                and load.buckets[2] == 50  # 0.02 s in (0.01, 0.025]
                for source in PUBLISHERS
            )

        rotel.wait_for(arrived, "500 orders and 50 timings from each host")
        assert broker.popen.poll() is None
    finally:
        rotel.stop()
        prometheus.stop()
