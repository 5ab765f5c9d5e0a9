"""`RefusalCount`: `max_protocol_errors` refusals within any 10 s window close a session."""

from __future__ import annotations

from hub.net.sessions import REFUSAL_WINDOW_S, RefusalCount


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_add_up_whatever_came_between() -> None:
    clock = Clock()
    count = RefusalCount(3, clock=clock)
    assert not count.refused()
    clock.now += 4
    assert not count.refused()
    clock.now += 4
    assert count.refused()  # three within 8 s


def test_refusals_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    count = RefusalCount(3, clock=clock)
    for _ in range(50):  # one every 6 s: never 3 within 10 s
        assert not count.refused()
        clock.now += 6
    assert not count.refused()
    clock.now += REFUSAL_WINDOW_S - 7
    assert count.refused()  # the last three are within 9 s


def test_a_limit_of_one_closes_at_the_first_refusal() -> None:
    assert RefusalCount(1, clock=Clock()).refused()
