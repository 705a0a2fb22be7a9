"""The HTTP server the prometheus and dashboard backends share, over real loopback sockets."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from zibrato.backends.toolkit.httpserver import (
    BadRequest,
    HttpServer,
    Request,
    Response,
    parse_listen,
)
from zibrato.errors import AddressInUse, ConfigError


def echo(request: Request) -> Response:
    return Response.json(
        {"path": request.path, "name": request.param("name"), "all": request.query}
    )


def broken(request: Request) -> Response:
    raise KeyError("boom")


def picky(request: Request) -> Response:
    raise BadRequest("window must be a number")


@pytest.fixture
def serve() -> Iterator[Callable[..., HttpServer]]:
    started: list[HttpServer] = []

    def make(listen: str = "127.0.0.1:0", **options: object) -> HttpServer:
        routes = {"/echo": echo, "/broken": broken, "/picky": picky}
        server = HttpServer(listen, routes, name="test", **options)  # type: ignore[arg-type]
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_routes_answer_with_their_handler_and_parsed_query(
    serve: Callable[..., HttpServer],
) -> None:
    server = serve(headers={"X-Test": "yes"})
    with requests.get(
        server.url("/echo"), params={"name": "a b", "x": ["1", "2"]}, timeout=5
    ) as response:
        assert response.status_code == 200
        assert response.headers["X-Test"] == "yes"
        assert response.json() == {
            "path": "/echo",
            "name": "a b",
            "all": {"name": ["a b"], "x": ["1", "2"]},
        }
    with requests.get(server.url("/nowhere"), timeout=5) as response:
        assert response.status_code == 404 and response.text == "not found\n"
    with requests.post(server.url("/echo"), data=b"x", timeout=5) as response:
        assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
    with requests.head(server.url("/echo"), timeout=5) as response:
        assert response.status_code == 200 and response.content == b""


def test_a_failing_handler_is_a_500_logged_once_and_the_server_keeps_serving(
    serve: Callable[..., HttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        for _ in range(3):
            with requests.get(server.url("/broken"), timeout=5) as response:
                assert response.status_code == 500 and response.text == "internal error\n"
    assert len([r for r in caplog.records if "KeyError" in r.getMessage()]) == 1
    with requests.get(server.url("/picky"), timeout=5) as response:
        assert response.status_code == 400
        assert response.json() == {"error": "window must be a number"}
    with requests.get(server.url("/echo"), timeout=5) as response:
        assert response.status_code == 200


def test_only_expected_host_names_are_answered(serve: Callable[..., HttpServer]) -> None:
    server = serve(allowed_hosts={"127.0.0.1", "localhost", "::1"})
    for host, status in (
        (f"127.0.0.1:{server.port}", 200),
        (f"localhost:{server.port}", 200),
        ("LOCALHOST", 200),
        (f"[::1]:{server.port}", 200),
        (f"rebound.example:{server.port}", 403),
        ("127.0.0.1.evil.example", 403),
    ):
        with requests.get(server.url("/echo"), headers={"Host": host}, timeout=5) as response:
            assert response.status_code == status, host
    anywhere = serve("0.0.0.0:0", allowed_hosts={"127.0.0.1"})
    with requests.get(
        anywhere.url("/echo"), headers={"Host": "metrics.example"}, timeout=5
    ) as response:
        assert response.status_code == 200  # the user chose to listen everywhere


def test_a_taken_port_is_address_in_use_naming_the_url(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    other = HttpServer(f"127.0.0.1:{server.port}", {}, name="dashboard", home="/")
    with pytest.raises(
        AddressInUse, match=rf"http://127\.0\.0\.1:{server.port}/: the address is already in use"
    ):
        other.start()
    unavailable = HttpServer("192.0.2.1:0", {}, name="dashboard")  # a documentation address
    with pytest.raises(ConfigError, match=r"cannot serve http://192\.0\.2\.1:0/"):
        unavailable.start()


def test_stop_releases_the_port(serve: Callable[..., HttpServer]) -> None:
    server = serve()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    again = serve(f"127.0.0.1:{port}")
    with requests.get(again.url("/echo"), timeout=5) as response:
        assert response.status_code == 200


def test_a_stalled_client_is_dropped_after_the_timeout_and_blocks_nobody(
    serve: Callable[..., HttpServer],
) -> None:
    server = serve(timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stalled:
        stalled.sendall(b"GET /echo HTTP/1.1\r\n")  # and never finishes the request
        with requests.get(server.url("/echo"), timeout=5) as response:
            assert response.status_code == 200
        started = time.monotonic()
        assert stalled.recv(1024) == b""  # the server closed it
        assert time.monotonic() - started < 9


def test_ipv6_loopback(serve: Callable[..., HttpServer]) -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback")
    server = serve("[::1]:0")
    assert server.url("/echo").startswith("http://[::1]:")
    with requests.get(server.url("/echo"), timeout=5) as response:
        assert response.status_code == 200


@pytest.mark.parametrize("bad", ["8050", "localhost:http", "host:70000", ""])
def test_listen_must_be_host_and_port(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(bad)
