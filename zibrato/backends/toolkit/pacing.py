"""Spread datagrams over time, so a UDP receiver is never handed one large burst.

A UDP receiver that falls behind does not slow the sender down: the kernel drops what
its socket buffer cannot hold, and nobody is told. Sending a flush's packets evenly
over a window keeps the receiver's queue short; a stop cuts the window short.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# Packets sent at once before pacing starts: a few kilobytes that any socket buffer holds.
DEFAULT_BURST = 16


def paced(
    items: Sequence[T],
    *,
    window: float,
    hurry_window: float,
    wait: Callable[[float], bool],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    burst: int = DEFAULT_BURST,
) -> Iterator[T]:
    """Yield ``items`` spread evenly over ``window`` seconds, the first ``burst`` at once.

    ``wait(seconds)`` pauses and returns True when the caller is in a hurry (stopping,
    say: ``threading.Event.wait``); from then on the rest go out spread over
    ``hurry_window`` seconds, paused with ``sleep``.

    >>> list(paced([1, 2, 3], window=5.0, hurry_window=0.1, wait=lambda s: False))
    [1, 2, 3]
    """
    count = len(items)
    start, first, gap = clock(), 0, window / max(count, 1)
    hurried = False
    for index, item in enumerate(items):
        if index >= burst:
            delay = start + (index - first) * gap - clock()
            if delay > 0:
                if hurried:
                    sleep(delay)
                elif wait(delay):
                    hurried = True
                    start, first, gap = clock(), index, hurry_window / (count - index)
        yield item
