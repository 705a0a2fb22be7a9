"""Run a command under ``valgrind --tool=callgrind`` and return the instructions it ran
(every thread), with a fixed hash seed so that dict and set layouts, and so the counts,
repeat run to run."""

import os
import subprocess
import tempfile


def instructions(argv):
    """Return the total instruction count of ``argv`` (a Python command line)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out) as results:
            for line in results:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError(f"no instruction total in callgrind's output for {argv}")
