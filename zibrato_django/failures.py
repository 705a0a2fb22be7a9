"""What happens when Zibrato itself fails inside a request: count it, log it once, go on.

The instrumented application never sees such a failure. Each one is counted by reason in
:data:`counts` and, once the shared client exists, in its ``zibrato.publisher.dropped``
counter (the metrics of that request are what was lost).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("zibrato.django")

counts: dict[str, int] = {}
_lock = threading.Lock()


def report(reason: str, exc: BaseException) -> None:
    """Count a failure of ours by ``reason``; log the first of each reason with its cause."""
    with _lock:
        first = reason not in counts
        counts[reason] = counts.get(reason, 0) + 1
    if first:
        log.error(
            "zibrato: %s failed (%s: %s); the request went on unmeasured; further "
            "failures are counted in zibrato.publisher.dropped and not logged",
            reason,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
    try:
        from zibrato_django import zibrato

        if zibrato.started:
            zibrato.publisher.reject(reason, str(exc))
    except Exception:  # the client may be the part that failed
        pass
