"""No deployment step killed: a retire, a scale-in and a rebuild drain every worker first (issue 19), end to end.

The real retire DAG under ``dag.test()`` against the emulator's lease model (simulated deployment steps that lease
a worker of a pool and run on its simulated Tentacle) and the local Terraform cloud. Steps run throughout; every
test ends with the emulator's step counters: none killed, none failed for want of a worker.
"""

from __future__ import annotations

import json
import threading

import pytest

from octopus_emulator.scenario import make_scenario, make_worker
from tests.dags.harness import LOCAL_POOL, ledgers, local_conf, run_dag, xcom_value

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]

SPACES = ("Space 001", "Space 002", "Space 003")


def retire_conf(**overrides):
    return {"clouds": ["local"], "name_prefix": "t", "poll_interval_seconds": 1, **overrides}


def scenario():
    """Three spaces; each pool also holds another team's healthy worker, where new steps go while ours drain."""
    team = {i: [make_worker(f"team-{i}", [LOCAL_POOL], HealthStatus="Healthy")] for i in (1, 2, 3)}
    return make_scenario(3, [LOCAL_POOL], workers=team)


class Workload:
    """Steps started in every space, every ``every`` seconds, each lasting ``duration``, until stopped."""

    def __init__(self, control, *, duration=1.5, every=0.3):
        self.control, self.duration, self.every = control, duration, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started: list[dict] = []

    def _run(self):
        while not self.stop.wait(self.every):
            for space in SPACES:
                self.started.append(self.control.start_task(LOCAL_POOL, self.duration, space=space))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def complete_after_lease_reads(control, step, space_id, reads, run_ended):
    """Complete ``step`` once the emulator has answered ``reads`` lease listings of ``space_id`` (or the run ended)."""
    while not run_ended.is_set():
        if len([r for r in control.requests() if r["path"].endswith(f"{space_id}/workertaskleases")]) >= reads:
            break
        run_ended.wait(0.05)
    control.complete_task(step["id"])


def steps_on_our_workers(control):
    return [t for t in control.tasks(running=True) if (t.get("worker_name") or "").startswith("t-local-")]


def assert_no_step_harmed(control):
    counters = control.wait_no_running_tasks(timeout=30)
    assert counters["killed"] == 0, counters
    assert counters["failed_no_worker"] == 0, counters
    return counters


@pytest.fixture
def shared(local_cloud, emulator):
    emulator.control.reset(scenario())
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    return emulator


def test_a_retire_under_load_drains_every_worker_and_kills_no_step(shared):
    control = shared.control
    long_steps = [control.start_task(LOCAL_POOL, 4, space=space) for space in SPACES for _ in range(2)]
    assert any((t.get("worker_name") or "").startswith("t-local-") for t in long_steps), long_steps
    with Workload(control):
        dag_run, states = run_dag("retire_octopus_workers", retire_conf())
    assert str(dag_run.state) == "success", states
    assert [w for w in control.state()["workers"] if w["Name"].startswith("t-local-")] == []
    counters = assert_no_step_harmed(control)
    assert counters["succeeded"] >= len(long_steps)
    drained = xcom_value(dag_run, "wait_for_drain")
    assert len(drained["records"]) == 6 and drained["forced"] is False
    summary = xcom_value(dag_run, "summarize")
    assert summary["drain"]["records"] == 6


def test_a_lease_that_never_ends_times_out_leaving_the_worker_disabled_and_intact(shared):
    control = shared.control
    stuck = next(
        t
        for t in (control.start_task(LOCAL_POOL, None, space="Space 002") for _ in range(4))
        if (t.get("worker_name") or "").startswith("t-local-")
    )
    dag_run, states = run_dag("retire_octopus_workers", retire_conf(drain_timeout_minutes=0.1))
    assert str(dag_run.state) == "failed"
    assert states["wait_for_drain"] == {"": "failed"}
    assert set(states["terraform_destroy"].values()) == {"upstream_failed"}
    ours = [w for w in control.state()["workers"] if w["Name"].startswith("t-local-")]
    assert len(ours) == 6 and all(w["IsDisabled"] for w in ours)  # disabled, none deleted
    assert control.task(stuck["id"])["state"] == "Executing"  # the step still runs: its worker is intact
    assert ledgers()["octopus_workers.t.local"]["owned"]
    control.complete_task(stuck["id"])
    assert_no_step_harmed(control)


@pytest.mark.parametrize("mode", ["no_new_leases", "still_leased"])
def test_either_disabled_worker_behaviour_is_safe(shared, mode):
    """Octopus does not document whether a disabled worker still gets new steps: the drain is safe either way."""
    control = shared.control
    control.set_lease_settings(disabled_worker_leases=mode)
    with Workload(control, duration=2, every=0.2):
        dag_run, states = run_dag("retire_octopus_workers", retire_conf(drain_timeout_minutes=0.15))
    ours = [w for w in control.state()["workers"] if w["Name"].startswith("t-local-")]
    if mode == "no_new_leases":
        assert str(dag_run.state) == "success", states
        assert ours == []
    else:  # new steps keep landing on the disabled workers: the drain can only time out, removing nothing
        assert states["wait_for_drain"] == {"": "failed"}
        assert len(ours) == 6
    assert_no_step_harmed(control)


def test_a_stale_lease_is_reported_and_does_not_block_for_ever(shared):
    control = shared.control
    stale = control.inject_stale_lease("t-local-1", space="Space 003", state="Canceled", age_seconds=3600)
    dag_run, states = run_dag("retire_octopus_workers", retire_conf(stale_lease_minutes=10))
    assert states["wait_for_drain"] == {"": "success"}  # not waited on
    drained = xcom_value(dag_run, "wait_for_drain")
    assert [h["task"] for h in drained["stale"]] == [stale["task"]["id"]]
    # Octopus refuses to delete a record a stale lease holds: it stays, disabled, until Octopus restarts
    left = [w for w in control.state()["workers"] if w["Name"].startswith("t-local-")]
    assert [(w["SpaceId"], w["IsDisabled"]) for w in left] == [("Spaces-3", True)]
    assert str(dag_run.state) == "failed"  # not retired yet: named, kept in the ledger
    assert "Spaces-3" in ledgers()["octopus_workers.t.local"]["spaces"]

    control.server_restart()
    dag_run, states = run_dag("retire_octopus_workers", retire_conf(stale_lease_minutes=10))
    assert str(dag_run.state) == "success", states
    assert [w for w in control.state()["workers"] if w["Name"].startswith("t-local-")] == []
    assert_no_step_harmed(control)


def test_a_scale_in_from_three_to_one_under_load_drains_first_and_kills_no_step(local_cloud, emulator):
    control = emulator.control
    control.reset(scenario())
    dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": 3}))
    assert str(dag_run.state) == "success", states
    long_steps = [control.start_task(LOCAL_POOL, 4, space=space) for space in SPACES for _ in range(3)]
    assert {t.get("worker_name") for t in long_steps} >= {"t-local-2", "t-local-3"}
    with Workload(control):
        dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": 1}))
    assert str(dag_run.state) == "success", states
    ours = sorted((w["SpaceId"], w["Name"]) for w in control.state()["workers"] if w["Name"].startswith("t-local-"))
    assert ours == [("Spaces-1", "t-local-1"), ("Spaces-2", "t-local-1"), ("Spaces-3", "t-local-1")]
    drained = xcom_value(dag_run, "drain_removed", map_index=0)
    assert sorted({r["name"] for r in drained["records"]}) == ["t-local-2", "t-local-3"]  # the package chose them
    assert len(drained["records"]) == 6
    assert xcom_value(dag_run, "summarize")["drain"]["local"]["records"] == 6  # the summary shows the drain
    assert_no_step_harmed(control)


def test_an_unchanged_count_drains_nothing_and_reads_no_lease(local_cloud, emulator):
    emulator.control.reset(scenario())
    run_dag("share_octopus_workers", local_conf())
    emulator.control.clear_requests()
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    assert xcom_value(dag_run, "drain_removed", map_index=0)["records"] == []
    assert not [r for r in emulator.control.requests() if "workertaskleases" in r["path"]]


def test_an_unchanged_fleet_has_nothing_outdated_and_runs_no_second_apply(local_cloud, emulator):
    emulator.control.reset(scenario())
    run_dag("share_octopus_workers", local_conf())
    emulator.control.clear_requests()
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    assert states["drain_outdated"] == {"local: nothing outdated": "success"}  # the grid says so
    assert states["remove_outdated"] == {"local": "skipped"}  # Terraform did not run
    assert states["drain_removed"] == {"local: nothing leaves": "success"}
    assert xcom_value(dag_run, "drain_outdated", map_index=0)["instances"] == []
    assert not [r for r in emulator.control.requests() if "workertaskleases" in r["path"]]
    assert xcom_value(dag_run, "summarize")["rebuild"] == {}


def test_a_rebuild_of_the_whole_fleet_under_load_leaves_no_gap_and_kills_no_step(local_cloud, emulator, monkeypatch):
    """Issue 19, deliverable 3: every instance becomes outdated (the server URL it registers with changes); the run
    builds and shares the new ones beside them, then drains the old ones and removes exactly those. No pool holds any
    other worker, so a moment with no healthy enabled worker in a pool would fail a step for want of one."""
    control = emulator.control
    control.reset(make_scenario(3, [LOCAL_POOL]))  # only our workers: no team worker to absorb steps
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    old = {w["Name"]: w["Endpoint"]["Thumbprint"] for w in control.state()["workers"] if w["SpaceId"] == "Spaces-1"}
    assert sorted(old) == ["t-local-1", "t-local-2"]

    # A build input changes: the same server, reached by another URL (what a new server URL does to a fleet).
    conn = {"conn_type": "http", "password": emulator.api_key, "extra": {"timeout": 30}}
    conn["host"] = emulator.url.replace("127.0.0.1", "localhost")
    assert conn["host"] != emulator.url
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))

    long_steps = [control.start_task(LOCAL_POOL, 4, space=space) for space in SPACES for _ in range(2)]
    assert {t.get("worker_name") for t in long_steps} == {"t-local-1", "t-local-2"}
    # A step that runs until the drain has read the leases twice (so it provably held an outdated worker).
    held = control.start_task(LOCAL_POOL, None, space="Space 002")
    assert held["worker_name"] in old
    control.clear_requests()
    run_ended = threading.Event()
    release = threading.Thread(
        target=complete_after_lease_reads, args=(control, held, "Spaces-2", 2, run_ended), daemon=True
    )
    release.start()
    with Workload(control) as load:
        dag_run, states = run_dag("share_octopus_workers", local_conf())
    run_ended.set()
    release.join(10)
    assert str(dag_run.state) == "success", states
    assert len(load.started) >= 3 * len(SPACES)  # steps ran throughout the rebuild

    ours = sorted((w["SpaceId"], w["Name"]) for w in control.state()["workers"] if w["Name"].startswith("t-local-"))
    assert ours == [(f"Spaces-{i}", f"t-local-{n}") for i in (1, 2, 3) for n in (3, 4)]  # shared everywhere
    new = {w["Name"]: w["Endpoint"]["Thumbprint"] for w in control.state()["workers"] if w["SpaceId"] == "Spaces-1"}
    assert not set(new.values()) & set(old.values())  # new instances, not re-registered old ones
    assert not (local_cloud / "t-local-1").exists() and not (local_cloud / "t-local-2").exists()  # instances gone

    applied = xcom_value(dag_run, "terraform_apply", map_index=0)
    assert applied["outputs"]["outdated_instances"] == ["t-local-1", "t-local-2"]
    assert applied["changes"] == {"create": 2}  # built beside them: nothing replaced, nothing deleted
    drained = xcom_value(dag_run, "drain_outdated", map_index=0)
    assert drained["instances"] == ["t-local-1", "t-local-2"] and len(drained["records"]) == 6
    assert xcom_value(dag_run, "remove_outdated", map_index=0)["removed"] == ["t-local-1", "t-local-2"]
    [label] = states["drain_outdated"]
    assert label.startswith("local: drained 2 outdated in "), label  # the grid shows the drain

    summary = xcom_value(dag_run, "summarize")
    rebuild = summary["rebuild"]["local"]
    assert rebuild["outdated"] == rebuild["removed"] == ["t-local-1", "t-local-2"] and rebuild["left"] == []
    waited = rebuild["drain"]["workers"]
    assert set(waited) == {"t-local-1", "t-local-2"}
    # The summary names the step the drain waited for, on its worker, and how long that worker was waited for.
    assert held["id"] in waited[held["worker_name"]]["tasks"], waited
    assert waited[held["worker_name"]]["waited_seconds"] > 0, waited
    assert control.task(held["id"])["state"] == "Success"  # it ran to its end on the outdated worker

    counters = assert_no_step_harmed(control)
    assert counters["succeeded"] >= len(long_steps) + len(load.started)
