"""The API core (octopus.api) through BOTH transports, against the emulator over real HTTP.

Every behaviour runs once on the sync ``OctopusHook`` (requests, threads) and once on the async
``AsyncOctopusClient`` (httpx, coroutines): paging across pages, 404/400 mapped to typed errors carrying Octopus's
``ErrorMessage``/``Errors`` (403 with its hint, a proxy's HTML 502, dropped connections), 429/503 retried no
sooner than ``Retry-After``, client-side pacing, parallel operations, and the plan's writes (``execute_steps``,
written once) with a refused delete. Each test asserts what the server received.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import pytest

from octopus import aoperations, operations
from octopus.aio import AsyncOctopusClient
from octopus.api import OctopusApi, Parallel
from octopus.exceptions import (
    OctopusNotFoundError,
    OctopusPermissionError,
    OctopusRateLimitError,
    OctopusServerError,
    OctopusUnavailableError,
    OctopusValidationError,
)
from octopus.hooks import OctopusHook
from octopus.pacing import TokenBucket
from octopus_emulator.scenario import make_scenario, make_worker

POOL = "Airflow Pool"


class Transport:
    """One transport behind one interface: ``await call("list_workers", ...)`` runs the method on it."""

    def __init__(self, kind: str, client: Any) -> None:
        self.kind, self.client = kind, client

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, method)(*args, **kwargs)
        return await result if self.kind == "async" else result

    async def drive(self, operation: Any) -> Any:
        result = self.client.drive(operation)
        return await result if self.kind == "async" else result

    async def execute_actions(self, *args: Any, **kwargs: Any) -> None:
        if self.kind == "async":
            await aoperations.execute_actions(self.client, *args, **kwargs)
        else:
            operations.execute_actions(self.client, *args, **kwargs)


@pytest.fixture(params=["sync", "async"])
def transport(request, octopus_conn):
    """Opens a transport of each kind on ``octopus_default`` (the emulator), with keyword arguments."""

    @asynccontextmanager
    async def open_transport(**kwargs: Any):
        if request.param == "sync":
            with OctopusHook(**kwargs) as hook:
                yield Transport("sync", hook)
        else:
            async with AsyncOctopusClient(**kwargs) as client:
                yield Transport("async", client)

    return open_transport


def log(emulator) -> list[tuple[str, str, int]]:
    return [(e["method"], e["path"], e["status"]) for e in emulator.control.requests()]


def polling_worker(name: str, pool_id: str) -> dict:
    seeded = make_worker(name)
    endpoint = {"CommunicationStyle": "TentacleActive", "Uri": seeded["Uri"], "Thumbprint": seeded["Thumbprint"]}
    return {"Name": name, "IsDisabled": False, "WorkerPoolIds": [pool_id], "Endpoint": endpoint}


@pytest.mark.parametrize(("count", "page_size", "pages"), [(0, 7, 1), (7, 7, 1), (8, 7, 2), (30, 7, 5), (30, 1000, 1)])
async def test_paging_reads_every_page_in_order(emulator, octopus_conn, transport, count, page_size, pages):
    emulator.control.reset(make_scenario(1, POOL, workers={1: [make_worker(f"w{i:02d}") for i in range(count)]}))
    octopus_conn(page_size=page_size)
    emulator.control.clear_requests()
    async with transport() as octopus:
        workers = await octopus.call("list_workers", "Spaces-1", comm_styles=["TentacleActive"])
        assert [w["Name"] for w in workers] == [f"w{i:02d}" for i in range(count)]
        assert octopus.client.request_count == pages
    sent = emulator.control.requests()
    assert [(e["method"], e["path"]) for e in sent] == [("GET", "/api/Spaces-1/workers")] * pages
    assert all("commStyles=TentacleActive" in e["query"] and f"take={page_size}" in e["query"] for e in sent)


async def test_404_is_not_found_with_octopus_s_error_message(emulator, transport):
    async with transport() as octopus:
        with pytest.raises(OctopusNotFoundError) as info:
            await octopus.call("list_worker_pools", "Spaces-999")
    error = info.value
    assert error.status == 404 and error.method == "GET" and error.path == "/api/Spaces-999/workerpools/all"
    assert error.error_message and error.error_message in str(error) and error.attempts == 1
    assert log(emulator)[-1] == ("GET", "/api/Spaces-999/workerpools/all", 404)


async def test_400_is_a_validation_error_with_errors_and_never_retried(emulator, transport):
    emulator.control.reset(make_scenario(1, POOL))
    async with transport() as octopus:
        pool_id = next(p["Id"] for p in await octopus.call("list_worker_pools", "Spaces-1") if p["Name"] == POOL)
        await octopus.call("create_worker", "Spaces-1", polling_worker("w1", pool_id))
        clash = {**polling_worker("w2", pool_id), "Name": "w1"}  # another machine, a name already taken
        emulator.control.clear_requests()
        with pytest.raises(OctopusValidationError) as info:
            await octopus.call("create_worker", "Spaces-1", clash)
    assert info.value.status == 400 and info.value.errors and info.value.errors[0] in str(info.value)
    assert log(emulator) == [("POST", "/api/Spaces-1/workers", 400)]


@pytest.mark.parametrize("status", [429, 503])
async def test_retried_no_sooner_than_retry_after(emulator, transport, status):
    emulator.control.set_faults({"fail_next": [{"count": 1, "status": status, "retry_after": 1}]})
    emulator.control.clear_requests()
    async with transport() as octopus:
        assert await octopus.call("list_spaces")
        (event,) = octopus.client.retry_events
    assert event.retry_after == 1 and event.wait_seconds >= 1 and event.attempt == 1
    assert f"HTTP {status}" in event.reason
    assert [s for _, _, s in log(emulator)] == [status, 200]


async def test_429s_do_not_use_up_the_attempts_but_503s_do(emulator, octopus_conn, transport):
    octopus_conn(max_attempts=2)
    faults = [{"count": 3, "status": 429, "retry_after": 0}, {"count": 5, "status": 503}]
    emulator.control.set_faults({"fail_next": faults})
    emulator.control.clear_requests()
    async with transport() as octopus:
        with pytest.raises(OctopusServerError) as info:
            await octopus.call("list_spaces")
    assert [s for _, _, s in log(emulator)] == [429, 429, 429, 503, 503]
    assert info.value.attempts == 5 and "gave up after 5 attempts" in str(info.value)


async def test_retry_after_beyond_the_budget_gives_up_at_once(emulator, octopus_conn, transport):
    octopus_conn(max_retry_seconds=5)
    emulator.control.set_faults({"fail_next": [{"count": 1, "status": 429, "retry_after": 300}]})
    emulator.control.clear_requests()
    async with transport() as octopus:
        with pytest.raises(OctopusRateLimitError) as info:
            await octopus.call("list_spaces")
    assert info.value.retry_after == 300 and len(log(emulator)) == 1


class FrozenClock:
    """A clock that never moves: every token past the burst is owed, so the waits are exact."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


async def test_pacing_takes_a_token_before_every_request(emulator, transport):
    clock = FrozenClock()
    bucket = TokenBucket(600, burst=10, clock=clock, sleep=clock.sleep)
    emulator.control.set_faults({"fail_next": [{"count": 1, "status": 503, "retry_after": 0}]})
    emulator.control.clear_requests()
    async with transport(pacing=bucket) as octopus:
        for _ in range(11):
            await octopus.call("list_spaces")
        assert octopus.client.pacing is bucket
    # 12 requests (one retry): 10 from the burst, then 0.1 s and 0.2 s owed at 10 a second.
    assert len(log(emulator)) == 12
    assert bucket.waited_seconds == pytest.approx(0.3)
    # The hook blocks in the bucket; the async client awaits the same wait instead (never blocks the loop).
    assert clock.slept == (pytest.approx([0.1, 0.2]) if octopus.kind == "sync" else [])


async def test_parallel_operations_return_in_order(emulator, transport):
    emulator.control.reset(make_scenario(3, POOL))
    async with transport() as octopus:
        api: OctopusApi = octopus.client.api
        spaces = await octopus.drive(api.list_spaces())
        pools = await octopus.drive(_all(api, [api.list_worker_pools(s["Id"]) for s in spaces]))
    assert [[p["SpaceId"] for p in found] for found in pools] == [
        [s["Id"]] * len(found) for s, found in zip(spaces, pools, strict=True)
    ]
    assert sorted(path for _, path, _ in log(emulator)[-3:]) == sorted(
        f"/api/{s['Id']}/workerpools/all" for s in spaces
    )


def _all(api: OctopusApi, calls: list) -> Any:
    return (yield Parallel(calls, limit=3))


async def test_plan_writes_disable_a_worker_whose_delete_is_refused(emulator, transport):
    """execute_steps, written once: a refused delete leaves the record disabled, an absent one counts as done."""
    emulator.control.reset(make_scenario(1, POOL, workers={1: [make_worker("busy"), make_worker("gone")]}))
    async with transport() as octopus:
        workers = {w["Name"]: w for w in await octopus.call("list_workers", "Spaces-1")}
        await octopus.call("delete_worker", "Spaces-1", workers["gone"]["Id"])
        emulator.control.set_faults({"busy_workers": [workers["busy"]["Id"]]})
        emulator.control.clear_requests()
        actions = [
            {"op": "delete", "cloud": "local", "worker": workers[name], "outcome": "pruned", "reason": "stale"}
            for name in ("busy", "gone")
        ]
        clouds = {"local": {"pruned": 0, "disabled": 0, "errors": [], "retryable_errors": 0}}
        await octopus.execute_actions("Spaces-1", actions, clouds, 2)
        after = await octopus.call("get_worker", "Spaces-1", workers["busy"]["Id"])
    assert clouds["local"]["disabled"] == 1 and clouds["local"]["pruned"] == 1 and not clouds["local"]["errors"]
    assert [k["name"] for k in clouds["local"]["kept"]] == ["busy"] and clouds["local"]["ours_left"] == 1
    assert after["IsDisabled"] is True
    busy, gone = (f"/api/Spaces-1/workers/{workers[n]['Id']}" for n in ("busy", "gone"))
    assert sorted(log(emulator)[:3]) == sorted([("DELETE", busy, 400), ("DELETE", gone, 404), ("PUT", busy, 200)])


async def test_403_names_the_permission_and_what_to_do(emulator, transport):
    emulator.control.reset(make_scenario(2, POOL))
    emulator.control.set_faults({"forbidden_spaces": ["Spaces-2"]})
    async with transport() as octopus:
        with pytest.raises(OctopusPermissionError) as info:
            await octopus.call("list_worker_pools", "Spaces-2")
    assert info.value.status == 403 and "permission" in info.value.error_message.lower()
    assert "grant the API key's user this permission" in str(info.value)


async def test_a_proxy_s_html_502_is_described_and_retried(emulator, octopus_conn, transport):
    octopus_conn(max_attempts=3)
    emulator.control.set_faults({"fail_next": [{"count": 10, "status": 502, "html": True}]})
    emulator.control.clear_requests()
    async with transport() as octopus:
        with pytest.raises(OctopusServerError, match="non-JSON body") as info:
            await octopus.call("list_spaces")
    assert "<" not in info.value.summary and info.value.attempts == 3
    assert [s for _, _, s in log(emulator)] == [502, 502, 502]


async def test_dropped_connections_are_retried_then_unavailable(emulator, octopus_conn, transport):
    octopus_conn(max_attempts=2)
    emulator.control.set_faults({"drop_rate": 1.0})
    async with transport() as octopus:
        with pytest.raises(OctopusUnavailableError, match="could not reach") as info:
            await octopus.call("list_spaces")
    assert info.value.attempts == 2 and info.value.retryable


async def test_list_tasks_on_both_checks_states_before_sending(emulator, transport):
    emulator.control.clear_requests()
    async with transport() as octopus:
        with pytest.raises(ValueError, match="states must be a non-empty subset"):
            await octopus.call("list_tasks", "Spaces-1", states=["Running"])
        assert log(emulator) == []
        assert await octopus.call("list_tasks", "Spaces-1") == []
    ((method, path, status),) = log(emulator)
    assert (method, path, status) == ("GET", "/api/Spaces-1/tasks", 200)
    assert "states=Queued,Executing" in emulator.control.requests()[0]["query"]
