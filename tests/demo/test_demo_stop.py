"""The demo stops cleanly however it is told to, and a mistake is one line.

Each test starts its own demo on random ports (a copy of the prepared databases) and checks
that no process it started survives, whatever the signal.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from demo_support import DemoRun, processes_of

from demo_site import prepare

StartDemo = Callable[..., DemoRun]
pytestmark = pytest.mark.timeout(180)


def test_sigterm_to_the_runner_alone_stops_every_process(start_demo: StartDemo) -> None:
    run = start_demo()
    run.wait_running()
    started = processes_of(run.data)
    assert len(started) >= 8, started
    run.popen.send_signal(signal.SIGTERM)  # the runner only: its children hear it from it
    assert run.wait() == 0
    assert run.stdout[-1] == "zibrato demo: stopped"
    assert processes_of(run.data) == {}
    # The databases were prepared already: the stamp spares this run the work.
    assert not any("preparing" in line for line in run.stdout), run.stdout


def test_it_stops_by_itself_after_zibrato_demo_seconds(start_demo: StartDemo) -> None:
    run = start_demo(env={"ZIBRATO_DEMO_SECONDS": "2"})
    run.wait_running()
    assert "zibrato demo: stopping by itself after 2 s" in run.stdout
    assert run.wait(timeout=60) == 0
    assert run.stdout[-1] == "zibrato demo: stopped"
    assert processes_of(run.data) == {}


def test_a_taken_port_is_one_line_and_leaves_nothing_running(start_demo: StartDemo) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        run = start_demo(f"--flask-listen={taken}")
        assert run.wait(timeout=60) == 2
    assert run.stderr == [
        f"zibrato demo: the Flask warehouse cannot listen on {taken}: the address is already "
        "in use; stop what holds it or choose another with --flask-listen"
    ]
    assert not any("running" in line for line in run.stdout), run.stdout
    assert processes_of(run.data) == {}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--flush=0",), {}, "--flush: the flush interval must be more than 0 seconds"),
        (("--workers=0",), {}, "--workers: must be a whole number of at least 1"),
        (("--django-listen=8000",), {}, "--django-listen: listen must be HOST:PORT"),
        (
            (),
            {"ZIBRATO_DEMO_SECONDS": "soon"},
            "--seconds: must be a number of seconds (0: run until stopped)",
        ),
    ],
)
def test_a_bad_option_is_one_line_and_exit_status_2(
    start_demo: StartDemo, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    run = start_demo(*args, env=env)
    assert run.wait(timeout=60) == 2
    assert len(run.stderr) == 1 and expected in run.stderr[0], run.stderr
    assert run.stdout == []


def test_preparing_again_does_nothing_while_the_stamp_is_current(prepared_data: Path) -> None:
    assert prepare.is_current(prepared_data)
    assert prepare.prepare(prepared_data).ran == ()


def test_a_site_that_dies_ends_the_run_with_one_line_and_status_1(start_demo: StartDemo) -> None:
    run = start_demo()
    run.wait_running()
    (master,) = [
        pid
        for pid, command in processes_of(run.data).items()
        if "gunicorn" in command and "warehouse" in command and _parent(pid) == run.pid
    ]
    os.kill(master, signal.SIGKILL)
    assert run.wait(timeout=60) == 1
    (line,) = [line for line in run.stderr if line.startswith("zibrato demo:")]
    assert line.startswith(
        "zibrato demo: the Flask warehouse stopped by itself (killed by signal 9; log in "
    )
    assert line.endswith("flask.log); stopping the rest"), line
    assert run.stdout[-1] == "zibrato demo: stopped"
    assert processes_of(run.data) == {}


def test_the_workers_of_a_site_whose_master_died_are_stopped_too(start_demo: StartDemo) -> None:
    # The master killed, its workers orphaned and frozen: on a loaded machine an orphan may
    # take seconds to notice that its master is gone; a frozen one never does by itself.
    run = start_demo()
    run.wait_running()
    processes = processes_of(run.data)
    (master,) = [
        pid
        for pid, command in processes.items()
        if "gunicorn" in command and "warehouse" in command and _parent(pid) == run.pid
    ]
    workers = [pid for pid in processes if _parent(pid) == master]
    assert workers, processes
    os.kill(master, signal.SIGKILL)
    for worker in workers:
        os.kill(worker, signal.SIGSTOP)
    assert run.wait(timeout=60) == 1
    assert run.stdout[-1] == "zibrato demo: stopped"
    assert processes_of(run.data) == {}


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])
