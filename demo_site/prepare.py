"""Create and seed the demo's databases once: a stamp makes the next ``make run`` quick.

The stamp holds a fingerprint of what decides the databases' contents (the shop's
migrations and seed data, the warehouse's models and seed data); when those change or a
database file is missing, the steps run again. Each step is the command a user would
type, run in a subprocess with the demo's environment.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from demo_site.paths import DATA_ENV, REPOSITORY

STAMP = "prepared.stamp"
SOURCES = (
    "demo_site/shop/migrations/*.py",
    "demo_site/shop/seed.py",
    "demo_site/warehouse/models.py",
    "demo_site/warehouse/seed.py",
    "demo_site/worker.py",
)
DATABASES = ("shop.sqlite3", "warehouse.sqlite3", "tasks.sqlite3")
STEPS: tuple[tuple[str, Sequence[str]], ...] = (
    ("migrate the shop's database", ("-m", "demo_site.manage", "migrate", "--noinput")),
    ("seed the shop", ("-m", "demo_site.manage", "seed_shop")),
    (
        "create and seed the warehouse's database",
        ("-m", "flask", "--app", "demo_site.warehouse", "init-db"),
    ),
    ("create the shop's task queue", ("-m", "demo_site.worker")),
)


class PrepareError(RuntimeError):
    """A preparation step failed; the message says which and how it ended."""


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did: the steps it ran (none when the stamp was current)."""

    ran: tuple[str, ...]


def fingerprint() -> str:
    """Return a digest of the files that decide what the databases hold."""
    digest = hashlib.sha256()
    for pattern in SOURCES:
        for path in sorted(REPOSITORY.glob(pattern)):
            digest.update(str(path.relative_to(REPOSITORY)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def is_current(data: Path) -> bool:
    """Return whether the databases in ``data`` were prepared from today's sources."""
    stamp = data / STAMP
    if not stamp.is_file() or not all((data / name).is_file() for name in DATABASES):
        return False
    return stamp.read_text().strip() == fingerprint()


def prepare(data: Path, *, env: Mapping[str, str] | None = None) -> Prepared:
    """Run every step unless the databases in ``data`` are current; then write the stamp.

    Raises :class:`PrepareError` when a step fails (with the end of its output).
    """
    if is_current(data):
        return Prepared(ran=())
    data.mkdir(parents=True, exist_ok=True)
    (data / STAMP).unlink(missing_ok=True)
    environment = {**os.environ, **(env or {}), DATA_ENV: str(data)}
    for what, args in STEPS:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=REPOSITORY,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-10:]
            raise PrepareError(
                f"could not {what} (exit status {result.returncode}): " + " | ".join(output)
            )
    (data / STAMP).write_text(fingerprint() + "\n")
    return Prepared(ran=tuple(what for what, _ in STEPS))
