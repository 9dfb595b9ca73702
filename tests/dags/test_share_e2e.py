"""share_octopus_workers end to end: dag.test() + the emulator over HTTP + the real local Terraform cloud."""

from __future__ import annotations

import pytest

from octopus_emulator.scenario import make_scenario, make_worker
from tests.dags.harness import (
    LOCAL_POOL,
    duplicate_records,
    local_conf,
    run_dag,
    space_pool_members,
    thumbprints,
    xcom_value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]


def fleet_in_initial(state, initial="Space 001"):
    """Thumbprints of the live local fleet in the initial space's pool."""
    members = space_pool_members(state)[initial]
    return sorted(w["Endpoint"]["Thumbprint"] for w in members if w["HealthStatus"] != "Unavailable")


def test_forty_spaces_over_two_pages_each_hold_exactly_the_fleet_and_rerun_posts_nothing(local_cloud, emulator):
    emulator.control.reset(make_scenario(40, [LOCAL_POOL], spaces_without_pool=[5, 17, 33]))

    dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": 3}))

    assert str(dag_run.state) == "success", states
    assert states["terraform_apply"] == {"local": "success"}
    assert states["wait_for_workers"] == {"local": "success"}
    assert len(states["share_to_space"]) == 36 + 1  # 36 remaining spaces + the initial one (pruning)
    assert set(states["share_to_space"].values()) == {"success"}
    state = emulator.control.state()
    fleet = fleet_in_initial(state)
    assert len(fleet) == 3
    members = space_pool_members(state)
    assert len(members) == 37
    assert all(thumbprints(records) == fleet for records in members.values())
    assert duplicate_records(state) == []
    summary = xcom_value(dag_run, "summarize")
    assert summary["totals"]["added"] == 36 * 3 and summary["failed_spaces"] == []

    # (b) a second run: Terraform no-op, no POST at all, same end state
    emulator.control.clear_requests()
    dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": 3}))
    assert str(dag_run.state) == "success", states
    counters = emulator.control.counters()
    # 1 space list + 40 pool lists (discovery), 1 read of the initial pool (the wait, reused for pruning it),
    # then 1 read per remaining space: nothing else.
    # Discovery 1 + 40; the wait 1; then one fresh read per visited space (36 copies + the initial space).
    assert counters["total"] == 1 + 40 + 1 + 37, counters["by_route"]
    assert counters["by_method"].get("POST", 0) == 0
    assert counters["by_method"].get("PUT", 0) == 0
    assert counters["by_method"].get("DELETE", 0) == 0
    assert xcom_value(dag_run, "terraform_apply", map_index=0)["changes"] == {}
    after = emulator.control.state()
    assert all(thumbprints(r) == fleet for r in space_pool_members(after).values())
    assert len(after["workers"]) == len(state["workers"])


def test_space_answering_403_fails_only_its_index_then_rerun_succeeds(local_cloud, emulator):
    emulator.control.reset(make_scenario(4, [LOCAL_POOL]))
    emulator.control.set_faults({"forbidden_spaces": ["Spaces-3"]})  # every request into it: 403

    dag_run, states = run_dag("share_octopus_workers", local_conf())

    assert str(dag_run.state) == "failed"
    assert states["share_to_space"]["Space 003"] == "failed"
    assert [s for label, s in states["share_to_space"].items() if label != "Space 003"] == ["success"] * 3
    assert states["summarize"] == {"": "failed"}
    members = space_pool_members(emulator.control.state())
    assert len(members["Space 002"]) == 2 and len(members["Space 004"]) == 2 and members["Space 003"] == []

    emulator.control.clear_faults()
    dag_run, states = run_dag("share_octopus_workers", local_conf(target_spaces=["Space 003"]))
    assert str(dag_run.state) == "success", states
    assert len(space_pool_members(emulator.control.state())["Space 003"]) == 2


def test_stale_unavailable_records_neither_satisfy_the_wait_nor_get_shared(local_cloud, emulator):
    stale = [
        make_worker(f"t-local-{i}", pools=[LOCAL_POOL], HealthStatus="Unavailable", seed=f"stale-{i}")
        for i in (1, 2, 3)
    ]
    emulator.control.reset(make_scenario(3, [LOCAL_POOL], workers={1: stale}))

    dag_run, states = run_dag("share_octopus_workers", local_conf())

    assert str(dag_run.state) == "success", states
    state = emulator.control.state()
    fleet = fleet_in_initial(state, "Space 001")
    stale_tps = {w["Thumbprint"] for w in stale}
    assert len(fleet) == 2 and not stale_tps & set(fleet)
    members = space_pool_members(state)
    for name in ("Space 002", "Space 003"):
        assert thumbprints(members[name]) == fleet
    # the third stale record was never registered by this deployment's fleet (no ledger entry): foreign, kept
    assert [w["Name"] for w in members["Space 001"] if w["Endpoint"]["Thumbprint"] in stale_tps] == ["t-local-3"]
    assert xcom_value(dag_run, "summarize")["foreign"] == {"Space 001": ["t-local-3"]}


def test_target_spaces_limit_sharing(local_cloud, emulator):
    emulator.control.reset(make_scenario(5, [LOCAL_POOL]))

    dag_run, states = run_dag("share_octopus_workers", local_conf(target_spaces=["Space 003", "Spaces-5"]))

    assert str(dag_run.state) == "success", states
    assert set(states["share_to_space"]) == {"Space 003", "Space 005"}  # the initial space is not a target
    members = space_pool_members(emulator.control.state())
    assert [len(members[f"Space {i:03d}"]) for i in range(1, 6)] == [2, 0, 2, 0, 2]


def test_dry_run_writes_nothing(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    before = emulator.control.state()

    dag_run, states = run_dag("share_octopus_workers", local_conf(dry_run=True))

    assert str(dag_run.state) == "success", states
    counters = emulator.control.counters()
    assert {m for m in counters["by_method"] if counters["by_method"][m]} == {"GET"}
    assert emulator.control.state()["workers"] == before["workers"]
    plan = xcom_value(dag_run, "terraform_apply", map_index=0)
    assert plan["action"] == "plan" and plan["changes"].get("create", 0) >= 2
