"""Pacing: a burst at once, the rest spread over a window, hurried when stopping."""

from __future__ import annotations

import pytest

from zibrato.backends.toolkit.pacing import paced


class FakeTime:
    """A clock that only moves when the code under test waits or sleeps."""

    def __init__(self, hurry_at: float = float("inf")) -> None:
        self.now = 0.0
        self.hurry_at = hurry_at

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        if self.now + seconds >= self.hurry_at:
            self.now = max(self.now, self.hurry_at)
            return True
        self.now += seconds
        return False

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_paced_sends_a_burst_then_spreads_the_rest_over_the_window() -> None:
    t = FakeTime()
    items = paced(range(20), window=10.0, hurry_window=1.0, wait=t.wait, clock=t.clock, burst=4)
    sent_at = [t.now for _ in items]
    assert sent_at == [0.0] * 4 + [i * 0.5 for i in range(4, 20)]


def test_paced_hurries_the_rest_into_the_hurry_window() -> None:
    t = FakeTime(hurry_at=3.2)
    items = paced(
        range(20), window=10.0, hurry_window=1.0, wait=t.wait, clock=t.clock, sleep=t.sleep, burst=4
    )
    sent_at = [t.now for _ in items]
    assert sent_at[:7] == [0.0] * 4 + [2.0, 2.5, 3.0]
    assert sent_at[7] == 3.2  # hurried: what is left is spread over the next second
    assert sent_at[-1] == pytest.approx(3.2 + 12 / 13)
    assert sent_at == sorted(sent_at)


def test_small_flushes_are_not_delayed() -> None:
    def never(seconds: float) -> bool:
        raise AssertionError("a burst-sized flush waited")

    assert list(paced(range(16), window=10.0, hurry_window=1.0, wait=never)) == list(range(16))
