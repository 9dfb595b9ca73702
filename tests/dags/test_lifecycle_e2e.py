"""Worker lifecycle end to end: teardown, daily rebuilds, and drift repair (emulator + local cloud)."""

from __future__ import annotations

import pendulum
import pytest
import requests

from octopus_emulator.scenario import make_scenario, make_worker
from tests.dags.harness import (
    LOCAL_POOL,
    duplicate_records,
    ledgers,
    local_conf,
    run_dag,
    space_pool_members,
    terraform_local,
    thumbprints,
    xcom_value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]


def live_fleet(state, initial="Space 001"):
    return sorted(
        w["Endpoint"]["Thumbprint"] for w in space_pool_members(state)[initial] if w["HealthStatus"] != "Unavailable"
    )


def put_worker(emulator, worker):
    response = requests.put(
        f"{emulator.url}/api/{worker['SpaceId']}/workers/{worker['Id']}",
        json=worker,
        headers={"X-Octopus-ApiKey": emulator.api_key},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def identity(worker):
    """What a write could change (health checks aside)."""
    endpoint = worker["Endpoint"]
    return (
        worker["Id"],
        worker["Name"],
        worker["WorkerPoolIds"],
        endpoint.get("Thumbprint"),
        endpoint.get("Uri"),
        worker["IsDisabled"],
    )


def record(state, space_name, name):
    space_id = next(s["Id"] for s in state["spaces"] if s["Name"] == space_name)
    return next(w for w in state["workers"] if w["SpaceId"] == space_id and w["Name"] == name)


def test_share_then_retire_leaves_nothing(local_cloud, emulator):
    emulator.control.reset(make_scenario(4, [LOCAL_POOL, "Other Pool"]))
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    assert sum(len(v) for v in space_pool_members(emulator.control.state()).values()) == 8

    from airflow.models.variable import Variable

    scaler_key = "octopus_workers.t.local.scaler"  # as if autoscale_octopus_workers had owned the count
    Variable.set(scaler_key, {"version": 1, "prefix": "t", "cloud": "local", "target": 5}, serialize_json=True)
    dag_run, states = run_dag("retire_octopus_workers", {"clouds": ["local"], "name_prefix": "t"})

    assert str(dag_run.state) == "success", states
    assert scaler_key not in ledgers(), "a retired deployment's count goes back to the share DAG's param"
    assert set(states["retire_copies"]) == {"Space 002", "Space 003", "Space 004"}
    assert states["retire_initial"] == {"Space 001": "success"}
    assert states["terraform_destroy"] == {"local": "success"}
    assert emulator.control.state()["workers"] == []
    assert not any(local_cloud.iterdir()), "a simulated VM is still on disk"
    destroyed = xcom_value(dag_run, "terraform_destroy", map_index=0)
    assert destroyed["changes"].get("delete", 0) >= 2

    # Idempotent: nothing left to do, and it still succeeds.
    dag_run, states = run_dag("retire_octopus_workers", {"clouds": ["local"], "name_prefix": "t"})
    assert str(dag_run.state) == "success", states
    assert xcom_value(dag_run, "terraform_destroy", map_index=0)["changes"] == {}


def written_fields(workers):
    """Every record as far as a client's writes reach: identity, pools, endpoint, policy, disabled flag."""
    return sorted(
        (
            w["Id"],
            w["SpaceId"],
            w["Name"],
            tuple(w["WorkerPoolIds"]),
            w["Endpoint"].get("CommunicationStyle"),
            w["Endpoint"].get("Uri"),
            w["Endpoint"].get("Thumbprint"),
            w["MachinePolicyId"],
            w["IsDisabled"],
        )
        for w in workers
    )


def test_retire_dry_run_changes_nothing(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    dag_run, _ = run_dag("share_octopus_workers", local_conf())
    before = written_fields(emulator.control.state()["workers"])
    emulator.control.clear_requests()

    dag_run, states = run_dag("retire_octopus_workers", {"clouds": ["local"], "name_prefix": "t", "dry_run": True})

    assert str(dag_run.state) == "success", states
    assert {r["method"] for r in emulator.control.requests() if r["path"].startswith("/api")} == {"GET"}
    # Server-side health checks of the copies just added may still finish meanwhile; nothing we write changed.
    assert written_fields(emulator.control.state()["workers"]) == before
    assert xcom_value(dag_run, "terraform_destroy", map_index=0)["action"] == "plan-destroy"
    assert any(local_cloud.iterdir())


def test_three_daily_runs_with_rebuilds_keep_exactly_the_current_fleet(local_cloud, emulator):
    emulator.control.reset(make_scenario(5, [LOCAL_POOL]))
    seen_fleets = []
    for day in (1, 2, 3):
        if day > 1:  # the nightly rebuild: the VMs are destroyed, their records stay behind
            terraform_local("destroy", server_url=emulator.url, space_name="Space 001", count=2)
        logical_date = pendulum.datetime(2026, 11, day, tz="UTC")
        dag_run, states = run_dag("share_octopus_workers", local_conf(), logical_date=logical_date)
        assert str(dag_run.state) == "success", (day, states)
        state = emulator.control.state()
        fleet = live_fleet(state)
        assert len(fleet) == 2
        members = space_pool_members(state)
        assert all(thumbprints(records) == fleet for records in members.values()), day
        assert duplicate_records(state) == []
        assert len(state["workers"]) == 5 * 2
        seen_fleets.append(fleet)
    assert len({tuple(f) for f in seen_fleets}) == 3, "each rebuild brings new thumbprints"


def test_a_worker_octopus_keeps_busy_stays_disabled_and_intact_then_goes_next_run(local_cloud, emulator):
    # Shrink the fleet so that t-local-2 leaves. Octopus refuses to delete its copy in Space 002 ("currently in
    # use"): the drain before Terraform then never ends, so t-local-2 stays disabled and its instance intact. A
    # stale Unavailable record pre-seeded in the pool is foreign: left alone, listed as foreign, on every run.
    foreign = make_worker("old-worker", pools=[LOCAL_POOL], HealthStatus="Unavailable")
    emulator.control.reset(make_scenario(3, [LOCAL_POOL], workers={2: [foreign]}))
    foreign_before = record(emulator.control.state(), "Space 002", "old-worker")
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    busy_id = record(emulator.control.state(), "Space 002", "t-local-2")["Id"]
    emulator.control.set_faults({"busy_workers": [busy_id, foreign_before["Id"]]})

    dag_run, states = run_dag(
        "share_octopus_workers", local_conf(instance_count={"local": 1}, drain_timeout_minutes=0.1)
    )

    assert str(dag_run.state) == "failed", states
    assert states["drain_removed"] == {"local: drain of 1 timed out after 6s": "failed"}  # the grid says why
    assert set(states["terraform_apply"].values()) == {"upstream_failed"}  # the instance was not removed
    kept = record(emulator.control.state(), "Space 002", "t-local-2")
    assert kept["IsDisabled"] is True

    emulator.control.clear_faults()
    dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": 1}))
    assert str(dag_run.state) == "success", states
    names = sorted(w["Name"] for w in space_pool_members(emulator.control.state())["Space 002"])
    assert names == ["old-worker", "t-local-1"]
    assert identity(record(emulator.control.state(), "Space 002", "old-worker")) == identity(foreign_before)
    writes = [r for r in emulator.control.requests() if r["method"] != "GET" and foreign_before["Id"] in r["path"]]
    assert writes == [], "the foreign record was never written to"
    summary = xcom_value(dag_run, "summarize")
    assert summary["foreign"] == {"Space 002": ["old-worker"]}


def test_worker_moved_out_of_pool_is_put_back_not_duplicated(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    run_dag("share_octopus_workers", local_conf())
    state = emulator.control.state()
    moved = record(state, "Space 003", "t-local-1")
    default_pool = next(
        p["Id"] for p in state["pools"] if p["SpaceId"] == moved["SpaceId"] and p["Name"] == "Default Worker Pool"
    )
    put_worker(emulator, {**moved, "WorkerPoolIds": [default_pool]})

    dag_run, states = run_dag("share_octopus_workers", local_conf())

    assert str(dag_run.state) == "success", states
    after = emulator.control.state()
    fixed = record(after, "Space 003", "t-local-1")
    assert fixed["Id"] == moved["Id"] and pool_id_of(after, "Space 003") in fixed["WorkerPoolIds"]
    assert duplicate_records(after) == []
    row = next(r for r in xcom_value(dag_run, "summarize")["spaces"] if r["space_name"] == "Space 003")
    assert row["clouds"]["local"]["fixed"] == 1


def pool_id_of(state, space_name):
    space_id = next(s["Id"] for s in state["spaces"] if s["Name"] == space_name)
    return next(p["Id"] for p in state["pools"] if p["SpaceId"] == space_id and p["Name"] == LOCAL_POOL)


def test_copies_with_an_outdated_endpoint_are_updated_not_duplicated(local_cloud, emulator):
    # After a tentacle re-registers with a new subscription, its copies still carry the old poll:// URI.
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    run_dag("share_octopus_workers", local_conf())
    state = emulator.control.state()
    current = record(state, "Space 001", "t-local-2")["Endpoint"]
    for space in ("Space 002", "Space 003"):
        copy = record(state, space, "t-local-2")
        put_worker(emulator, {**copy, "Endpoint": {**copy["Endpoint"], "Uri": "poll://zzzzzzzzzzzzzzzzzzzz/"}})

    dag_run, states = run_dag("share_octopus_workers", local_conf())

    assert str(dag_run.state) == "success", states
    after = emulator.control.state()
    for space in ("Space 002", "Space 003"):
        copy = record(after, space, "t-local-2")
        assert copy["Endpoint"]["Uri"] == current["Uri"]
        assert copy["Endpoint"]["Thumbprint"] == current["Thumbprint"]
    assert duplicate_records(after) == []
    assert xcom_value(dag_run, "summarize")["totals"]["fixed"] == 2
