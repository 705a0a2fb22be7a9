"""What ``zibrato tail`` prints for text that came from the network: control characters,
terminal escapes and forged fields are shown escaped, one event per line; and sampled
events and set members (a real broker and a real ``zibrato tail`` subprocess)."""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zibrato.tail import format_line
from zibrato.text import label, labels, printable, quoted

FORGED = "eu\n12:00:00.000 crit    counter      payments.refunded 1000000"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain.name", "plain.name"),
        ("new\nline", "new\\nline"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("back\\slash", "back\\\\slash"),
        ("tab\there", "tab\\there"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("line\u2028separator", "line\\u2028separator"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b", "c1\\x9b"),
        ("naïve ünïcode", "naïve ünïcode"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_values_that_would_read_as_more_fields_are_quoted() -> None:
    assert label("shop", "eu") == "shop=eu"
    assert label("shop", "eu shop=us") == 'shop="eu shop=us"'
    assert label("note", 'say "hi"') == 'note="say \\"hi\\""'
    assert label("empty", "") == 'empty=""'
    assert label("k=v", "x") == '"k=v"=x'
    assert quoted("a,b") == '"a,b"'
    assert list(labels("web-1", {"b": "2", "a": "1"})) == ["source=web-1", "a=1", "b=2"]
    assert list(labels(None, {})) == []


@given(st.text(max_size=60))
def test_printable_output_is_one_printable_line_and_reversible(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    # Escapes are unambiguous: Python's own unicode_escape reading gives the text back.
    assert shown.encode("latin-1", "backslashreplace").decode("unicode_escape") == text


def record(**fields: object) -> dict[str, object]:
    base = {
        "type": "counter",
        "name": "orders.placed",
        "value": 1,
        "delta": False,
        "level": "info",
        "source": None,
        "tags": {},
        "timestamp": 1_700_000_000.25,
        "publisher": "1-2",
        "rate": 1.0,
    }
    return {**base, **fields}


def test_format_line_keeps_a_forged_tag_on_one_line() -> None:
    line = format_line(record(tags={"shop": FORGED, "colour": "\x1b[2J"}, source="web\u202e1"))
    assert "\n" not in line and "\x1b" not in line and line.isprintable()
    assert line == (
        "22:13:20.250 info    counter      orders.placed 1 source=web\\u202e1 "
        "colour=\\x1b[2J "
        'shop="eu\\n12:00:00.000 crit    counter      payments.refunded 1000000"'
    )


def test_format_line_shows_rates_and_set_members() -> None:
    assert format_line(record(rate=0.1)).endswith("orders.placed 1 @0.1")
    assert format_line(record(type="set", name="users", value="ann lee")).endswith(
        'users "ann lee"'
    )
    assert format_line(record(type="set", name="users", value=2**63)).endswith(f"users {2**63}")


def start_tail(run_cli, broker, client, *args):
    """Start ``zibrato tail`` and return it once a probe event shows up in its output."""
    tail = run_cli("tail", "--connect", broker.backend, *args)
    deadline = time.monotonic() + 10
    while not tail.lines_matching(lambda line: "tail.text.probe" in line):
        assert tail.popen.poll() is None, f"tail exited early: {tail!r}"
        assert time.monotonic() < deadline, f"tail never showed a probe: {tail!r}"
        client.incr("tail.text.probe")
        client.flush(timeout=0.1)
        time.sleep(0.02)
    return tail


@pytest.mark.parametrize("as_json", [False, True])
def test_tail_prints_hostile_tags_safely_and_sampled_events_and_sets(
    broker, run_cli, new_client, as_json
):
    z = new_client(publish=broker.frontend, rng=random.Random(0))
    tail = start_tail(run_cli, broker, z, *(["--json"] if as_json else []))
    z.incr("forged", tags={"shop": FORGED, "esc": "\x1b]0;owned\x07"})
    z.incr("sampled", 3, rate=0.999999)  # kept for the seeded draw; carries the rate
    z.set("users.active", "ann lee")
    z.incr("tail.text.done", level="crit")
    z.flush()
    tail.wait_for_line(lambda line: "tail.text.done" in line, timeout=10)
    lines = [line for line in tail.stdout if "probe" not in line]
    assert all(line.isprintable() for line in lines), lines
    if as_json:
        events = {event["name"]: event for event in map(json.loads, lines)}
        assert events["forged"]["tags"]["shop"] == FORGED  # JSON keeps the text exact
        assert events["sampled"]["rate"] == 0.999999 and events["sampled"]["value"] == 3
        assert events["users.active"]["type"] == "set"
        assert events["users.active"]["value"] == "ann lee"
        assert events["forged"]["rate"] == 1.0
    else:
        assert len(lines) == 4, lines  # one line per event: nothing forged a second one
        (forged,) = [line for line in lines if " forged " in line]
        assert 'shop="eu\\n12:00:00.000 crit' in forged
        assert "esc=\\x1b]0;owned\\x07" in forged
        assert any(line.endswith("sampled 3 @0.999999") for line in lines), lines
        assert any(line.endswith('users.active "ann lee"') for line in lines), lines
