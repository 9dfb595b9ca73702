"""Ownership end to end: the DAGs touch only records the deployment's ledger proves are its own (issue 9).

Each test runs the real DAGs with ``dag.test()`` against the emulator and the local Terraform cloud.
"""

from __future__ import annotations

import pytest
import requests

from octopus.hooks import OctopusHook
from octopus.operations import share_space
from octopus_emulator.scenario import make_scenario, make_worker
from tests.dags.harness import (
    LOCAL_POOL,
    duplicate_records,
    ledgers,
    local_conf,
    run_dag,
    space_pool_members,
    xcom_value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]

FOREIGN = {
    "builder": {"HealthStatus": "Healthy"},
    "laptop": {"HealthStatus": "Unavailable"},
    "listening": {"HealthStatus": "Healthy", "CommunicationStyle": "TentaclePassive", "Uri": "https://10.0.0.9:10933/"},
}


def foreign_workers() -> list[dict]:
    workers = [make_worker(name, [LOCAL_POOL], **fields) for name, fields in FOREIGN.items()]
    workers.append(make_worker("two-pools", [LOCAL_POOL, "Default Worker Pool"], HealthStatus="Healthy"))
    return workers


def records_named(state, names):
    return {(w["SpaceId"], w["Name"]): w for w in state["workers"] if w["Name"] in names}


def identities(state):
    """What a write could change: every record's pools, endpoint and disabled flag (health checks aside)."""
    return sorted(
        (w["Id"], w["Name"], tuple(w["WorkerPoolIds"]), w["Endpoint"].get("Thumbprint"), w["IsDisabled"])
        for w in state["workers"]
    )


def api(emulator, method, path, **kwargs):
    response = requests.request(
        method, f"{emulator.url}/api/{path}", headers={"X-Octopus-ApiKey": emulator.api_key}, timeout=10, **kwargs
    )
    assert response.ok, response.text
    return response.json() if response.text else None


def test_foreign_workers_in_shared_pools_survive_share_prune_and_retire(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL], workers={1: foreign_workers(), 2: foreign_workers()}))
    foreign_before = records_named(emulator.control.state(), {*FOREIGN, "two-pools"})
    assert len(foreign_before) == 8

    for _ in range(2):  # the share, then a re-run that prunes
        dag_run, states = run_dag("share_octopus_workers", local_conf())
        assert str(dag_run.state) == "success", states
        assert records_named(emulator.control.state(), {*FOREIGN, "two-pools"}) == foreign_before
    summary = xcom_value(dag_run, "summarize")
    assert summary["foreign"]["Space 002"] == ["builder", "laptop", "listening", "two-pools"]
    assert summary["totals"]["pruned"] == 0 and summary["totals"]["foreign"] == 8

    dag_run, states = run_dag("retire_octopus_workers", {"clouds": ["local"], "name_prefix": "t"})
    assert str(dag_run.state) == "success", states
    state = emulator.control.state()
    assert records_named(state, {*FOREIGN, "two-pools"}) == foreign_before
    assert [w["Name"] for w in state["workers"] if w["Name"].startswith("t-local-")] == []


def test_a_second_deployment_beside_the_first_keeps_both_fleets(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    for prefix in ("t", "u", "t"):
        dag_run, states = run_dag("share_octopus_workers", local_conf(name_prefix=prefix))
        assert str(dag_run.state) == "success", (prefix, states)
    state = emulator.control.state()
    for records in space_pool_members(state).values():
        assert sorted(w["Name"] for w in records) == ["t-local-1", "t-local-2", "u-local-1", "u-local-2"]
    assert duplicate_records(state) == []
    assert set(ledgers()) == {"octopus_workers.t.local", "octopus_workers.u.local"}

    dag_run, _ = run_dag("retire_octopus_workers", {"clouds": ["local"], "name_prefix": "u"})
    assert str(dag_run.state) == "success"
    for records in space_pool_members(emulator.control.state()).values():
        assert sorted(w["Name"] for w in records) == ["t-local-1", "t-local-2"]


def test_a_space_that_now_sorts_first_does_not_move_the_fleet(local_cloud, emulator):
    emulator.control.reset(make_scenario(4, [LOCAL_POOL], spaces_without_pool=[1]))
    dag_run, _ = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success"
    assert ledgers()["octopus_workers.t.local"]["initial_space"]["id"] == "Spaces-2"
    # Another team creates the pool in a space that sorts first.
    api(emulator, "POST", "Spaces-1/workerpools", json={"Name": LOCAL_POOL, "WorkerPoolType": "StaticWorkerPool"})
    before = identities(emulator.control.state())

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "failed"
    assert states["get_spaces"] == {"": "failed"}
    assert "terraform_apply" not in states or set(states["terraform_apply"].values()) <= {"upstream_failed", "None"}
    assert identities(emulator.control.state()) == before

    dag_run, states = run_dag("share_octopus_workers", local_conf(initial_space="Space 002"))
    assert str(dag_run.state) == "success", states
    assert ledgers()["octopus_workers.t.local"]["initial_space"]["id"] == "Spaces-2"
    members = space_pool_members(emulator.control.state())
    assert len(members["Space 001"]) == 2  # now a copy target; the fleet stays where it was


def test_target_spaces_leave_the_initial_space_untouched(local_cloud, emulator):
    stale = make_worker("t-local-9", [LOCAL_POOL], HealthStatus="Unavailable")
    emulator.control.reset(make_scenario(4, [LOCAL_POOL], workers={1: [stale]}))
    before = next(w for w in emulator.control.state()["workers"] if w["Name"] == "t-local-9")
    dag_run, states = run_dag("share_octopus_workers", local_conf(target_spaces=["Space 003"]))
    assert str(dag_run.state) == "success"
    assert set(states["share_to_space"]) == {"Space 003"}  # the initial space is not visited: no maintenance
    deletes = [r for r in emulator.control.requests() if r["method"] == "DELETE"]
    assert deletes == []
    assert next(w for w in emulator.control.state()["workers"] if w["Name"] == "t-local-9") == before


def test_a_fleet_like_record_posted_with_the_vms_key_is_never_shared(local_cloud, emulator):
    intruder = make_worker("t-local-evil", [LOCAL_POOL], HealthStatus="Healthy")
    emulator.control.reset(make_scenario(3, [LOCAL_POOL], workers={1: [intruder]}))
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    state = emulator.control.state()
    assert [w["SpaceId"] for w in state["workers"] if w["Name"] == "t-local-evil"] == ["Spaces-1"]
    fleet = xcom_value(dag_run, "wait_for_workers", map_index=0)
    assert [w["name"] for w in fleet["workers"]] == ["t-local-1", "t-local-2"]


def test_instance_count_zero_removes_every_copy_and_waits_for_nothing(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL], workers={2: foreign_workers()}))
    run_dag("share_octopus_workers", local_conf())
    dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": 0}))
    assert str(dag_run.state) == "success", states
    state = emulator.control.state()
    assert [w for w in state["workers"] if w["Name"].startswith("t-local-")] == []
    assert len(records_named(state, {*FOREIGN, "two-pools"})) == 4


def test_a_worker_re_registered_after_the_wait_keeps_its_new_endpoint(local_cloud, emulator):
    """A stale fleet (an old read) handed to the share must not revert a record: the share reads it itself."""
    emulator.control.reset(make_scenario(2, [LOCAL_POOL]))
    dag_run, _ = run_dag("share_octopus_workers", local_conf())
    old_fleet = xcom_value(dag_run, "wait_for_workers", map_index=0)
    state = emulator.control.state()
    record = next(w for w in state["workers"] if w["SpaceId"] == "Spaces-1" and w["Name"] == "t-local-1")
    new_tp, new_uri = "F" * 40, "poll://zzzzzzzzzzzzzzzzzzzz/"
    api(
        emulator,
        "PUT",
        f"Spaces-1/workers/{record['Id']}",
        json={**record, "Endpoint": {**record["Endpoint"], "Thumbprint": new_tp, "Uri": new_uri}},
    )
    visit = {
        "id": "Spaces-1",
        "name": "Space 001",
        "pools": {"local": {"pool_id": record["WorkerPoolIds"][0], "pool_name": LOCAL_POOL, "role": "initial"}},
    }
    with OctopusHook() as hook:
        share_space(hook, visit, [old_fleet], prune=True, dry_run=False)
    after = next(w for w in emulator.control.state()["workers"] if w["Id"] == record["Id"])
    assert (after["Endpoint"]["Thumbprint"], after["Endpoint"]["Uri"]) == (new_tp, new_uri)


@pytest.mark.parametrize("trial", range(20))
def test_two_clouds_touching_one_record_end_exactly_right(emulator, octopus_connection, trial):
    """A copy sitting only in another cloud's pool, and a record in two shared pools: one write each, right."""
    pools = [LOCAL_POOL, "AWS Worker Pool TF"]
    aws_copy = make_worker("t-aws-1", [LOCAL_POOL], seed="aws-1")  # moved by someone into the local pool
    ours_both = make_worker("t-local-old", pools, seed="local-old")  # stale local copy in both pools
    emulator.control.reset(make_scenario(2, pools, workers={2: [aws_copy, ours_both]}))
    state = emulator.control.state()
    pool_ids = {p["Name"]: p["Id"] for p in state["pools"] if p["SpaceId"] == "Spaces-2"}
    by_name = {w["Name"]: w for w in state["workers"]}

    def owned(name):
        return {"name": name, "thumbprint": by_name[name]["Endpoint"]["Thumbprint"]}

    aws_worker = {**owned("t-aws-1"), "uri": by_name["t-aws-1"]["Endpoint"]["Uri"]}
    fleets = [
        {"cloud": "aws", "workers": [aws_worker], "owned": [owned("t-aws-1")]},
        {"cloud": "local", "workers": [], "owned": [owned("t-local-old")]},
    ]
    visit = {
        "id": "Spaces-2",
        "name": "Space 002",
        "pools": {
            "aws": {"pool_id": pool_ids["AWS Worker Pool TF"], "pool_name": "AWS Worker Pool TF", "role": "copy"},
            "local": {"pool_id": pool_ids[LOCAL_POOL], "pool_name": LOCAL_POOL, "role": "copy"},
        },
    }
    with OctopusHook() as hook:
        result = share_space(hook, visit, fleets, prune=True, dry_run=False)
    assert not any(c.get("errors") for c in result["clouds"].values()), result
    after = {w["Name"]: w for w in emulator.control.state()["workers"] if w["SpaceId"] == "Spaces-2"}
    assert sorted(after["t-aws-1"]["WorkerPoolIds"]) == sorted([pool_ids[LOCAL_POOL], pool_ids["AWS Worker Pool TF"]])
    assert after["t-local-old"]["WorkerPoolIds"] == [pool_ids["AWS Worker Pool TF"]]  # unshared, not deleted
    writes = [r for r in emulator.control.requests() if r["method"] in ("PUT", "DELETE", "POST")]
    assert len(writes) == 2 and len({r["path"] for r in writes}) == 2


def asset_events(uri: str, run_ids) -> list[dict]:
    """Events of ``uri`` emitted by the given runs (the session's database also holds other tests' events)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetModel.uri == uri, AssetEvent.source_run_id.in_(list(run_ids)))
            .all()
        )
        return [{"dag": e.source_dag_id, "task": e.source_task_id, "extra": dict(e.extra or {})} for e in rows]


def test_a_full_share_and_a_full_retire_each_emit_their_asset(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    server = emulator.url.split("://", 1)[1].rstrip("/")
    shared, retired = f"octopus://{server}/shared-workers/t", f"octopus://{server}/shared-workers/t/retired"
    share_run, _ = run_dag("share_octopus_workers", local_conf())
    assert str(share_run.state) == "success"
    (event,) = asset_events(shared, [share_run.run_id])
    assert (event["dag"], event["task"]) == ("share_octopus_workers", "summarize")
    assert event["extra"]["totals"]["added"] == 4 and event["extra"]["clouds"] == ["local"]
    assert asset_events(retired, [share_run.run_id]) == []

    retire_run, _ = run_dag("retire_octopus_workers", {"clouds": ["local"], "name_prefix": "t"})
    assert str(retire_run.state) == "success"
    runs = [share_run.run_id, retire_run.run_id]
    (event,) = asset_events(retired, runs)
    assert event["dag"] == "retire_octopus_workers" and event["extra"]["totals"]["pruned"] == 6
    assert len(asset_events(shared, runs)) == 1  # a teardown never says "shared"
