"""The prometheus backend's HTTP side: which Host names /metrics answers (DNS rebinding),
the allowed-hosts option from every front end, and what it refuses, counted in its health.
(Scraped by a real Prometheus by address, allowed name and refused name:
tests/realservers/test_prometheus_server.py.)
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from http_support import raw_request
from prometheus_client.parser import text_string_to_metric_families

from zibrato.backends import BackendConfigError, build
from zibrato.backends.prometheus import PrometheusBackend
from zibrato.cli import backend_parser, backend_spec, option_prefix, run_parser

if TYPE_CHECKING:
    from conftest import CliProcess  # tests/conftest.py

_addresses = itertools.count()
READY = 15.0


def get(backend: PrometheusBackend, host: str, target: str = "/metrics") -> tuple[int, bytes]:
    answer = raw_request(backend._http, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n")
    return answer.status, answer.body


def health(backend: PrometheusBackend) -> dict[str, float]:
    """The backend's own http_* counters as /metrics shows them after a flush."""
    backend.flush()
    text = backend.exposition().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("zibrato_backend_http_"):
                assert sample.labels == {"backend": "prometheus"}
                found[sample.name.removeprefix("zibrato_backend_")] = sample.value
    return found


@pytest.fixture
def serving() -> Iterator[Callable[..., PrometheusBackend]]:
    started: list[PrometheusBackend] = []

    def start(**options: object) -> PrometheusBackend:
        backend = PrometheusBackend(
            connect=f"inproc://zibrato-prometheus-http-{next(_addresses)}",
            listen="127.0.0.1:0",
            flush_interval=60.0,
            **options,  # type: ignore[arg-type]
        )
        backend.start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


def test_metrics_answer_addresses_and_localhost_but_not_other_names(
    serving: Callable[..., PrometheusBackend], caplog: pytest.LogCaptureFixture
) -> None:
    backend = serving()
    port = backend.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "192.0.2.10:9102"):
        assert get(backend, host)[0] == 200, host
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        status, body = get(backend, f"rebound.example:{port}")
        assert status == 403
        assert (
            body
            == (
                f"forbidden: Host 'rebound.example:{port}' is not one of this server's names "
                "(allowed-hosts)\n"
            ).encode()
        )
        assert get(backend, "metrics.example")[0] == 403
    (warning,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "allowed-hosts" in warning and "zibrato.backend.http_host_refusals" in warning
    assert health(backend) == {
        "http_host_refusals_total": 2,
        "http_busy_refusals_total": 0,
        "http_request_timeouts_total": 0,
        "http_queued_connections_total": 0,
    }


@pytest.mark.parametrize(
    "allowed", [["metrics.example", ".corp.example"], "metrics.example,.corp.example"]
)
def test_allowed_hosts_let_prometheus_scrape_by_name(
    serving: Callable[..., PrometheusBackend], allowed: object
) -> None:
    backend = serving(allowed_hosts=allowed)
    assert get(backend, f"metrics.example:{backend.port}")[0] == 200
    assert get(backend, "node-7.corp.example")[0] == 200
    assert get(backend, "rebound.example")[0] == 403
    # As through an HTTP proxy: the name is in the target.
    assert get(backend, "ignored", "http://metrics.example:9102/metrics")[0] == 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "prometheus", "allowed_hosts": "metrics.example:9102"}, "without a port"),
        ({"kind": "prometheus", "allowed-hosts": [7]}, "strings"),
        ({"kind": "prometheus", "ALLOWED_HOSTS": {"a": "b"}}, "separated by commas"),
        ({"kind": "dashboard", "allowed_hosts": "two words"}, "host names"),
    ],
)
def test_bad_allowed_hosts_in_settings_are_one_line(
    spec: dict[str, object], message: str, tmp_path: Path
) -> None:
    spec.setdefault("listen", "127.0.0.1:0")
    if spec["kind"] == "dashboard":
        spec["path"] = str(tmp_path / "h.sqlite3")
    with pytest.raises(BackendConfigError, match=message) as raised:
        build([spec])
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"{spec['kind']} backend: ")


@pytest.mark.parametrize("kind", ["prometheus", "dashboard"])
def test_allowed_hosts_from_settings_and_both_command_lines(kind: str, tmp_path: Path) -> None:
    path = {"path": str(tmp_path / "h.sqlite3")} if kind == "dashboard" else {}
    from_settings = build(
        [{"kind": kind, "listen": "127.0.0.1:0", "allowed_hosts": ["m.example"], **path}]
    )
    parser, cls = backend_parser([kind, "--allowed-hosts", "m.example"])
    parsed = parser.parse_args([kind, "--allowed-hosts", "m.example", "--listen", "127.0.0.1:0"])
    assert cls is not None
    from_backend = build([backend_spec(kind, cls, parsed, "")])
    args = ["--backend", kind, f"--{kind}-allowed-hosts", "m.example"]
    run, classes = run_parser(args)
    run_args = run.parse_args([*args, f"--{kind}-listen", "127.0.0.1:0"])
    prefix = option_prefix(kind, classes[kind])
    from_run = build([backend_spec(kind, classes[kind], run_args, prefix)])
    for (backend,) in (from_settings, from_backend, from_run):
        check = backend._http.hosts  # type: ignore[attr-defined]
        assert check.entries == ("m.example",)
        assert check.allows("m.example") and not check.allows("other.example")


@pytest.fixture
def cli(run_cli: Callable[..., CliProcess], tmp_path: Path) -> Callable[..., CliProcess]:
    return functools.partial(run_cli, cwd=tmp_path, env={"PYTHONUNBUFFERED": "1"})


def test_zibrato_run_serves_metrics_to_an_allowed_name_only(
    cli: Callable[..., CliProcess],
) -> None:
    any_port = "tcp://127.0.0.1:0"
    process = cli(
        "run",
        "--frontend",
        any_port,
        "--backend-address",
        any_port,
        "--backend",
        "prometheus",
        "--prometheus-listen",
        "127.0.0.1:0",
        "--prometheus-allowed-hosts",
        "metrics.example",
        "--flush",
        "0.2",
    )
    port = int(process.wait_line(r"serving http://127\.0\.0\.1:(\d+)/metrics", READY)[1])
    server = ("127.0.0.1", port)
    request = "GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n"
    assert raw_request(server, request.format("metrics.example:9102")).status == 200
    refused = raw_request(server, request.format("rebound.example"))
    assert refused.status == 403 and refused.body.count(b"\n") == 1
    deadline = time.monotonic() + 10
    text = ""
    while 'zibrato_backend_http_host_refusals_total{backend="prometheus"} 1' not in text:
        assert time.monotonic() < deadline, text
        text = raw_request(server, request.format("127.0.0.1")).body.decode()
        time.sleep(0.05)


def test_too_many_query_parameters_on_metrics_are_a_400(
    serving: Callable[..., PrometheusBackend],
) -> None:
    backend = serving()
    query = "&".join(f"p{i}=1" for i in range(150))
    status, body = get(backend, "127.0.0.1", f"/metrics?{query}")
    assert status == 400 and body == b'{"error":"too many query parameters: at most 100"}'
    assert get(backend, "127.0.0.1", "/metrics?module=x&target=%FF%FE")[0] == 200
