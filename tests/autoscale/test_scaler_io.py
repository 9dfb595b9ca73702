"""The scaler's tick (``octopus.scaler.run_tick``) against the emulator as a real HTTP server, on an injected clock.

Real parts: the emulator (records, leases, simulated steps, faults) over loopback HTTP, the real ``OctopusHook``,
the real ledger (sealed evidence) and bakery lease over a :class:`octopus.ledger.MemoryStore`. Two things are
injected, as a scheduler would provide them: the clock (ticks minutes apart run in milliseconds) and the states
of DAG runs (``runs``: what the share run the tick triggered is doing). ``checkpoint`` stops a tick between two
steps, as a killed worker would.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from octopus import ledger, scaler, scaler_state
from octopus_emulator.scenario import make_scenario, make_worker, polling_endpoint

pytestmark = [pytest.mark.filterwarnings("ignore")]

POOL = "Local Worker Pool TF"
PREFIX, CLOUD = "t", "local"
FLEET = ("t-local-1", "t-local-2")
SPACES = ("Space 001", "Space 002", "Space 003")
T0 = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
BASE = {
    "clouds": [CLOUD],
    "name_prefix": PREFIX,
    "min_size": 1,
    "max_size": 4,
    "idle_minutes": 10,
    "scale_in_cooldown_minutes": 0,
    "reversal_minutes": 0,
    "leases_per_worker": 2,
}


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at

    def advance(self, minutes: float) -> None:
        self.at += timedelta(minutes=minutes)


class Kill(Exception):
    pass


def scenario(fleet=FLEET, extra=None):
    """Three spaces; our fleet shared into each (one record per instance and space), all healthy."""
    workers = {i: [make_worker(n, [POOL], HealthStatus="Healthy") for n in fleet] for i in (1, 2, 3)}
    for index, more in (extra or {}).items():
        workers[index] = workers[index] + more
    return make_scenario(3, [POOL], workers=workers)


@pytest.fixture
def octopus(emulator, monkeypatch):
    conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key, "extra": {"timeout": 10}}
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
    return emulator


class World:
    """The emulator, a ledger sealed for the fleet, and a tick runner."""

    def __init__(self, emulator, fleet=FLEET, extra=None) -> None:
        from octopus.hooks import OctopusHook

        self.emulator, self.control = emulator, emulator.control
        self.control.reset(scenario(fleet, extra))
        self.store = ledger.MemoryStore()
        self.hook = OctopusHook(max_attempts=1)
        self.clock = Clock()
        self.runs: dict[str, str] = {}
        self.ticks = 0
        self.seal(fleet)

    def seal(self, fleet) -> None:
        """The ledger the share DAG's wait leaves: this fleet, sealed, shared into the three spaces."""
        state = self.control.state()
        pool = {p["SpaceId"]: p["Id"] for p in state["pools"] if p["Name"] == POOL}
        doc = ledger.load(self.store, PREFIX, CLOUD)
        workers = []
        for name in fleet:
            uri, thumb = polling_endpoint(name)
            workers.append({"name": name, "thumbprint": thumb, "uri": uri, "instance_id": name})
        me = {"dag_id": "share_octopus_workers", "run_id": f"seal-{len(fleet)}"}
        doc = ledger.record_fleet(doc, workers, me, self.hook.evidence_signer())
        doc = {**doc, "initial_space": {"id": "Spaces-1", "name": "Space 001", "pool_id": pool["Spaces-1"]}}
        spaces = [{"id": f"Spaces-{i}", "name": SPACES[i - 1], "pool_id": pool[f"Spaces-{i}"]} for i in (1, 2, 3)]
        ledger.save(self.store, ledger.add_spaces(doc, spaces))

    def tick(self, checkpoint=None, **params):
        self.ticks += 1
        env = scaler.TickEnv(
            hook=self.hook,
            store=self.store,
            run_state=lambda dag_id, run_id: self.runs.get(run_id),
            me={"dag_id": "autoscale_octopus_workers", "run_id": f"tick-{self.ticks}", "task": "tick"},
            now=self.clock,
            checkpoint=checkpoint or (lambda step: None),
        )
        summary = scaler.run_tick({**BASE, **params}, env)
        return summary["clouds"][CLOUD], summary

    def state(self):
        return scaler_state.load(self.store, PREFIX, CLOUD)

    def records(self, name):
        return sorted((w["SpaceId"], w["IsDisabled"]) for w in self.control.state()["workers"] if w["Name"] == name)

    def writes(self):
        return [r for r in self.control.requests() if r["method"] in ("PUT", "POST", "DELETE")]


def kill_at(step):
    def checkpoint(name):
        if name == step:
            raise Kill(step)

    return checkpoint


def burst(control, n, duration=None, space="Space 002"):
    return [control.start_task(POOL, duration, space=space) for _ in range(n)]


def test_a_burst_scales_out_at_once_and_a_resumed_tick_triggers_the_same_share_run(octopus):
    world = World(octopus, fleet=FLEET[:1])
    burst(world.control, 5)  # 5 leases on our one worker; 2 per worker are wanted -> 3 workers
    line, summary = world.tick(min_size=0)
    assert line["action"] == "scale_out" and line["target"] == 3, line
    assert summary["triggers"] == [
        {
            "trigger_run_id": world.state()["pending"]["run_id"],
            "conf": {"clouds": [CLOUD], "name_prefix": PREFIX, "instance_count": {CLOUD: 3}},
        }
    ]
    assert world.state()["target"] == 3
    change = summary["size_changes"][0]
    assert change["uri"].endswith("/shared-workers/t/size")
    assert change["extra"]["to"] == 3 and "want 3 workers" in change["extra"]["reason"]

    # The trigger task died before the run existed: the next tick triggers the same run, and decides nothing new.
    world.clock.advance(5)
    again, summary = world.tick(min_size=0)
    assert again["action"] == "hold" and "not triggered" in again["reason"]
    assert [t["trigger_run_id"] for t in summary["triggers"]] == [world.state()["pending"]["run_id"]]
    assert summary["size_changes"] == []

    world.runs[world.state()["pending"]["run_id"]] = "running"
    world.clock.advance(5)
    held, summary = world.tick(min_size=0)
    assert held["action"] == "hold" and "is running" in held["reason"] and summary["triggers"] == []
    assert world.writes() == []  # a scale-out writes nothing to Octopus itself: the share run builds


def test_a_tick_killed_after_recording_a_scale_out_triggers_it_next_tick_once(octopus):
    world = World(octopus, fleet=FLEET[:1])
    burst(world.control, 3)
    with pytest.raises(Kill):
        world.tick(checkpoint=kill_at("share_recorded"))
    pending = world.state()["pending"]
    assert pending["target"] == 2
    world.clock.advance(5)
    line, summary = world.tick()
    assert line["action"] == "hold"
    assert [t["trigger_run_id"] for t in summary["triggers"]] == [pending["run_id"]]
    assert world.state()["target"] == 2  # not 3: the scale-out was not decided twice


def idle_fleet_scales_in(world):
    """Ticks until the scaler has drained and handed over one idle instance; returns the victim's name."""
    first, _ = world.tick()
    assert first["action"] == "hold", first  # a surplus, not yet idle_minutes long
    world.clock.advance(11)
    line, _ = world.tick()
    assert line["action"] == "scale_in", line
    return line["victim"]


def test_scale_in_drains_the_idle_instance_then_hands_it_to_the_share_run(octopus):
    world = World(octopus)
    victim = idle_fleet_scales_in(world)
    assert victim == "t-local-1"  # both idle equally long: the first by name
    assert world.records(victim) == [("Spaces-1", True), ("Spaces-2", True), ("Spaces-3", True)]
    assert world.records("t-local-2") == [("Spaces-1", False), ("Spaces-2", False), ("Spaces-3", False)]

    world.clock.advance(5)
    line, summary = world.tick()
    assert line["action"] == "hold" and summary["triggers"] == []  # one empty read after the disable: not yet
    world.clock.advance(5)
    line, summary = world.tick()
    assert line["action"] == "finish_drain" and line["target"] == 1, line
    doc = world.state()
    assert doc["leaving"] == [{"name": victim, "thumbprint": polling_endpoint(victim)[1]}]
    assert summary["triggers"][0]["conf"]["instance_count"] == {CLOUD: 1}
    # What the share DAG reads: the drained instance leaves, not the newest.
    fleet = [{"name": n, "thumbprint": polling_endpoint(n)[1]} for n in FLEET]
    assert [v["name"] for v in scaler_state.victims_for(doc, fleet, 1)] == [victim]
    assert scaler_state.owned_count(doc, 5) == 1
    assert not [w for w in world.writes() if w["method"] == "DELETE"]  # the share run's drain deletes

    # The share run removed it (its wait sealed the smaller fleet): the drain is over.
    world.runs[doc["pending"]["run_id"]] = "success"
    world.seal(["t-local-2"])
    world.clock.advance(5)
    line, _ = world.tick()
    doc = world.state()
    assert doc["drain"] is None and doc["leaving"] == [] and doc["pending"] is None
    assert line["action"] == "hold" and line["size"] == 1


def test_a_share_run_that_removed_another_instance_re_enables_the_victim(octopus):
    world = World(octopus)
    victim = idle_fleet_scales_in(world)
    for _ in range(2):
        world.clock.advance(5)
        line, _ = world.tick()
    assert line["action"] == "finish_drain"
    world.runs[world.state()["pending"]["run_id"]] = "success"
    world.seal([victim])  # a share DAG that did not prefer the scaler's victim removed the other one
    world.clock.advance(5)
    world.tick()
    assert world.records(victim) == [("Spaces-1", False), ("Spaces-2", False), ("Spaces-3", False)]
    assert world.state()["drain"] is None


@pytest.mark.parametrize("step", ["drain_recorded", "repaired", "decided"])
def test_a_tick_killed_between_drain_steps_resumes_without_harm(octopus, step):
    world = World(octopus)
    world.tick()
    world.clock.advance(11)
    killed_in_scale_in = step == "drain_recorded"
    if killed_in_scale_in:
        with pytest.raises(Kill):
            world.tick(checkpoint=kill_at(step))
        assert world.records("t-local-1") == [("Spaces-1", False), ("Spaces-2", False), ("Spaces-3", False)]
        world.clock.advance(5)
        line, _ = world.tick()  # the repair disables it; this read, taken after, counts as the first
        assert line["action"] == "hold", line
        world.clock.advance(5)
        line, _ = world.tick()
        assert line["action"] == "finish_drain", line
    else:
        world.tick()
        world.clock.advance(5)
        with pytest.raises(Kill):
            world.tick(checkpoint=kill_at(step))  # killed before its read was recorded: it does not count
        for action in ("hold", "finish_drain"):
            world.clock.advance(5)
            line, _ = world.tick()
            assert line["action"] == action, line
    assert world.records("t-local-1") == [("Spaces-1", True), ("Spaces-2", True), ("Spaces-3", True)]
    assert world.records("t-local-2") == [("Spaces-1", False), ("Spaces-2", False), ("Spaces-3", False)]
    for _ in range(3):
        if world.state()["pending"]:
            break
        world.clock.advance(5)
        world.tick()
    doc = world.state()
    assert doc["pending"]["target"] == 1 and [v["name"] for v in doc["leaving"]] == ["t-local-1"]
    assert doc["drain"]["victim"]["name"] == "t-local-1"  # one victim, never a second


def test_demand_during_a_drain_re_enables_the_victim_even_when_killed_midway(octopus):
    world = World(octopus)
    victim = idle_fleet_scales_in(world)
    burst(world.control, 3)  # lands on the enabled one: 3 leases, 2 per worker wanted -> 2 workers
    world.clock.advance(5)
    with pytest.raises(Kill):
        world.tick(checkpoint=kill_at("cancel_recorded"))
    assert world.records(victim) == [("Spaces-1", True), ("Spaces-2", True), ("Spaces-3", True)]
    world.clock.advance(5)
    line, summary = world.tick()
    assert world.records(victim) == [("Spaces-1", False), ("Spaces-2", False), ("Spaces-3", False)]
    assert world.state()["drain"] is None and world.state()["reenable"] is None
    assert line["action"] == "hold" and summary["triggers"] == []  # re-enabled, nothing built


def test_failed_reads_hold_and_write_nothing(octopus):
    world = World(octopus)
    world.tick()
    world.clock.advance(30)
    world.control.set_faults({"fail_next": [{"count": 100, "status": 503, "path_regex": "workertaskleases"}]})
    line, summary = world.tick()
    assert line["action"] == "hold" and "503" in line["reason"], line
    assert summary["triggers"] == [] and world.writes() == []
    assert world.state()["drain"] is None


def test_another_run_holding_the_deployment_holds_the_tick(octopus):
    world = World(octopus)
    other = {"dag_id": "share_octopus_workers", "run_id": "manual-1", "task": "claim_deployment"}
    world.runs["manual-1"] = "running"
    assert ledger.claim(world.store, PREFIX, [CLOUD], other, lambda d, r: world.runs.get(r)) is None
    burst(world.control, 6)
    line, summary = world.tick()
    assert line["action"] == "hold" and "manual-1" in line["reason"]
    assert summary["held_by"] and summary["triggers"] == []
    assert world.state()["target"] is None
    # its own ticket was dropped: the share run keeps the deployment
    tickets = world.store.keys(ledger.ticket_prefix(PREFIX, CLOUD))
    assert [world.store.load(k)["run_id"] for k in tickets] == ["manual-1"]


def test_a_denied_space_is_drained_never_deleted_under_a_step_then_forgotten(octopus):
    world = World(octopus)
    steps = {t["worker_name"]: t for t in burst(world.control, 2, space="Space 003")}
    world.control.complete_task(steps["t-local-1"]["id"])  # t-local-1 is free there, t-local-2 runs a step
    step = steps["t-local-2"]
    world.control.start_task(POOL, None, space="Space 001")  # demand where the policy allows it
    line, _ = world.tick(denied_spaces=["Space 003"])
    in_3 = [w for w in world.control.state()["workers"] if w["SpaceId"] == "Spaces-3"]
    assert sorted((w["Name"], w["IsDisabled"]) for w in in_3) == [("t-local-1", True), ("t-local-2", True)]
    assert line["tasks"] == 1  # the two steps in Space 003 add no demand
    for _ in range(3):
        world.clock.advance(5)
        world.tick(denied_spaces=["Space 003"])
    assert [w["Name"] for w in world.control.state()["workers"] if w["SpaceId"] == "Spaces-3"] == ["t-local-2"]
    assert world.control.task(step["id"])["state"] == "Executing"  # the step on it runs on
    world.control.complete_task(step["id"])
    for _ in range(2):
        world.clock.advance(5)
        world.tick(denied_spaces=["Space 003"])
    assert [w for w in world.control.state()["workers"] if w["SpaceId"] == "Spaces-3"] == []
    world.clock.advance(5)
    world.tick(denied_spaces=["Space 003"])
    assert "Spaces-3" not in ledger.load(world.store, PREFIX, CLOUD)["spaces"]
    assert world.state()["unshare"] == {}
    assert world.control.step_counters()["killed"] == 0
    # the other spaces keep our records, enabled
    assert world.records("t-local-1") == [("Spaces-1", False), ("Spaces-2", False)]


def test_only_sealed_records_are_touched(octopus):
    """Foreign workers in the pools (one named like our fleet, not sealed) are never written, draining or not."""
    team = [make_worker("team-3", [POOL], HealthStatus="Healthy")]
    lookalike = [make_worker("t-local-9", [POOL], HealthStatus="Healthy")]
    world = World(octopus, extra={2: lookalike, 3: team})
    for _ in range(5):
        world.tick(denied_spaces=["Space 003"])
        world.clock.advance(11)
    ids = {w["Id"]: w["Name"] for w in world.control.state()["workers"]}
    touched = {ids.get(r["path"].rsplit("/", 1)[-1], "deleted") for r in world.writes()}
    assert touched and touched.isdisjoint({"team-3", "t-local-9"}), touched
    left = {(w["SpaceId"], w["Name"], w["IsDisabled"]) for w in world.control.state()["workers"]}
    assert {("Spaces-2", "t-local-9", False), ("Spaces-3", "team-3", False)} <= left


def test_a_failed_share_run_is_retried_after_a_pause_not_every_tick(octopus):
    world = World(octopus, fleet=FLEET[:1])
    burst(world.control, 3)
    world.tick()
    first = world.state()["pending"]["run_id"]
    world.runs[first] = "failed"
    world.clock.advance(5)
    line, summary = world.tick()
    assert line["action"] == "hold" and first in line["reason"] and summary["triggers"] == []
    world.clock.advance(scaler.RETRY_FAILED_SHARE_MINUTES)
    line, summary = world.tick()
    assert line["action"] == "scale_out" and [t["trigger_run_id"] for t in summary["triggers"]] != [first]
    assert world.state()["failed_share"]["run_id"] == first


def test_a_retired_deployment_is_never_rebuilt_and_its_count_handed_back(octopus):
    world = World(octopus, fleet=FLEET[:1])
    burst(world.control, 5)
    world.tick()
    assert world.state()["target"] == 3
    doc = ledger.load(world.store, PREFIX, CLOUD)
    retire = {"dag_id": "retire_octopus_workers", "run_id": "retire-1"}
    ledger.save(world.store, ledger.record_fleet({**doc, "owned": []}, [], retire, world.hook.evidence_signer()))
    world.runs[world.state()["pending"]["run_id"]] = "success"
    world.clock.advance(5)
    line, summary = world.tick()
    assert line["action"] == "hold" and "retired" in line["reason"] and summary["triggers"] == []
    assert world.state()["target"] is None and scaler_state.counts_for(
        PREFIX, {CLOUD: 2}, world.hook.evidence_signer(), world.store
    ) == {CLOUD: 2}


def test_a_hand_edited_size_or_victim_is_ignored_by_the_share_run(octopus):
    world = World(octopus, fleet=FLEET[:1])
    burst(world.control, 5)
    world.tick()
    signer = world.hook.evidence_signer()
    assert scaler_state.counts_for(PREFIX, {CLOUD: 1}, signer, world.store) == {CLOUD: 3}  # sealed by the tick
    key = scaler_state.state_key(PREFIX, CLOUD)
    workers = [{"name": name, "thumbprint": polling_endpoint(name)[1].upper()} for name in FLEET]
    edited = {**world.store.load(key), "target": 0, "leaving": [workers[0]]}
    world.store.save(key, edited)  # a Variable editor, without the connection's key
    assert scaler_state.counts_for(PREFIX, {CLOUD: 1}, signer, world.store) == {CLOUD: 1}
    # the newest leaves, not the one the edit named
    assert scaler_state.leaving_for(PREFIX, CLOUD, workers, 1, signer, world.store) == [workers[-1]]
    world.store.save(key, {**edited, "leaving": []})
    scaler_state.save(world.store, {**edited, "leaving": [workers[0]]}, signer)  # the scaler's own, sealed
    assert scaler_state.leaving_for(PREFIX, CLOUD, workers, 1, signer, world.store) == [workers[0]]


def test_a_dry_run_decides_and_writes_nothing(octopus):
    world = World(octopus, fleet=FLEET[:1])
    burst(world.control, 5)
    line, summary = world.tick(dry_run=True)
    assert line["action"] == "scale_out" and line["reason"].startswith("dry run")
    assert summary["triggers"] == [] and world.writes() == []
    assert world.store.load(scaler_state.state_key(PREFIX, CLOUD)) is None
    assert world.store.keys(ledger.ticket_prefix(PREFIX, CLOUD)) == []


def test_victims_for_prefers_the_scalers_victims_then_the_newest():
    fleet = [{"name": f"t-local-{i}", "thumbprint": f"{i:040d}"} for i in (1, 2, 3, 4)]
    doc = {"leaving": [{"name": "t-local-2", "thumbprint": f"{2:040d}"}]}
    assert [v["name"] for v in scaler_state.victims_for(doc, fleet, 3)] == ["t-local-2"]
    assert [v["name"] for v in scaler_state.victims_for(doc, fleet, 2)] == ["t-local-2", "t-local-4"]
    assert [v["name"] for v in scaler_state.victims_for(None, fleet, 3)] == ["t-local-4"]
    assert scaler_state.victims_for(doc, fleet, 4) == []
    assert scaler_state.owned_count(None, 2) == 2 and scaler_state.owned_count({"target": 0}, 2) == 0
