"""Loss accounting: every event in a missing batch is counted, exactly."""

from __future__ import annotations

from zibrato.protocol import Batch
from zibrato.subscriber import LossTracker


def batch(sent_before: int, count: int, *, publisher: str = "pub-1", level: str = "info"):
    events = tuple((0, "n", 1, None, None) for _ in range(count))
    return Batch(level, publisher, 0, sent_before, 0.0, None, None, events)


def test_no_loss_when_batches_arrive_in_order():
    tracker = LossTracker()
    assert [tracker.observe(batch(0, 3)), tracker.observe(batch(3, 5))] == [0, 0]
    assert tracker.observe(batch(8, 1)) == 0
    assert (tracker.lost_events, tracker.gaps) == (0, 0)


def test_missing_batch_counts_exactly_its_events():
    tracker = LossTracker()
    tracker.observe(batch(0, 3))
    # The batch with sent_before=3 and 5 events never arrives.
    assert tracker.observe(batch(8, 2)) == 5
    assert (tracker.lost_events, tracker.gaps) == (5, 1)
    assert tracker.observe(batch(10, 4)) == 0
    # Two consecutive batches (7 + 9 events) go missing: one gap of 16 events.
    assert tracker.observe(batch(30, 1)) == 16
    assert (tracker.lost_events, tracker.gaps) == (21, 2)


def test_first_batch_from_a_publisher_only_sets_the_baseline():
    tracker = LossTracker()
    assert tracker.observe(batch(1_000, 10)) == 0  # joined late: nothing counted as lost
    assert tracker.observe(batch(1_010, 10)) == 0
    assert tracker.lost_events == 0


def test_publishers_and_levels_are_tracked_separately():
    tracker = LossTracker()
    tracker.observe(batch(0, 4, publisher="a"))
    tracker.observe(batch(0, 4, publisher="b"))
    tracker.observe(batch(0, 4, publisher="a", level="debug"))
    assert tracker.observe(batch(4, 4, publisher="b")) == 0
    assert tracker.observe(batch(6, 1, publisher="a")) == 2
    assert tracker.observe(batch(4, 1, publisher="a", level="debug")) == 0
    assert tracker.observe(batch(10, 1, publisher="a", level="debug")) == 5
    assert (tracker.lost_events, tracker.gaps) == (7, 2)
