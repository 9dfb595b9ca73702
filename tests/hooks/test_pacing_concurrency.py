"""Pacing shared between parallel tasks: ``OctopusHook(concurrency=N)`` takes 1/N of the key's rate limit."""

from __future__ import annotations

import threading

import pytest

from octopus.hooks import OctopusHook
from octopus.pacing import DEFAULT_MAX_BURST, TokenBucket, pacing_share


class TestPacingShare:
    def test_rate_and_burst_are_divided(self):
        bucket = pacing_share(180, 3)
        assert bucket.rate_per_minute == pytest.approx(60)
        assert bucket.burst == pytest.approx(DEFAULT_MAX_BURST / 3)

    def test_one_client_keeps_the_whole_limit(self):
        bucket = pacing_share(180)
        assert (bucket.rate_per_minute, bucket.burst) == (180, DEFAULT_MAX_BURST)

    def test_burst_never_drops_below_one_request(self):
        assert pacing_share(6, 40).burst == 1

    @pytest.mark.parametrize("concurrency", [0, -1, 1.5, True, "2"])
    def test_bad_concurrency_is_refused(self, concurrency):
        with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
            pacing_share(60, concurrency)


class TestHookConcurrency:
    def test_hook_paces_at_its_share_of_the_connection_s_limit(self, emulator, octopus_conn):
        octopus_conn(max_requests_per_minute=180)
        hook = OctopusHook(concurrency=4)
        assert hook.pacing.rate_per_minute == pytest.approx(45)

    def test_share_of_a_keyword_limit(self, emulator, octopus_conn):
        assert OctopusHook(max_requests_per_minute=100, concurrency=2).pacing.rate_per_minute == 50

    def test_no_limit_no_pacing_whatever_the_concurrency(self, emulator, octopus_conn):
        assert OctopusHook(concurrency=8).pacing is None

    @pytest.mark.parametrize("concurrency", [0, 2.0, False])
    def test_bad_concurrency_fails_where_the_hook_is_built(self, concurrency):
        with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
            OctopusHook(concurrency=concurrency)

    def test_a_shared_bucket_and_a_concurrency_are_exclusive(self):
        with pytest.raises(ValueError, match="not both"):
            OctopusHook(pacing=TokenBucket(60), concurrency=2)


def run_parallel(hooks: list[OctopusHook], requests_each: int) -> None:
    errors: list[BaseException] = []

    def work(hook: OctopusHook) -> None:
        try:
            for _ in range(requests_each):
                hook.list_spaces()
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(hook,)) for hook in hooks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


class TestParallelTasksStayUnderTheServerLimit:
    """Three tasks on one key against the emulator's 2026.3-style limiter (token bucket per API key)."""

    SERVER = {"per_minute": 1200, "burst": 10}  # 20 requests/s, 10 back to back
    TASKS = 3
    REQUESTS_EACH = 10

    def rate_limited(self, emulator) -> int:
        return emulator.control.counters()["faults"].get("rate_limit", 0)

    def test_with_their_concurrency_they_are_never_rate_limited(self, emulator, octopus_conn):
        emulator.control.set_faults({"rate_limit": self.SERVER})
        octopus_conn(max_requests_per_minute=1000)  # the key's limit, with the usual margin under the server's
        hooks = [OctopusHook(concurrency=self.TASKS) for _ in range(self.TASKS)]
        run_parallel(hooks, self.REQUESTS_EACH)
        assert self.rate_limited(emulator) == 0
        assert sum(hook.request_count for hook in hooks) == self.TASKS * self.REQUESTS_EACH  # no retries

    def test_without_it_each_takes_the_whole_limit_and_meets_429s(self, emulator, octopus_conn):
        # The control: the same tasks, each pacing at the full rate, burst past the server's bucket together.
        emulator.control.set_faults({"rate_limit": self.SERVER})
        octopus_conn(max_requests_per_minute=1000)
        hooks = [OctopusHook() for _ in range(self.TASKS)]
        run_parallel(hooks, self.REQUESTS_EACH)
        assert self.rate_limited(emulator) > 0
