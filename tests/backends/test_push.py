"""The HTTP delivery the librato, otlp and remote-write backends share
(``zibrato.backends.toolkit.push``), against a real loopback server, on an injected clock."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from http_receiver import FakeClock, Receiver
from hypothesis import given
from hypothesis import strategies as st

from zibrato.backends.toolkit.push import (
    Pusher,
    StatusPolicy,
    TargetError,
    TargetRedirected,
    TargetRefused,
    TargetRejected,
    Verdict,
    parse_headers,
    retry_after_seconds,
    retry_server_errors,
)

SECRET = "Sup3r-s3cret-key-99"
RETRY_ONLY_429_AND_50X = StatusPolicy(retry={429, 502, 503, 504}.__contains__)


def encode(items: Sequence[int]) -> bytes:
    return json.dumps(list(items)).encode()


def delivered(receiver: Receiver) -> list[int]:
    return [item for posted in receiver.accepted() for item in json.loads(posted.body)]


@pytest.fixture
def make(receiver: Receiver) -> Iterator[Callable[..., Pusher[int]]]:
    made: list[Pusher[int]] = []
    errors: list[TargetError] = []

    def build(**options: Any) -> Pusher[int]:
        clock = FakeClock()
        settings: dict[str, Any] = {
            "url": receiver.url + "/in",
            "encode": encode,
            "on_error": errors.append,
            "policy": StatusPolicy(retry=retry_server_errors),
            "kind": "test",
            "what": "items",
            "headers": {"Api-Key": SECRET},
            "clock": clock,
            "pause": clock.pause,
            "backoff_base": 0.1,
            "backoff_cap": 0.2,
            "timeout": 2.0,
            **options,
        }
        pusher = Pusher(**settings)
        made.append(pusher)
        return pusher

    yield build
    for pusher in made:
        pusher.close()


def test_policies_say_what_each_status_means() -> None:
    spec = StatusPolicy(retry=retry_server_errors)  # remote write's
    otlp = RETRY_ONLY_429_AND_50X
    librato = StatusPolicy(retry_server_errors, Verdict.SPLIT, Verdict.HOLD, Verdict.HOLD)
    table = {
        200: (Verdict.SENT, Verdict.SENT, Verdict.SENT),
        204: (Verdict.SENT, Verdict.SENT, Verdict.SENT),
        302: (Verdict.HOLD, Verdict.HOLD, Verdict.HOLD),
        400: (Verdict.REJECT, Verdict.REJECT, Verdict.SPLIT),
        401: (Verdict.REJECT, Verdict.REJECT, Verdict.HOLD),
        404: (Verdict.REJECT, Verdict.REJECT, Verdict.HOLD),
        429: (Verdict.RETRY, Verdict.RETRY, Verdict.RETRY),
        500: (Verdict.RETRY, Verdict.REJECT, Verdict.RETRY),
        503: (Verdict.RETRY, Verdict.RETRY, Verdict.RETRY),
    }
    for status, verdicts in table.items():
        assert (spec.verdict(status), otlp.verdict(status), librato.verdict(status)) == verdicts


def test_retries_honour_retry_after_then_deliver(
    receiver: Receiver, make: Callable[..., Pusher[int]]
) -> None:
    receiver.script.extend([(503, {"Retry-After": "3"}, b""), (502, {}, b"")])
    pusher = make()
    pusher.push([1, 2, 3], pusher.deadline(10.0, stopping=False))
    assert delivered(receiver) == [1, 2, 3] and pusher.sent == 3
    pauses = pusher._pause.__self__.pauses  # type: ignore[attr-defined]
    assert pauses[0] >= 3.0 and 0.05 <= pauses[1] <= 0.2


def test_a_final_answer_drops_the_request_and_counts_it(
    receiver: Receiver, make: Callable[..., Pusher[int]]
) -> None:
    receiver.script.append((400, {}, b'{"error": "out of order sample"}'))
    pusher = make(max_per_request=2)
    pusher.push([1, 2, 3], pusher.deadline(10.0, stopping=False))
    assert delivered(receiver) == [3] and pusher.rejected == 2 and pusher.buffered == 0
    assert isinstance(pusher.last_error, TargetRejected)
    assert '2 items (HTTP 400: {"error": "out of order sample"})' in str(pusher.last_error)


def test_a_redirect_and_a_refusal_keep_the_items_for_the_next_flush(
    receiver: Receiver, make: Callable[..., Pusher[int]]
) -> None:
    librato_like = StatusPolicy(retry_server_errors, refused=Verdict.HOLD, other=Verdict.HOLD)
    pusher = make(policy=librato_like)
    receiver.script.append((302, {"Location": "http://127.0.0.1:1/x"}, b""))
    pusher.push([1], pusher.deadline(10.0, stopping=False))
    assert isinstance(pusher.last_error, TargetRedirected) and pusher.buffered == 1
    receiver.script.append((403, {}, b""))
    pusher.push([2], pusher.deadline(10.0, stopping=False))
    assert isinstance(pusher.last_error, TargetRefused) and pusher.buffered == 2
    pusher.push([], pusher.deadline(10.0, stopping=False))
    assert delivered(receiver) == [1, 2] and len(receiver.posted) == 3


def test_retries_stop_at_the_flush_deadline_and_retry_after_holds_later_flushes(
    receiver: Receiver, make: Callable[..., Pusher[int]]
) -> None:
    receiver.script.append((429, {"Retry-After": "30"}, b""))
    pusher = make()
    pusher.push([1], pusher.deadline(1.0, stopping=False))
    pusher.push([2], pusher.deadline(1.0, stopping=False))  # 30 s have not passed
    assert len(receiver.posted) == 1 and pusher.buffered == 2
    pusher._clock.now += 30  # type: ignore[attr-defined]
    pusher.push([3], pusher.deadline(1.0, stopping=False))
    assert delivered(receiver) == [1, 2, 3]


def test_one_push_per_request_never_mixes_flushes(
    receiver: Receiver, make: Callable[..., Pusher[int]]
) -> None:
    receiver.script.append((503, {"Retry-After": "60"}, b""))
    pusher = make(one_push_per_request=True, max_per_request=3)
    for flush in range(3):
        pusher.push([10 * flush + i for i in range(4)], pusher.deadline(1.0, stopping=False))
    pusher._clock.now += 60  # type: ignore[attr-defined]
    pusher.push([], pusher.deadline(10.0, stopping=False))
    bodies = [json.loads(posted.body) for posted in receiver.accepted()]
    assert bodies == [[0, 1, 2], [3], [10, 11, 12], [13], [20, 21, 22], [23]]


def test_the_buffer_is_bounded_and_what_is_left_at_close_is_counted(
    make: Callable[..., Pusher[int]], caplog: pytest.LogCaptureFixture
) -> None:
    pusher = make(url="http://127.0.0.1:1/nothing-listens", max_buffer=5)
    for flush in range(3):
        pusher.push([flush] * 3, pusher.deadline(0.5, stopping=False))
    assert pusher.buffered == 5 and pusher.dropped == 4
    pusher.close()
    assert pusher.buffered == 0 and pusher.dropped == 9
    assert "5 items not delivered at stop" in caplog.text


def test_partial_success_counts_the_dropped_items(
    receiver: Receiver, make: Callable[..., Pusher[int]]
) -> None:
    receiver.body = b"2"
    pusher = make(accepted=lambda body, sent: int(body or 0))
    pusher.push([1, 2, 3], pusher.deadline(10.0, stopping=False))
    assert (pusher.sent, pusher.rejected) == (1, 2)
    assert "dropped 2 of its 3 items" in str(pusher.last_error)


def test_secrets_never_show_even_when_the_target_echoes_them(
    receiver: Receiver, make: Callable[..., Pusher[int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script.append((400, {}, f"bad key {SECRET}".encode()))
    pusher = make(secrets=[SECRET])
    pusher.push([1], pusher.deadline(10.0, stopping=False))
    assert receiver.posted[0].headers["api-key"] == SECRET
    shown = [str(pusher.last_error), repr(pusher.last_error), caplog.text]
    assert "bad key ***" in shown[0]
    assert not any(SECRET in text for text in shown)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(soon) <= 31
    assert retry_after_seconds("2.5") == 2.5
    for nothing in (None, "", "-3", "nan", "inf", "soon", "Mon, 99 Foo"):
        assert retry_after_seconds(nothing) == 0.0


def test_headers_parse_like_the_otel_variables() -> None:
    assert parse_headers("a=1, b = x%2Cy ,,") == {"a": "1", "b": "x,y"}
    assert parse_headers({"X-Scope-OrgID": "shop"}) == {"X-Scope-OrgID": "shop"}
    for bad in ("novalue", "bad name=1", "=1", "a=x%0Ay"):
        with pytest.raises(ValueError):
            parse_headers(bad)


@given(st.text(max_size=200))
def test_any_header_text_parses_or_is_refused_without_quoting_a_value(text: str) -> None:
    try:
        headers = parse_headers(text)
    except ValueError as exc:
        for part in text.split(","):
            value = part.partition("=")[2].strip()
            if len(value) > 3 and "=" in part and value not in part.partition("=")[0]:
                assert value not in str(exc)
    else:
        assert all(isinstance(key, str) and "\n" not in value for key, value in headers.items())
