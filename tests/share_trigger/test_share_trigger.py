"""The share trigger and the async share path, against the Octopus emulator (a real server on loopback).

* ``aoperations.share_space`` leaves Octopus exactly as ``operations.share_space`` does, with the same result
  and the same requests (one read per space, the policy only when creating, one write per record).
* ``OctopusShareSpaceTrigger`` ends its task with ``TaskSuccessEvent`` carrying ``space_result``; a retryable
  error gives ``TaskFailedEvent``; a fence refusal or an error no retry fixes resumes the task on a worker,
  which fails it without retries; the fences refuse before any request is sent.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent, TriggerEvent

from octopus import aio, aoperations, ledger, operations, share_trigger
from octopus.aio import AsyncOctopusClient
from octopus.hooks import OctopusHook
from octopus.share_operator import OctopusShareSpaceOperator, share_trigger_args
from octopus.share_trigger import OctopusShareSpaceTrigger
from tests.share_trigger.conftest import OLD, PREFIX, mixed_scenario, upstream, workers_state

RUN = {"dag_id": "share_octopus_workers", "run_id": "manual__1", "name_prefix": PREFIX, "dry_run": False}


#: The task ids the share DAG wires (read in the triggerer).
UPSTREAM = {"spaces": "spaces_to_share", "fleets": "wait_for_workers"}

def _without_requests(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "requests"} for r in results]


def _routes(emulator) -> Counter:
    return Counter(
        f"{e['method']} {e['path'].split('/')[-1] if 'Workers-' in e['path'] else e['path']}"
        for e in emulator.control.requests()
    )


def _busy_old_copy(emulator) -> str:
    return next(w["Id"] for w in emulator.control.state()["workers"] if w["SpaceId"] == "Spaces-3" and w["Name"] == OLD)


async def _share_all_async(visits, fleet) -> list[dict[str, Any]]:
    async with AsyncOctopusClient() as client:
        return [await aoperations.share_space(client, v, [fleet], prune=True, dry_run=False) for v in visits]


def _events(trigger: OctopusShareSpaceTrigger) -> list[TriggerEvent]:
    async def collect():
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def _trigger(space, fleets, **run: Any) -> OctopusShareSpaceTrigger:
    return OctopusShareSpaceTrigger(space=space, fleets=fleets, run_settings={**RUN, **run})


ME = {"dag_id": RUN["dag_id"], "run_id": RUN["run_id"], "task": "claim_deployment[-1]"}
OTHER = {"dag_id": "retire_octopus_workers", "run_id": "manual__other", "task": "claim_deployment[-1]"}
RUNNING = staticmethod(lambda dag_id, run_id: "running")


@pytest.fixture
def ledger_store(octopus, monkeypatch):
    """The trigger's fences read this in-memory ledger (the triggerer reads Airflow Variables instead).

    Run ``RUN`` holds the deployment and registered the fleet of :func:`upstream` (generation 1), sealed with the
    connection's key; the stale copy ``OLD`` is owned too.
    """
    store = ledger.MemoryStore()
    monkeypatch.setattr(OctopusShareSpaceTrigger, "store_factory", lambda: store)
    monkeypatch.setattr(OctopusShareSpaceTrigger, "run_state", RUNNING)
    assert ledger.claim(store, PREFIX, ["local"], ME, RUNNING) is None
    _, fleet = upstream()
    signer = ledger.Signer(octopus.api_key)
    doc = ledger.record_fleet(ledger.load(store, PREFIX, "local"), fleet["workers"], ME, signer)
    doc = ledger.adopt(doc, [o for o in fleet["owned"] if o["name"] == OLD], signer)
    ledger.save(store, doc)
    return store


def _taken_by_another_run(store) -> None:
    ledger.release(store, PREFIX, ["local"], ME)
    assert ledger.claim(store, PREFIX, ["local"], OTHER, RUNNING) is None


def test_async_share_leaves_octopus_exactly_as_the_sync_share(octopus):
    octopus.control.set_faults({"busy_workers": [_busy_old_copy(octopus)]})
    visits, fleet = upstream()
    octopus.control.clear_requests()
    with OctopusHook() as hook:
        sync_results = [operations.share_space(hook, v, [fleet], prune=True, dry_run=False) for v in visits]
    sync_state, sync_routes = workers_state(octopus), _routes(octopus)

    octopus.control.reset(mixed_scenario())
    octopus.control.set_faults({"busy_workers": [_busy_old_copy(octopus)]})
    visits, fleet = upstream()
    octopus.control.clear_requests()
    async_results = asyncio.run(_share_all_async(visits, fleet))

    assert workers_state(octopus) == sync_state
    assert _without_requests(async_results) == _without_requests(sync_results)
    assert _routes(octopus) == sync_routes
    by_space = {r["space_name"]: r["clouds"]["local"] for r in async_results}
    assert by_space["Space 002"]["pruned"] == 1 and by_space["Space 002"]["added"] == 1
    assert by_space["Space 003"]["disabled"] == 1 and by_space["Space 003"]["foreign"] == 1
    assert by_space["Space 004"]["fixed"] == 1
    # The refused delete's record stays ours in the ledger, or no later run could remove it.
    space3 = next(r for r in async_results if r["space_name"] == "Space 003")
    assert [w["name"] for w in space3["owned_remaining"]["local"]] == [OLD]
    assert space3["foreign"] == ["laptop"]


def test_async_rerun_reads_each_space_once_and_writes_nothing(octopus):
    visits, fleet = upstream()
    asyncio.run(_share_all_async(visits, fleet))
    octopus.control.clear_requests()
    asyncio.run(_share_all_async(visits, fleet))
    methods = Counter(e["method"] for e in octopus.control.requests())
    assert methods == {"GET": len(visits)}


def test_trigger_ends_the_task_with_success_and_its_space_result(octopus, ledger_store):
    visits, fleet = upstream()
    space = next(v for v in visits if v["name"] == "Space 005")
    [event] = _events(_trigger(space, [fleet]))
    assert isinstance(event, TaskSuccessEvent)
    result = event.xcoms["space_result"]
    assert result["space_name"] == "Space 005"
    assert result["clouds"]["local"]["added"] == 2
    assert result["requests"] == 1 + 1 + 2  # the space's workers, its default policy, one POST per worker
    names = {w[1] for w in workers_state(octopus) if w[0] == space["id"]}
    assert names == {"t-local-1", "t-local-2"}


def test_trigger_accepts_the_json_the_triggerer_renders(octopus, ledger_store):
    import json

    visits, fleet = upstream()
    space = visits[-1]
    octopus.control.clear_requests()
    [event] = _events(
        OctopusShareSpaceTrigger(
            space=json.dumps(space), fleets=json.dumps([fleet, None]), run_settings=json.dumps({**RUN, "dry_run": True})
        )
    )
    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms["space_result"]["dry_run"] is True
    assert [e["method"] for e in octopus.control.requests()] == ["GET"]  # a dry run reads, writes nothing


def test_fence_refuses_an_older_fleet_before_any_request(octopus, ledger_store):
    visits, fleet = upstream(generation=1)
    doc = ledger.load(ledger_store, PREFIX, "local")
    doc["fleet"] = {"generation": 2, "dag_id": RUN["dag_id"], "run_id": "scheduled__newer", "workers": []}
    ledger.save(ledger_store, doc)
    octopus.control.clear_requests()
    [event] = _events(_trigger(visits[1], [fleet]))
    assert type(event) is TriggerEvent
    assert event.payload["status"] == "failed"
    assert "generation 1" in event.payload["message"] and "refusing to replay" in event.payload["message"]
    assert octopus.control.requests() == []


def test_fence_refuses_while_another_run_holds_the_lease(octopus, ledger_store):
    visits, fleet = upstream()
    _taken_by_another_run(ledger_store)
    octopus.control.clear_requests()
    [event] = _events(_trigger(visits[1], [fleet]))
    assert event.payload["status"] == "failed"
    assert "retire_octopus_workers" in event.payload["message"]
    assert octopus.control.requests() == []


def test_retryable_failure_gives_task_failed_event_with_the_result(octopus, ledger_store):
    visits, fleet = upstream()
    octopus.control.set_faults({"fail_next": [{"count": 10, "status": 503, "method": "GET", "path_regex": "/workers"}]})
    [event] = _events(_trigger(visits[1], [fleet]))
    assert isinstance(event, TaskFailedEvent)
    result = event.xcoms["space_result"]
    assert result["clouds"]["local"]["failed"] == 1 and result["clouds"]["local"]["retryable_errors"] == 1


def test_unfixable_failure_resumes_on_a_worker_that_fails_without_retry(octopus, ledger_store):
    visits, fleet = upstream()
    octopus.control.set_faults({"readonly_spaces": [visits[1]["id"]]})
    [event] = _events(_trigger(visits[1], [fleet]))
    assert type(event) is TriggerEvent and event.payload["status"] == "failed"
    assert visits[1]["name"] in event.payload["message"]

    pushed = {}

    class Ti:
        def xcom_push(self, key, value):
            pushed[key] = value

    operator = OctopusShareSpaceOperator(task_id="share_to_space", space=visits[1])
    with pytest.raises(AirflowFailException, match=visits[1]["name"]):
        operator.execute_complete({"ti": Ti()}, event=event.payload)
    assert pushed["space_result"]["space_name"] == visits[1]["name"]


def test_one_triggerer_shares_at_most_spaces_at_once(octopus, ledger_store, monkeypatch):
    visits, fleet = upstream()
    running, peak = 0, 0
    real = aoperations.share_space

    async def counting(*args, **kwargs):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.05)
            return await real(*args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(aoperations, "share_space", counting)

    async def gather_events():
        async def one(t):
            return [e async for e in t.run()]

        triggers = [
            OctopusShareSpaceTrigger(space=v, fleets=[fleet], run_settings=RUN, spaces_at_once=2) for v in visits
        ]
        return await asyncio.gather(*(one(t) for t in triggers))

    events = asyncio.run(gather_events())
    assert all(isinstance(e, TaskSuccessEvent) for [e] in events)
    assert peak == 2


def test_trigger_round_trips_through_serialize():
    args = share_trigger_args("octopus_default", upstream=UPSTREAM, concurrency=8)
    trigger = OctopusShareSpaceTrigger(**args.trigger_kwargs)
    classpath, kwargs = trigger.serialize()
    assert classpath == args.trigger_cls == "octopus.share_trigger.OctopusShareSpaceTrigger"
    assert kwargs == {
        **args.trigger_kwargs,
        "space": None,  # read from spaces_to_share's XCom in the triggerer
        "fleets": None,  # and from wait_for_workers'
        "upstream": {"spaces": "spaces_to_share", "fleets": "wait_for_workers"},
        "parallelism": aoperations.DEFAULT_PARALLELISM,
    }
    assert "xcom_pull" not in args.trigger_kwargs["run_settings"]  # no per-index request to render it
    assert share_trigger.DEFAULT_SPACES_AT_ONCE == 16


def test_in_the_triggerer_the_result_is_pushed_through_the_task_sdk_not_the_event(octopus, ledger_store, monkeypatch):
    """The event's own ``xcoms`` would be stored JSON-encoded twice by Airflow 3.3.2 (see ``_end_task``)."""
    visits, fleet = upstream()
    pushed = []

    class RecordingXCom:  # stands in for the Task SDK's XCom, which needs the triggerer's comms
        @staticmethod
        async def aset(key, value, **where):
            pushed.append((key, value, where))

    class RuntimeTi:  # what the triggerer sets on a trigger started for a task
        task_id, dag_id, run_id, map_index = "share_to_space", RUN["dag_id"], RUN["run_id"], 2

    monkeypatch.setattr(share_trigger, "XCom", RecordingXCom)
    trigger = _trigger(visits[2], [fleet])
    trigger.task_instance = RuntimeTi()
    [event] = _events(trigger)
    assert isinstance(event, TaskSuccessEvent) and event.xcoms is None
    [(key, value, where)] = pushed
    assert key == "space_result" and value["space_name"] == visits[2]["name"]
    assert where == {"dag_id": RUN["dag_id"], "task_id": "share_to_space", "run_id": RUN["run_id"], "map_index": 2}


class _RecordingXCom:
    """Stands in for the Task SDK's XCom in the triggerer: the upstream XComs, every read and push counted."""

    def __init__(self, values: dict[tuple[str, int], Any]) -> None:
        self.values = values
        self.reads: list[tuple[str, int]] = []
        self.pushed: dict[int, Any] = {}

    async def aget_one(self, *, key, dag_id, task_id, run_id, map_index):
        assert key == "return_value" and dag_id == RUN["dag_id"] and run_id == RUN["run_id"]
        self.reads.append((task_id, map_index))
        await asyncio.sleep(0)  # a round trip to the supervisor: other triggers run meanwhile
        return self.values.get((task_id, map_index))

    async def aset(self, *, key, value, dag_id, task_id, run_id, map_index):
        self.pushed[map_index] = value


def _runtime_ti(map_index: int, try_number: int = 1):
    return type(
        "RuntimeTi",
        (),
        {
            "task_id": "share_to_space",
            "dag_id": RUN["dag_id"],
            "run_id": RUN["run_id"],
            "map_index": map_index,
            "try_number": try_number,
        },
    )()


def _started_from_the_scheduler(map_index: int, try_number: int = 1, **run: Any) -> OctopusShareSpaceTrigger:
    """A trigger as ``share_trigger_args`` makes it, with the task instance the triggerer sets."""
    kwargs = share_trigger_args("octopus_default", upstream=UPSTREAM).trigger_kwargs
    trigger = OctopusShareSpaceTrigger(**{**kwargs, "run_settings": {**RUN, "fleet_count": 1, **run}})
    trigger.task_instance = _runtime_ti(map_index, try_number)
    return trigger


async def _run_all(triggers) -> list[list[TriggerEvent]]:
    async def one(trigger):
        return [event async for event in trigger.run()]

    return await asyncio.gather(*(one(t) for t in triggers))


def test_in_the_triggerer_every_index_of_a_run_reads_the_upstream_xcoms_once(octopus, ledger_store, monkeypatch):
    """A template's xcom_pull would be one supervisor request per index; the triggers share one read each."""
    visits, fleet = upstream()
    xcom = _RecordingXCom({("spaces_to_share", -1): visits, ("wait_for_workers", 0): fleet})
    monkeypatch.setattr(share_trigger, "XCom", xcom)
    events = asyncio.run(_run_all([_started_from_the_scheduler(i) for i in range(len(visits))]))
    assert all(isinstance(e, TaskSuccessEvent) for [e] in events)
    assert sorted(xcom.reads) == [("spaces_to_share", -1), ("wait_for_workers", 0)]
    # each index shared its own space, and pushed its own result
    assert {i: r["space_name"] for i, r in xcom.pushed.items()} == {i: v["name"] for i, v in enumerate(visits)}
    names = {(w[0], w[1]) for w in workers_state(octopus)}
    assert all((v["id"], "t-local-1") in names for v in visits)


def test_every_index_gets_its_own_copy_of_the_shared_reads(octopus, monkeypatch):
    visits, fleet = upstream()
    pristine = copy.deepcopy((visits, fleet))
    xcom = _RecordingXCom({("spaces_to_share", -1): visits, ("wait_for_workers", 0): fleet})
    monkeypatch.setattr(share_trigger, "XCom", xcom)

    async def two_indexes():
        gate = share_trigger._Gate(4)
        first, second = (_started_from_the_scheduler(i) for i in (1, 1))
        settings = {**RUN, "fleet_count": 1}
        return await first._upstream_values(gate, settings), await second._upstream_values(gate, settings)

    (space_a, fleets_a), (space_b, fleets_b) = asyncio.run(two_indexes())
    assert len(xcom.reads) == 2  # read once, kept for both
    space_a["pools"].clear()
    fleets_a[0]["workers"].clear()
    assert space_b == pristine[0][1] and fleets_b == [pristine[1]]  # one index's changes never reach another
    assert (visits, fleet) == pristine  # nor what the triggerer read


def test_a_retried_index_reads_the_upstream_xcoms_afresh(octopus, ledger_store, monkeypatch):
    visits, fleet = upstream()
    xcom = _RecordingXCom({("spaces_to_share", -1): visits, ("wait_for_workers", 0): fleet})
    monkeypatch.setattr(share_trigger, "XCom", xcom)
    asyncio.run(_run_all([_started_from_the_scheduler(1), _started_from_the_scheduler(2, try_number=2)]))
    assert sorted(xcom.reads) == [("spaces_to_share", -1)] * 2 + [("wait_for_workers", 0)] * 2


def test_an_index_past_the_upstream_list_fails_naming_the_task_to_clear(octopus, ledger_store, monkeypatch):
    visits, fleet = upstream()
    monkeypatch.setattr(share_trigger, "XCom", _RecordingXCom({("wait_for_workers", 0): fleet}))
    octopus.control.clear_requests()
    [[event]] = asyncio.run(_run_all([_started_from_the_scheduler(3)]))
    assert type(event) is TriggerEvent and event.payload["status"] == "failed"
    assert "index 3 has no space" in event.payload["message"] and "'spaces_to_share'" in event.payload["message"]
    assert octopus.control.requests() == []


def test_share_triggers_of_one_triggerer_share_one_connection_lookup_and_http_pool(octopus, ledger_store, monkeypatch):
    visits, fleet = upstream()
    lookups, pools = [], []
    real_lookup = aio.BaseHook.aget_connection
    real_client = httpx.AsyncClient

    async def counting_lookup(conn_id):
        lookups.append(conn_id)
        return await real_lookup(conn_id)

    def counting_client(*args, **kwargs):
        pools.append(kwargs.get("limits"))
        return real_client(*args, **kwargs)

    monkeypatch.setattr(aio.BaseHook, "aget_connection", staticmethod(counting_lookup))
    monkeypatch.setattr(aio.httpx, "AsyncClient", counting_client)
    triggers = [OctopusShareSpaceTrigger(space=v, fleets=[fleet], run_settings=RUN) for v in visits]
    octopus.control.clear_requests()
    events = asyncio.run(_run_all(triggers))
    results = [e.xcoms["space_result"] for [e] in events]
    assert lookups == ["octopus_default"] and len(pools) == 1
    assert pools[0].max_connections == share_trigger.DEFAULT_SPACES_AT_ONCE * aoperations.DEFAULT_PARALLELISM
    # every index still counts its own requests: the read of its space, and its writes
    assert sum(r["requests"] for r in results) == len(octopus.control.requests())
    assert all(r["requests"] >= 1 for r in results)

    # the batch ended: the shared client is closed and the next batch looks the connection up again
    asyncio.run(_run_all([OctopusShareSpaceTrigger(space=visits[0], fleets=[fleet], run_settings=RUN)]))
    assert len(lookups) == 2


def test_fences_read_the_ledger_again_for_a_trigger_that_asks_after_a_read_ended(octopus, ledger_store, monkeypatch):
    """Shared reads are only those in flight: a lease taken meanwhile is seen by the next trigger."""
    visits, fleet = upstream()
    loads = []
    real_load = ledger_store.load
    monkeypatch.setattr(ledger_store, "load", lambda key: loads.append(key) or real_load(key))

    async def one_after_another():
        [[first]] = await _run_all([_trigger(visits[1], [fleet])])
        _taken_by_another_run(ledger_store)
        [[second]] = await _run_all([_trigger(visits[2], [fleet])])
        return first, second

    first, second = asyncio.run(one_after_another())
    assert isinstance(first, TaskSuccessEvent)
    assert second.payload["status"] == "failed" and "retire_octopus_workers" in second.payload["message"]
    assert loads.count(ledger.ledger_key(PREFIX, "local")) == 2  # one fence each: the second read afresh
