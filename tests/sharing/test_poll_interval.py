"""``next_poll_interval``: the wait reads again after 1, 2, 4 … seconds, then every ``poll_interval``."""

from __future__ import annotations

from octopus.sharing import FIRST_POLL_SECONDS, next_poll_interval


def reads_at(poll_interval: float, until: float) -> list[float]:
    times, now = [0.0], 0.0
    while now < until:
        now += next_poll_interval(now, poll_interval)
        times.append(now)
    return times


def test_reads_double_their_spacing_up_to_the_poll_interval():
    assert reads_at(30, 120) == [0, 1, 2, 4, 8, 16, 32, 62, 92, 122]


def test_a_short_poll_interval_is_never_exceeded():
    assert next_poll_interval(0, 0.5) == 0.5
    assert all(next_poll_interval(w, 5) <= 5 for w in range(0, 100))


def test_the_first_read_again_comes_after_a_second():
    assert next_poll_interval(0, 30) == FIRST_POLL_SECONDS == 1.0
