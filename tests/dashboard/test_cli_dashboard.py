"""``zibrato run --backend dashboard`` and ``zibrato backend dashboard`` as a user runs them."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from dashboard_support import record_request, wait_for

from zibrato import Zibrato

if TYPE_CHECKING:
    from conftest import CliProcess  # tests/conftest.py

READY = 15.0
ANY_PORT = "tcp://127.0.0.1:0"
SERVING = (
    r"^zibrato run: dashboard backend: serving (http://127\.0\.0\.1:\d+/) \(history in (\S+)\)"
)


def test_run_serves_the_dashboard_and_keeps_history_across_a_restart(
    run_cli: Callable[..., CliProcess], tmp_path: Path
) -> None:
    history = tmp_path / "var" / "history.sqlite3"
    args = (
        "run", "--frontend", ANY_PORT, "--backend-address", ANY_PORT, "--flush", "0.3",
        "--backend", "dashboard", "--dashboard-listen", "127.0.0.1:0",
        "--dashboard-path", str(history), "--dashboard-history-days", "2",
    )  # fmt: skip
    process = run_cli(*args)
    url, path = process.wait_line(SERVING, READY).groups()
    assert path == str(history)
    frontend = process.wait_line(r"^zibrato run: publishers connect to (tcp://\S+);", READY)[1]
    z = Zibrato(frontend)
    try:

        def routes() -> list[str]:
            record_request(z, "/cli/", 0.01, view=0.005, queries=2)
            z.flush(timeout=5)
            with requests.get(url + "api/routes", params={"window": 600}, timeout=5) as response:
                return [row["route"] for row in response.json()["routes"]]

        wait_for(routes, lambda names: "/cli/" in names, "the route over HTTP")
    finally:
        z.close()
    process.signal(signal.SIGTERM)
    assert process.finish(timeout=5) == 0, process
    assert history.exists()

    again = run_cli(*args)
    url = again.wait_line(SERVING, READY)[1]
    with requests.get(url + "api/routes", params={"window": 600}, timeout=5) as response:
        assert "/cli/" in [row["route"] for row in response.json()["routes"]]
    with requests.get(url + "api/status", timeout=5) as response:
        assert response.json()["tiers"][-1]["keep"] == 2 * 86400


def test_a_taken_port_or_a_foreign_file_is_one_line_and_exit_2(
    run_cli: Callable[..., CliProcess], tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        process = run_cli(
            "run", "--frontend", ANY_PORT, "--backend-address", ANY_PORT, "--backend", "dashboard",
            "--dashboard-listen", listen, "--dashboard-path", str(tmp_path / "h.sqlite3"),
        )  # fmt: skip
        assert process.finish() == 2, process
    (line,) = process.stderr
    assert f"http://{listen}/" in line and "already in use" in line

    foreign = tmp_path / "notes.txt"
    foreign.write_text("my notes, not a database\n" * 50)
    process = run_cli(
        "backend", "dashboard", "--connect", "tcp://127.0.0.1:1", "--listen", "127.0.0.1:0",
        "--path", str(foreign),
    )  # fmt: skip
    assert process.finish() == 2, process
    (line,) = process.stderr
    assert f"cannot use {foreign} as the dashboard history" in line
    assert foreign.read_text().startswith("my notes")  # untouched


def test_bad_options_are_one_line(run_cli: Callable[..., CliProcess], tmp_path: Path) -> None:
    for option, value, message in (
        ("--history-days", "0", "history-days must be a positive number"),
        ("--history-days", "soon", "history-days"),
        ("--listen", "8050", "listen must be HOST:PORT"),
    ):
        process = run_cli("backend", "dashboard", option, value, cwd=tmp_path)
        assert process.finish() == 2, process
        assert len(process.stderr) <= 2 and message in "\n".join(process.stderr), process
        assert not any("Traceback" in line for line in process.stderr)
