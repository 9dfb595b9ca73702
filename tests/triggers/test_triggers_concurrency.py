"""OctopusWorkersRegisteredTrigger in one event loop with others: a slow or retrying Octopus stalls nobody.

Two emulators (two real servers on loopback): ``fast`` answers at once, ``slow`` has latency or failures
injected through its control API. Assertions are about order and about times relative to the injected delay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async

import octopus.triggers
from octopus.aio import AsyncOctopusClient
from octopus.hooks import OctopusHook
from octopus.sharing import registration_status
from octopus.triggers import OctopusWorkersRegisteredTrigger

SLOW_SECONDS = 1.5


class RecordingClient(AsyncOctopusClient):
    """The real client, remembered per connection id so tests can check how many were made and closed."""

    made: dict[str, list[RecordingClient]] = {}

    def __init__(self, octopus_conn_id: str, **kwargs) -> None:
        super().__init__(octopus_conn_id, **kwargs)
        self.made.setdefault(octopus_conn_id, []).append(self)


@pytest.fixture
def clients(monkeypatch) -> Iterator[dict[str, list[RecordingClient]]]:
    made: dict[str, list[RecordingClient]] = {}
    monkeypatch.setattr(RecordingClient, "made", made)
    monkeypatch.setattr(octopus.triggers, "AsyncOctopusClient", RecordingClient)
    yield made


def fleet_spec(expected: int) -> dict:
    """A fleet of ``expected`` workers t-local-1, t-local-2, ... (the emulator registers only t-local-1)."""
    names = [f"t-local-{i}" for i in range(1, expected + 1)]
    return {
        "expected_count": expected,
        "name_prefix": "t-local",
        "instances": [{"name": name, "id": f"i-{name}"} for name in names],
        "previous": [],
    }


def make_trigger(target: dict, *, expected: int, poll: float = 0.05, within: float = 30.0):
    return OctopusWorkersRegisteredTrigger(
        **target,
        fleet_spec=fleet_spec(expected),
        poll_interval=poll,
        deadline=time.time() + within,
    )


async def first_events(**triggers: OctopusWorkersRegisteredTrigger) -> list[tuple[str, float, dict]]:
    """Run the triggers concurrently (in the order given); return (name, seconds since start, payload) by arrival."""
    arrived: list[tuple[str, float, dict]] = []
    started = time.monotonic()

    async def one(name: str, trigger: OctopusWorkersRegisteredTrigger) -> None:
        event = await trigger.run().__anext__()
        arrived.append((name, time.monotonic() - started, event.payload))

    await asyncio.gather(*(one(name, trigger) for name, trigger in triggers.items()))
    return arrived


def api_reads(emu) -> int:
    return sum(1 for entry in emu.control.requests() if "/workers" in str(entry.get("path", entry)))


async def test_slow_octopus_does_not_delay_another_trigger(fast, slow, clients):
    fast_emu, fast_target = fast
    slow_emu, slow_target = slow
    slow_emu.control.set_faults({"latency_ms": SLOW_SECONDS * 1000})

    events = await first_events(
        slow=make_trigger(slow_target, expected=1),
        # Never complete (2 expected, 1 registered): it keeps polling until its short deadline.
        fast=make_trigger(fast_target, expected=2, poll=0.05, within=0.3),
    )

    assert [name for name, _, _ in events] == ["fast", "slow"]
    (_, fast_at, fast_event), (_, slow_at, slow_event) = events
    assert fast_event["status"] == "timeout" and "1 of 2 workers" in fast_event["message"]
    assert slow_event["status"] == "success"
    assert slow_at >= SLOW_SECONDS
    # The fast trigger polled again and again while the slow one's single read was outstanding.
    assert fast_at < SLOW_SECONDS
    assert api_reads(fast_emu) >= 3
    # One client per trigger run, closed by the time its event was yielded.
    assert {conn: len(made) for conn, made in clients.items()} == {"octopus_slow": 1, "octopus_fast": 1}
    assert all(client.closed for made in clients.values() for client in made)


async def test_retrying_octopus_does_not_delay_another_trigger(fast, slow, clients):
    _, fast_target = fast
    slow_emu, slow_target = slow
    # Two 503s asking for a 1 s pause each: the slow trigger's client waits >= 2 s in its retries.
    slow_emu.control.set_faults(
        {"fail_next": [{"count": 2, "status": 503, "path_regex": "/workers", "retry_after": 1}]}
    )

    events = await first_events(slow=make_trigger(slow_target, expected=1), fast=make_trigger(fast_target, expected=1))

    assert [name for name, _, _ in events] == ["fast", "slow"]
    (_, fast_at, fast_event), (_, slow_at, slow_event) = events
    assert fast_event["status"] == "success" and slow_event["status"] == "success"
    (slow_client,) = clients["octopus_slow"]
    assert [event.retry_after for event in slow_client.retry_events] == [1.0, 1.0]
    assert slow_at >= 2.0 > fast_at
    assert all(client.closed for made in clients.values() for client in made)


async def test_client_closed_when_the_wait_is_cancelled(slow, clients):
    slow_emu, slow_target = slow
    slow_emu.control.set_faults({"latency_ms": 30_000})
    task = asyncio.create_task(make_trigger(slow_target, expected=1).run().__anext__())
    for _ in range(500):  # until the read is on the wire (bounded; no fixed sleep)
        made = clients.get("octopus_slow")
        if made and made[0].request_count:
            break
        await asyncio.sleep(0.01)
    (client,) = clients["octopus_slow"]
    assert client.request_count == 1 and not client.closed
    task.cancel()  # what the triggerer does when the task is cleared or times out
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.closed


async def test_errors_become_an_event_and_close_the_client(fast, clients, monkeypatch):
    _, target = fast
    monkeypatch.delenv("AIRFLOW_CONN_OCTOPUS_FAST")
    ((_, _, event),) = await first_events(only=make_trigger(target, expected=1))
    assert event["status"] == "error"
    assert "connection 'octopus_fast': is not defined" in event["message"]
    assert "AIRFLOW_CONN_OCTOPUS_FAST" in event["message"]
    assert all(client.closed for client in clients["octopus_fast"])


def blocking_read(octopus_conn_id: str, space_id: str, pool_id: str, fleet_spec: dict) -> dict:
    """One read of the pool with the sync hook, judged as the trigger judges it (blocks its thread)."""
    with OctopusHook(octopus_conn_id=octopus_conn_id) as hook:
        records = hook.list_workers(space_id, worker_pool_id=pool_id)
    return registration_status(records, fleet_spec)["seen"]


class BlockingTrigger(OctopusWorkersRegisteredTrigger):
    """The previous implementation: the sync hook through ``sync_to_async`` (thread-sensitive, one shared thread)."""

    async def run(self):
        seen = await sync_to_async(blocking_read)(self.octopus_conn_id, self.space_id, self.pool_id, self.fleet_spec)
        yield octopus.triggers.TriggerEvent({"status": "success", "seen": seen})


async def test_the_same_check_catches_a_trigger_that_blocks(fast, slow):
    """Evidence the assertions above can fail: the previous trigger makes the fast one wait for the slow one."""
    _, fast_target = fast
    slow_emu, slow_target = slow
    slow_emu.control.set_faults({"latency_ms": SLOW_SECONDS * 1000})
    spec = {"fleet_spec": fleet_spec(1), "poll_interval": 0.05, "deadline": time.time() + 30}

    events = await first_events(
        slow=BlockingTrigger(**slow_target, **spec), fast=BlockingTrigger(**fast_target, **spec)
    )

    fast_at = next(at for name, at, _ in events if name == "fast")
    assert fast_at >= SLOW_SECONDS
