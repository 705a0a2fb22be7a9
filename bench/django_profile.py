"""Where Zibrato's Django overhead goes: py-spy samples of the zibrato mode, attributed.

Runs ``bench/django_request_overhead.py zibrato N REPEATS`` under ``py-spy record`` (raw
stacks of every thread, idle samples left out) and reports the share of the main
thread's samples spent in Zibrato's own code — the middleware, the DB hook, the client
calls — as opposed to Django, the view and its queries (time inside the DB hook that is
the query itself is Django's), and how busy the publisher thread was. Sampling gives a
figure a loaded machine disturbs far less than a wall-clock comparison does.

Usage: python bench/django_profile.py [N] [REPEATS]   (py-spy: in the bench extra)
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FRAME = re.compile(r"(?P<function>\S+) \((?P<path>\S+?):\d+\)")
# A main-thread sample belongs to a request when Django's WSGI handler is on its stack.
REQUEST_FRAME = "WSGIHandler.__call__"


def own_frame(frames: list[str]) -> str | None:
    """Return the Zibrato function a main-thread sample is charged to, or None."""
    for depth in range(len(frames) - 1, 0, -1):
        found = FRAME.match(frames[depth])
        if not found or "zibrato" not in found["path"] or "/bench/" in found["path"]:
            continue
        function, is_leaf = found["function"], depth == len(frames) - 1
        if function.endswith("ZibratoMiddleware.__call__") and not is_leaf:
            return None  # the whole request runs under it: what is below is Django's
        if function.endswith("measure_query") and not is_leaf and "execute" in frames[depth + 1]:
            return None  # the query itself
        return function
    return None


def main(argv: list[str]) -> None:
    n = argv[1] if len(argv) > 1 else "1500"
    repeats = argv[2] if len(argv) > 2 else "3"
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    script = os.path.join(HERE, "django_request_overhead.py")
    with tempfile.TemporaryDirectory() as folder:
        raw = os.path.join(folder, "stacks.txt")
        subprocess.run(
            [
                spy,
                "record",
                "--rate",
                "250",
                "--threads",
                "--format",
                "raw",
                "--output",
                raw,
                "--",
                sys.executable,
                script,
                "zibrato",
                n,
                repeats,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=900,
        )
        with open(raw) as stacks:
            lines = stacks.read().splitlines()
    main_samples = publisher_busy = 0
    charged: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        if "zibrato-publisher" in frames[0]:
            if "Condition.wait" not in frames[-1]:
                publisher_busy += samples
            continue
        if "MainThread" not in frames[0]:
            continue
        if not any(frame.startswith(REQUEST_FRAME) for frame in frames):
            continue  # imports, migrations, the sink: not the requests
        main_samples += samples
        function = own_frame(frames)
        if function is not None:
            charged[function] += samples
    own = sum(charged.values())
    print(f"Django request path, {main_samples} main-thread samples while serving requests:")
    for function, samples in charged.most_common(12):
        print(f"  {samples / main_samples * 100:5.2f} %  {function}")
    print(
        f"Zibrato's own code: {own / main_samples * 100:.2f} % of the main thread; "
        f"publisher thread busy for {publisher_busy / main_samples * 100:.2f} % as many samples"
    )


if __name__ == "__main__":
    main(sys.argv)
