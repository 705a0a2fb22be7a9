"""Bad input and a full buffer never raise: they are counted, reported and logged once."""

from __future__ import annotations

import logging
import math

import pytest

from zibrato.publisher import DROPPED_LEVEL, DROPPED_METRIC


def drop_warnings(caplog):
    """The 'dropped a metric' warnings logged so far, by reason."""
    counts: dict[str, int] = {}
    for record in caplog.records:
        if record.name == "zibrato" and "dropped a metric" in record.getMessage():
            reason = record.args[0]
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def dropped_reports(collector):
    """The ``zibrato.publisher.dropped`` counters received, summed by reason."""
    totals: dict[str, int] = {}
    for event in collector.named(DROPPED_METRIC):
        assert (event.type, event.level) == ("counter", DROPPED_LEVEL)
        totals[event.tags["reason"]] = totals.get(event.tags["reason"], 0) + event.value
    return totals


def record_bad_and_good(z, round_):
    z.incr(f"good.{round_}.first")
    z.gauge("bad.nan", math.nan)
    z.timing("bad.inf", math.inf)
    z.observe("bad.neg_inf", -math.inf)
    z.incr("bad.string_value", "3")
    z.incr(42)
    z.incr("")
    z.incr("has space")
    z.gauge(None, 1)
    z.timing(b"bytes.name", 0.5)
    with z.timer("bad timer name"):
        pass
    z.incr("bad.level", level="loud")
    z.gauge("bad.level.list", 1, level=["info"])
    with z.timer("bad.level.timer", level="loud"):
        pass
    z.incr(f"good.{round_}.last", 2)


EXPECTED_PER_ROUND = {"invalid_value": 4, "invalid_name": 6, "invalid_level": 3}


def test_bad_input_is_counted_reported_and_logged_once(broker, subscribe, new_client, caplog):
    caplog.set_level(logging.WARNING, logger="zibrato")
    collector = subscribe()
    z = new_client(publish=broker.frontend)

    record_bad_and_good(z, 1)  # nothing here may raise
    z.flush()
    collector.wait_names("good.1.first", "good.1.last")
    collector.wait_for(lambda got: dropped_reports(collector) == EXPECTED_PER_ROUND, "reports")
    assert z.stats()["dropped"] == EXPECTED_PER_ROUND

    record_bad_and_good(z, 2)
    z.flush()
    collector.wait_names("good.2.first", "good.2.last")
    twice = {reason: 2 * count for reason, count in EXPECTED_PER_ROUND.items()}
    collector.wait_for(lambda got: dropped_reports(collector) == twice, "second reports")
    assert z.stats()["dropped"] == twice

    collector.settle()
    # Good events recorded between the bad ones all arrived, once each, and nothing bad did.
    good = [e for e in collector.received if e.name.startswith("good.")]
    assert sorted((e.name, e.value) for e in good) == [
        ("good.1.first", 1),
        ("good.1.last", 2),
        ("good.2.first", 1),
        ("good.2.last", 2),
    ]
    assert not [e for e in collector.received if e.name.startswith("bad")]
    assert collector.invalid == []
    assert dropped_reports(collector) == twice
    assert drop_warnings(caplog) == dict.fromkeys(EXPECTED_PER_ROUND, 1)


def test_full_buffer_drops_are_counted_and_reported(broker, subscribe, new_client, caplog):
    caplog.set_level(logging.WARNING, logger="zibrato")
    collector = subscribe()
    z = new_client(publish=broker.frontend, buffer_size=5)
    recorded = 50
    for i in range(recorded):  # far faster than one 50 ms batch interval
        z.incr("burst")  # a series' values: at most 5 wait
        z.gauge("burst.gauge", i)  # events in the level's queue: at most 5 wait
    z.flush()
    collector.wait_names("burst", "burst.gauge", DROPPED_METRIC)
    collector.settle()

    dropped = z.stats()["dropped"]
    assert set(dropped) == {"buffer_full"}
    assert dropped["buffer_full"] >= 2
    arrived = collector.named("burst") + collector.named("burst.gauge")
    # Nothing vanished silently: every call either arrived or was counted as dropped.
    assert len(arrived) + dropped["buffer_full"] == 2 * recorded
    assert len(collector.named("burst")) < recorded
    assert len(collector.named("burst.gauge")) < recorded
    assert dropped_reports(collector) == dropped
    assert drop_warnings(caplog) == {"buffer_full": 1}
    # The buffer is per client and drains: after a flush there is room again.
    z.incr("after.burst")
    z.flush()
    collector.wait_names("after.burst")


def test_out_of_range_integer_never_raises_and_spares_the_batch(broker, subscribe, new_client):
    """An int too big for the wire must be dropped like NaN, not break the batch it is in.

    msgpack integers are 64-bit: such a value once passed ``check_event``, then made
    encoding raise OverflowError out of ``flush()`` and lost the good events with it.
    """
    collector = subscribe()
    z = new_client(publish=broker.frontend)
    z.incr("good.before")
    z.incr("huge", 2**70)
    z.gauge("huge.negative", -(2**70))
    z.incr("good.after")
    z.flush()  # must not raise
    collector.wait_names("good.before", "good.after")
    assert not collector.named("huge")
    assert z.stats()["dropped"].get("invalid_value") == 2


@pytest.mark.parametrize(
    ("options", "what"),
    [({"tags": {"shard": 3}}, "a tag value that is not a string"), ({"source": 7}, "a number")],
    ids=["int-tag-value", "int-source"],
)
def test_bad_client_defaults_do_not_silently_lose_every_event(
    broker, subscribe, new_client, options, what
):
    """Client-wide tags/source are sent in every batch header; invalid ones must not be silent.

    Acceptable: refusing them when the client is made, or still delivering the events,
    or at least counting the drops. Not acceptable (as once happened): every batch refused
    by every subscriber as a bad header while the client reports its events as sent.
    """
    collector = subscribe()
    try:
        z = new_client(publish=broker.frontend, **options)
    except (TypeError, ValueError):
        return  # refused up front: the user finds out at once
    z.incr("with.bad.defaults")
    z.flush()
    collector.settle(quiet=0.5)
    delivered = bool(collector.named("with.bad.defaults"))
    counted = bool(z.stats()["dropped"])
    assert delivered or counted, (
        f"client defaults with {what} lost every event silently: client stats {z.stats()}, "
        f"subscriber bad messages {collector.subscriber.bad_messages}"
    )
