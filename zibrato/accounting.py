"""A publisher's own counts: every event recorded ends in exactly one of them.

``sent_events`` (handed to ZeroMQ for a subscriber), ``filtered_events`` (no subscriber
wanted its level), or ``dropped[reason]`` (counted, logged once per reason, and reported
as the counter ``zibrato.publisher.dropped``). Several threads update them: recording
threads reject what they cannot record, the thread that drives the link counts the batch
it has taken off the queues ("in hand") as it goes, and ``close()`` may give up on that
thread and count what it holds itself (``abandon``), after which the thread's counting of
that batch is ignored, so that nothing is counted twice and nothing vanishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("zibrato")

DROPPED_METRIC = "zibrato.publisher.dropped"


class Counts:
    """The counts of one publisher in one process (a forked child starts new ones).

    >>> counts = Counts()
    >>> counts.reject("invalid_name", "'a b' = 1")   # logged the first time
    >>> counts.dropped
    {'invalid_name': 1}
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dropped: dict[str, int] = {}
        self.sent_events = 0
        self.sent_batches = 0
        self.filtered_events = 0
        # Drops not yet reported to the subscribers (zibrato.publisher.dropped).
        self.unpublished: dict[str, int] = {}
        self._warned: set[str] = set()
        # Events taken off a queue by whoever drives the link and not yet counted anywhere;
        # and whether close() gave up waiting and counted them itself.
        self.in_hand = 0
        self.abandoned = False

    # -- drops ---------------------------------------------------------------------------
    def reject(self, reason: str, detail: str, count: int = 1, *, warn: bool = True) -> None:
        """Count events that were not recorded; log the first of each reason (if ``warn``)."""
        with self.lock:
            first = self.add_dropped(reason, count) and warn
        if first:
            log_first_drop(reason, detail)

    def add_dropped(self, reason: str, count: int) -> bool:
        """Add to the drop counts (the lock is held); return whether it is the first."""
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        self.unpublished[reason] = self.unpublished.get(reason, 0) + count
        if reason in self._warned:
            return False
        self._warned.add(reason)
        return True

    def take_report(self) -> dict[str, int]:
        """Return the drops not reported yet, and forget them (the report is in hand)."""
        with self.lock:
            report, self.unpublished = self.unpublished, {}
            self.in_hand += len(report)
        return report

    # -- the batch in hand --------------------------------------------------------------
    def reject_in_hand(
        self, reason: str, detail: str, count: int = 1, *, warn: bool = True
    ) -> None:
        """Count ``count`` events of the batch in hand as dropped (-1: all that is left)."""
        with self.lock:
            if self.abandoned:
                return  # close() counted them already
            if count < 0:
                count = self.in_hand
            self.in_hand -= count
            first = self.add_dropped(reason, count) and warn
        if first:
            log_first_drop(reason, detail)

    def count_in_hand(self, sent: int = 0, filtered: int = 0, captured: int = 0) -> None:
        """Move events of the batch in hand to their count (a capture's are not counted)."""
        with self.lock:
            if self.abandoned:
                return
            self.in_hand -= sent + filtered + captured
            self.sent_events += sent
            self.sent_batches += 1 if sent else 0
            self.filtered_events += filtered

    def settle_in_hand(self) -> None:
        """End a batch: every event of it must have been counted by now."""
        with self.lock:
            if self.in_hand and not self.abandoned:  # a path that forgot to count: say so
                log.error("zibrato: %d events of a batch were not accounted for", self.in_hand)
                self.add_dropped("internal_error", self.in_hand)
            self.in_hand = 0

    def abandon(self, discard_pending: Callable[[], int], detail: str) -> None:
        """Count the batch in hand and everything ``discard_pending()`` empties as
        ``close_timeout``; from now on the thread's counting of its batch is ignored."""
        with self.lock:
            self.abandoned = True
            pending = self.in_hand + discard_pending()
            self.in_hand = 0
            first = pending > 0 and self.add_dropped("close_timeout", pending)
        if first:
            log_first_drop("close_timeout", f"{pending} events {detail}")


def log_first_drop(reason: str, detail: str) -> None:
    log.warning(
        "zibrato: dropped a metric (%s): %s; further drops are counted in %s and not logged",
        reason,
        detail,
        DROPPED_METRIC,
    )
