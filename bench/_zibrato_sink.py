"""Start a Zibrato broker and a subscriber that drains every level, in subprocesses,
so that benchmarks measure the full hand-off (a PUB socket with no subscriber drops
everything early). Returns the frontend address to publish to, and a stop function."""

import socket
import subprocess
import sys
import time


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start():
    fe, be = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    drain = (
        "import zmq,sys\nc=zmq.Context();s=c.socket(zmq.SUB);s.setsockopt(zmq.SUBSCRIBE,b'');"
        "s.setsockopt(zmq.RCVHWM,0);s.connect(sys.argv[1])\nwhile True: s.recv()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "zibrato", "broker", "--frontend", fe, "--backend-address", be]
        ),
        subprocess.Popen([sys.executable, "-c", drain, be]),
    ]
    time.sleep(1.0)

    def stop():
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()

    return fe, stop
