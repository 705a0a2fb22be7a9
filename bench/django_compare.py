"""Django per-request overhead: every mode, runs interleaved, median ratios against bare.

Runs bench/django_request_overhead.py for each mode in turn, ROUNDS times (bare, zibrato,
prometheus, otel, bare, zibrato, ...), so that a machine that slows down mid-session
slows every mode alike; reports each mode's median µs/request and its ratio to bare.

Usage: python bench/django_compare.py [ROUNDS] [N] [REPEATS] [MODE ...]
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "django_request_overhead.py")
RESULT = re.compile(r"^(\w+): ([\d.]+) us/request", re.M)


def run(mode: str, n: int, repeats: int) -> float | None:
    """Return the median µs/request of one run of ``mode``, or None if it cannot run."""
    done = subprocess.run(
        [sys.executable, SCRIPT, mode, str(n), str(repeats)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = RESULT.search(done.stdout)
    if done.returncode or not found:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  {mode}: cannot run ({tail})", flush=True)
        return None
    if done.stderr.strip():
        print(f"  {mode}: {done.stderr.strip()}", flush=True)
    return float(found[2])


def main(argv: list[str]) -> None:
    rounds = int(argv[1]) if len(argv) > 1 else 5
    n = int(argv[2]) if len(argv) > 2 else 2000
    repeats = int(argv[3]) if len(argv) > 3 else 5
    modes = argv[4:] or ["bare", "zibrato", "prometheus", "otel"]
    figures: dict[str, list[float]] = {mode: [] for mode in modes}
    for number in range(1, rounds + 1):
        for mode in modes:
            result = run(mode, n, repeats)
            if result is not None:
                figures[mode].append(result)
                print(f"round {number}: {mode} {result:.1f} us/request", flush=True)
    bare = statistics.median(figures["bare"]) if figures.get("bare") else None
    print(f"\nDjango request overhead, {rounds} interleaved rounds of {n} requests x {repeats}:")
    for mode, values in figures.items():
        if not values:
            continue
        median = statistics.median(values)
        ratio = f"{(median / bare - 1) * 100:+.1f} % vs bare" if bare else ""
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"  {mode:<11} {median:7.1f} us/request (runs {spread})  {ratio}")


if __name__ == "__main__":
    main(sys.argv)
