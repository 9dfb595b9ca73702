"""Pruning never removes a copy under a running step (issue 19): it is disabled, and removed by a later run.

Both share paths (the worker's ``operations.share_space`` and the triggerer's ``aoperations.share_space``) against
the emulator's lease model: a simulated deployment step leases our stale copy before the share runs.
"""

from __future__ import annotations

import asyncio

import pytest

from octopus import aoperations, operations
from octopus.aio import AsyncOctopusClient
from octopus.hooks import OctopusHook
from octopus_emulator.scenario import make_scenario, make_worker
from tests.share_trigger.conftest import OLD, POOL, connect, upstream


def share_sync(visit, fleet):
    with OctopusHook() as hook:
        return operations.share_space(hook, visit, [fleet], prune=True, dry_run=False)


def share_async(visit, fleet):
    async def run():
        async with AsyncOctopusClient() as client:
            return await aoperations.share_space(client, visit, [fleet], prune=True, dry_run=False)

    return asyncio.run(run())


@pytest.fixture
def busy_stale_copy(emulator, monkeypatch):
    """Space 002 holds only our stale copy ``OLD`` (owned, not in the fleet), and a step runs on it."""
    fleet = [make_worker(f"t-local-{i}", [POOL], HealthStatus="Healthy") for i in (1, 2)]
    emulator.control.clear_faults()
    emulator.control.reset(
        make_scenario(2, [POOL], workers={1: fleet, 2: [make_worker(OLD, [POOL], HealthStatus="Healthy")]})
    )
    connect(emulator, monkeypatch)
    step = emulator.control.start_task(POOL, None, space="Space 002")
    assert step["worker_name"] == OLD
    return emulator, step


@pytest.mark.parametrize("share", [share_sync, share_async], ids=["worker", "triggerer"])
def test_a_busy_stale_copy_is_drained_not_deleted_and_removed_once_idle(busy_stale_copy, share):
    emulator, step = busy_stale_copy
    visits, fleet = upstream()
    visit = next(v for v in visits if v["name"] == "Space 002")

    result = share(visit, fleet)
    counts = result["clouds"]["local"]
    assert (counts["draining"], counts["pruned"], counts["added"]) == (1, 0, 2)
    copy = next(w for w in emulator.control.state()["workers"] if w["Name"] == OLD)
    assert copy["IsDisabled"] is True and copy["WorkerPoolIds"]  # out of service, still there
    assert emulator.control.task(step["id"])["state"] == "Executing"  # the step was not killed
    assert result["owned_remaining"]["local"] == [{"name": OLD, "thumbprint": copy["Endpoint"]["Thumbprint"]}]
    assert not [r for r in emulator.control.requests() if r["method"] == "DELETE"]

    emulator.control.complete_task(step["id"])
    result = share(visit, fleet)
    assert result["clouds"]["local"]["pruned"] == 1
    assert OLD not in {w["Name"] for w in emulator.control.state()["workers"]}
    counters = emulator.control.step_counters()
    assert (counters["killed"], counters["failed_no_worker"]) == (0, 0)


def test_no_lease_is_read_when_nothing_is_removed(busy_stale_copy):
    emulator, _ = busy_stale_copy
    visits, fleet = upstream()
    visit = next(v for v in visits if v["name"] == "Space 001")
    emulator.control.clear_requests()
    share_sync(visit, fleet)
    assert not [r for r in emulator.control.requests() if "workertaskleases" in r["path"]]
