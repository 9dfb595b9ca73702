"""``Coalescer``: concurrent callers share one call; finished calls are reused only when asked to."""

from __future__ import annotations

import asyncio

import pytest

from octopus.coalesce import Coalescer


def _counting_call(release: asyncio.Event, calls: list[int], value=None, error: Exception | None = None):
    async def call():
        calls.append(1)
        await release.wait()
        if error is not None:
            raise error
        return value if value is not None else len(calls)

    return call


def test_callers_with_a_call_in_flight_share_it():
    async def scenario():
        reads, release, calls = Coalescer(), asyncio.Event(), []
        callers = [asyncio.create_task(reads.get(("xcom", 1), _counting_call(release, calls))) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*callers), calls, reads.calls

    results, calls, counted = asyncio.run(scenario())
    assert results == [1] * 5 and len(calls) == 1 and counted == {"xcom": 1}


def test_a_finished_call_is_not_reused_unless_kept():
    async def scenario():
        reads, release, calls = Coalescer(), asyncio.Event(), []
        release.set()
        fresh = [await reads.get("ledger", _counting_call(release, calls)) for _ in range(2)]
        kept = [await reads.get("xcom", _counting_call(release, calls), keep=True) for _ in range(2)]
        reads.clear()
        again = await reads.get("xcom", _counting_call(release, calls), keep=True)
        return fresh, kept, again

    fresh, kept, again = asyncio.run(scenario())
    assert fresh == [1, 2]  # each read made after the previous one ended
    assert kept == [3, 3]
    assert again == 4


def test_different_keys_are_different_calls():
    async def scenario():
        reads, release, calls = Coalescer(), asyncio.Event(), []
        tasks = [asyncio.create_task(reads.get(key, _counting_call(release, calls, value=key))) for key in "abab"]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*tasks), calls

    results, calls = asyncio.run(scenario())
    assert results == list("abab") and len(calls) == 2


def test_the_leaders_error_reaches_every_waiter_and_is_not_kept():
    async def scenario():
        reads, release, calls = Coalescer(), asyncio.Event(), []
        call = _counting_call(release, calls, error=RuntimeError("boom"))
        callers = [asyncio.create_task(reads.get("k", call, keep=True)) for _ in range(3)]
        await asyncio.sleep(0)
        release.set()
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
        retry = await reads.get("k", _counting_call(release, calls, value="ok"), keep=True)
        return outcomes, retry, calls

    outcomes, retry, calls = asyncio.run(scenario())
    assert [str(o) for o in outcomes] == ["boom"] * 3 and all(isinstance(o, RuntimeError) for o in outcomes)
    assert retry == "ok" and len(calls) == 2


def test_a_waiter_makes_the_call_itself_when_the_leader_is_cancelled():
    async def scenario():
        reads, release, calls = Coalescer(), asyncio.Event(), []
        leader = asyncio.create_task(reads.get("k", _counting_call(release, calls, value="v")))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(reads.get("k", _counting_call(release, calls, value="v")))
        await asyncio.sleep(0)
        leader.cancel()
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await waiter, calls

    value, calls = asyncio.run(scenario())
    assert value == "v" and len(calls) == 2


def test_kept_results_are_bounded_oldest_out_first():
    async def scenario():
        reads, release, calls = Coalescer(max_kept=2), asyncio.Event(), []
        release.set()
        for key in "abc":
            await reads.get(key, _counting_call(release, calls, value=key), keep=True)
        before = len(calls)
        await reads.get("c", _counting_call(release, calls), keep=True)  # kept
        await reads.get("a", _counting_call(release, calls, value="a"), keep=True)  # pushed out: read again
        return len(calls) - before

    assert asyncio.run(scenario()) == 1
