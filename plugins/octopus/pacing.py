"""Client-side request pacing: a thread-safe token bucket.

Octopus 2026.3+ rate-limits each user with a token bucket (by default 200 requests/minute, burst 200) and
answers 429 when it runs dry. Pacing on the client keeps a run under that limit instead of living on 429s and
their ``Retry-After`` waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_BURST", "TokenBucket", "pacing_share"]

#: Burst used when none is given: small, so a run spreads its requests evenly instead of spending a whole
#: minute's budget at once (other clients of the same user may already have drained the server's bucket).
DEFAULT_MAX_BURST = 10


class TokenBucket:
    """
    A token bucket refilled continuously at ``rate_per_minute / 60`` tokens per second.

    ``acquire()`` takes one token, sleeping until one is available. Waiters are served in arrival order: each
    reserves its token under the lock (the balance may go negative) and then sleeps outside the lock, so
    threads never spin and the long-run rate never exceeds ``rate_per_minute``.

    :param rate_per_minute: sustained rate, > 0.
    :param burst: bucket capacity (requests sent back to back); default ``min(rate, 10)``, at least 1.
    :param clock: monotonic clock in seconds (injectable for tests).
    :param sleep: sleep function (injectable for tests).
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(rate_per_minute, bool) or not isinstance(rate_per_minute, int | float):
            raise TypeError(f"rate_per_minute must be a number, got {rate_per_minute!r}")
        if not rate_per_minute > 0:
            raise ValueError(f"rate_per_minute must be > 0, got {rate_per_minute!r}")
        if burst is None:
            burst = max(1.0, min(float(rate_per_minute), DEFAULT_MAX_BURST))
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate_per_minute = float(rate_per_minute)
        self.burst = float(burst)
        self._per_second = self.rate_per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()
        #: Total seconds callers have been made to wait (for run summaries and benchmarks).
        self.waited_seconds = 0.0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self._per_second)
        self._updated = now

    def reserve(self) -> float:
        """Take one token now, possibly on credit; return the seconds the caller must wait before using it."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self._per_second
            self.waited_seconds += wait
            return wait

    def acquire(self) -> float:
        """Block until a token is available; return the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


def pacing_share(rate_per_minute: float, concurrency: int = 1) -> TokenBucket:
    """
    The bucket of one of ``concurrency`` clients that share one rate limit (tasks in parallel on one API key).

    Rate and burst are both divided, so the clients together never exceed ``rate_per_minute`` nor send more
    than one client's burst (``min(rate, 10)``) back to back; each still gets a burst of at least 1.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if isinstance(rate_per_minute, bool) or not isinstance(rate_per_minute, int | float) or not rate_per_minute > 0:
        raise ValueError(f"rate_per_minute must be a number > 0, got {rate_per_minute!r}")
    burst = max(1.0, min(float(rate_per_minute), DEFAULT_MAX_BURST) / concurrency)
    return TokenBucket(rate_per_minute / concurrency, burst=burst)
