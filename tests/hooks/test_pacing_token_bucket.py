"""Unit tests of the client-side token bucket, with a fake clock (no real sleeping)."""

from __future__ import annotations

import threading

import pytest

from octopus.pacing import TokenBucket


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)


def make_bucket(rate: float, burst: float | None = None) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(rate, burst, clock=clock, sleep=clock.sleep), clock


class TestTokenBucket:
    def test_burst_goes_out_without_waiting(self):
        bucket, clock = make_bucket(60, burst=5)
        waits = [bucket.acquire() for _ in range(5)]
        assert waits == [0, 0, 0, 0, 0]
        assert clock.sleeps == []

    def test_request_beyond_burst_waits_one_token_interval(self):
        bucket, clock = make_bucket(120, burst=2)  # 2 tokens/s -> 0.5 s per token
        bucket.acquire()
        bucket.acquire()
        assert bucket.acquire() == pytest.approx(0.5)
        assert clock.sleeps == [pytest.approx(0.5)]

    def test_queued_requests_wait_in_turn(self):
        bucket, _ = make_bucket(60, burst=1)  # 1 token/s
        waits = [bucket.acquire() for _ in range(4)]
        assert waits == pytest.approx([0, 1, 2, 3])

    def test_tokens_refill_with_time(self):
        bucket, clock = make_bucket(60, burst=1)
        bucket.acquire()
        clock.now += 1.0
        assert bucket.acquire() == 0

    def test_refill_is_capped_at_burst(self):
        bucket, clock = make_bucket(60, burst=2)
        clock.now += 3600
        waits = [bucket.acquire() for _ in range(3)]
        assert waits == pytest.approx([0, 0, 1])

    def test_long_run_rate_never_exceeds_limit(self):
        bucket, clock = make_bucket(200)  # Octopus 2026.3 default limit
        total_wait = sum(bucket.acquire() for _ in range(410))
        # 410 requests at 200/min with a burst of 10 need (410 - 10) / (200/60) = 120 s.
        assert total_wait >= 119.99
        assert bucket.waited_seconds == pytest.approx(total_wait)

    def test_default_burst_is_small(self):
        bucket, _ = make_bucket(200)
        assert bucket.burst == 10

    def test_default_burst_follows_low_rates(self):
        bucket, _ = make_bucket(3)
        assert bucket.burst == 3

    def test_default_burst_is_at_least_one(self):
        bucket, _ = make_bucket(0.5)
        assert bucket.burst == 1

    def test_concurrent_callers_share_the_budget(self):
        bucket, clock = make_bucket(60, burst=1)
        results: list[float] = []
        lock = threading.Lock()

        def worker() -> None:
            wait = bucket.acquire()
            with lock:
                results.append(wait)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Every caller got its own slot: 0, 1, ..., 7 seconds, no two sharing one.
        assert sorted(results) == pytest.approx([0, 1, 2, 3, 4, 5, 6, 7])

    @pytest.mark.parametrize("rate", [0, -5, float("nan")])
    def test_rejects_non_positive_rate(self, rate):
        with pytest.raises(ValueError, match="rate_per_minute must be > 0"):
            TokenBucket(rate)

    @pytest.mark.parametrize("rate", ["200", True, None])
    def test_rejects_non_numeric_rate(self, rate):
        with pytest.raises(TypeError, match="rate_per_minute must be a number"):
            TokenBucket(rate)

    def test_rejects_burst_below_one(self):
        with pytest.raises(ValueError, match="burst must be >= 1"):
            TokenBucket(60, burst=0.5)
