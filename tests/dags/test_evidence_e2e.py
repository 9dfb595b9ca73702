"""Ownership that cannot be forged, forgotten, lost or raced (issue 17), end to end.

The real DAGs under ``dag.test()`` against the emulator and the local Terraform cloud; the ledger is the real
Airflow Variable, edited here as a Variable editor, an import or a restore would.
"""

from __future__ import annotations

import json

import pytest
import requests

from octopus_emulator.scenario import make_scenario, make_worker
from tests.dags.harness import (
    LOCAL_POOL,
    clear_ledgers,
    duplicate_records,
    ledgers,
    local_conf,
    run_dag,
    space_pool_members,
    terraform_local,
    thumbprints,
    xcom_value,
)
from tests.dags.test_ownership_e2e import asset_events

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]

KEY = "octopus_workers.t.local"
RETIRE = {"clouds": ["local"], "name_prefix": "t"}


class ModelStore:
    """The ledger's Variables through Airflow's models: the test process is not a task."""

    def load(self, key):
        from airflow.models.variable import Variable

        return Variable.get(key, default_var=None, deserialize_json=True)

    def save(self, key, doc):
        from airflow.models.variable import Variable

        Variable.set(key, doc, serialize_json=True)

    def delete(self, key):
        from airflow.models.variable import Variable

        Variable.delete(key)

    def keys(self, prefix):
        return sorted(k for k in ledgers() if k.startswith(prefix))


def identities(state):
    """What a write could change: every record's pools, endpoint and disabled flag (health checks aside)."""
    return sorted(
        (w["Id"], w["Name"], tuple(w["WorkerPoolIds"]), w["Endpoint"].get("Thumbprint"), w["IsDisabled"])
        for w in state["workers"]
    )


def set_ledger(doc):
    from airflow.models.variable import Variable

    Variable.set(KEY, json.dumps(doc))


def owned(doc=None):
    return sorted(o["thumbprint"] for o in (doc or ledgers()[KEY])["owned"])


def api(emulator, method, path, **kwargs):
    response = requests.request(
        method, f"{emulator.url}/api/{path}", headers={"X-Octopus-ApiKey": emulator.api_key}, timeout=10, **kwargs
    )
    assert response.ok, response.text
    return response.json() if response.text else None


def record(state, space_name, name):
    space_id = next(s["Id"] for s in state["spaces"] if s["Name"] == space_name)
    return next(w for w in state["workers"] if w["SpaceId"] == space_id and w["Name"] == name)


def rebuild(emulator):
    """The fleet's VMs are destroyed (a rebuild): the next run builds new ones with new endpoints."""
    terraform_local("destroy", server_url=emulator.url, space_name="Space 001", count=2)


def fleet_thumbprints(dag_run):
    return sorted(w["thumbprint"] for w in xcom_value(dag_run, "wait_for_workers", map_index=0)["workers"])


def test_a_variable_editors_forged_entries_are_ignored_and_reported(local_cloud, emulator):
    victims = [
        make_worker(n, [LOCAL_POOL], HealthStatus=h) for n, h in (("builder", "Healthy"), ("laptop", "Unavailable"))
    ]
    victims.append(make_worker("two-pools", [LOCAL_POOL, "Default Worker Pool"]))
    emulator.control.reset(make_scenario(3, [LOCAL_POOL], workers={2: victims}))
    dag_run, _ = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success"
    state = emulator.control.state()
    before = {w["Id"]: w for w in state["workers"] if w["Name"] in ("builder", "laptop", "two-pools")}
    doc = ledgers()[KEY]
    forged = [{"name": w["Name"], "thumbprint": w["Endpoint"]["Thumbprint"], "mac": "f" * 64} for w in before.values()]
    set_ledger({**doc, "owned": [*doc["owned"], *forged]})

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    after = {w["Id"]: w for w in emulator.control.state()["workers"] if w["Id"] in before}
    assert after == before  # not deleted, not unshared, not disabled
    summary = xcom_value(dag_run, "summarize")
    assert summary["totals"]["pruned"] == summary["totals"]["unshared"] == 0
    rejected = summary["evidence_rejected"]["local"]
    assert sorted(r["name"] for r in rejected) == ["builder", "laptop", "two-pools"]
    assert owned() == fleet_thumbprints(dag_run)  # the forgeries were moved aside, never owned
    assert sorted(u["name"] for u in ledgers()[KEY]["unverified"]) == ["builder", "laptop", "two-pools"]


def test_a_space_the_key_cannot_list_keeps_the_evidence_until_it_is_read(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    first, _ = run_dag("share_octopus_workers", local_conf())
    old = fleet_thumbprints(first)
    rebuild(emulator)
    emulator.control.set_faults({"forbidden_spaces": ["Spaces-3"]})

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert states["share_to_space"]["Space 003"] == "failed"  # 403: its pools cannot be read
    assert str(dag_run.state) == "failed"
    doc = ledgers()[KEY]
    assert set(old) <= set(owned(doc)) and "Spaces-3" in doc["spaces"]
    summary = xcom_value(dag_run, "summarize", key="summary")
    assert "Space 003 (Spaces-3)" in summary["spaces_not_verified"]["local"]

    emulator.control.clear_faults()
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    members = space_pool_members(emulator.control.state())
    new = fleet_thumbprints(dag_run)
    assert thumbprints(members["Space 003"]) == new  # yesterday's copies there were recognised and replaced
    assert owned() == new


def test_a_pool_renamed_during_a_rebuild_keeps_the_evidence_and_retire_still_finds_it(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    first, _ = run_dag("share_octopus_workers", local_conf())
    old = fleet_thumbprints(first)
    state = emulator.control.state()
    pool = next(p for p in state["pools"] if p["SpaceId"] == "Spaces-3" and p["Name"] == LOCAL_POOL)
    api(emulator, "PUT", f"Spaces-3/workerpools/{pool['Id']}", json={**pool, "Name": "Renamed by its team"})
    rebuild(emulator)

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    doc = ledgers()[KEY]
    assert set(old) <= set(owned(doc)), "the copies in the renamed pool were not forgotten"
    assert doc["spaces"]["Spaces-3"]["pool_id"] == pool["Id"]

    dag_run, states = run_dag("retire_octopus_workers", RETIRE)
    assert str(dag_run.state) == "success", states
    assert "Space 003" in states["retire_copies"]
    leftover = [w for w in emulator.control.state()["workers"] if w["Name"].startswith("t-local-")]
    assert leftover == []
    assert ledgers()[KEY]["owned"] == [] and ledgers()[KEY]["spaces"] == {}


def test_a_failed_initial_space_index_fails_the_run_and_keeps_the_evidence(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    run_dag("share_octopus_workers", local_conf())
    # A space admin renamed our registration in the initial space: after a rebuild it is a stale record of ours
    # there, which the initial space's index must prune, and Octopus refuses that delete.
    mine = record(emulator.control.state(), "Space 001", "t-local-2")
    api(emulator, "PUT", f"Spaces-1/workers/{mine['Id']}", json={**mine, "Name": "renamed by an admin"})
    rebuild(emulator)
    refusal = {"count": 10, "status": 403, "method": "DELETE", "path_regex": f"/workers/{mine['Id']}$"}
    emulator.control.set_faults({"fail_next": [refusal]})

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert states["share_to_space"]["Space 001"] == "failed"
    assert str(dag_run.state) == "failed", states
    summary = xcom_value(dag_run, "summarize", key="summary")
    assert "Space 001" in summary["failed_spaces"]
    assert mine["Endpoint"]["Thumbprint"] in owned()  # still held there: never forgotten


def test_retire_with_an_unreadable_space_fails_and_keeps_the_evidence(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    share, _ = run_dag("share_octopus_workers", local_conf())
    server = emulator.url.split("://", 1)[1].rstrip("/")
    retired = f"octopus://{server}/shared-workers/t/retired"
    emulator.control.set_faults({"forbidden_spaces": ["Spaces-3"]})

    dag_run, states = run_dag("retire_octopus_workers", RETIRE)
    assert str(dag_run.state) == "failed", states
    assert states["disable_records"]["Space 003"] == "failed"  # 403: it cannot even be drained
    assert set(states["terraform_destroy"].values()) == {"upstream_failed"}
    assert asset_events(retired, [dag_run.run_id]) == []
    doc = ledgers()[KEY]
    assert "Spaces-3" in doc["spaces"] and owned(doc) == fleet_thumbprints(share)

    emulator.control.clear_faults()
    dag_run, states = run_dag("retire_octopus_workers", RETIRE)
    assert str(dag_run.state) == "success", states
    assert [w for w in emulator.control.state()["workers"] if w["Name"].startswith("t-local-")] == []
    assert len(asset_events(retired, [dag_run.run_id])) == 1


def test_a_lost_ledger_then_a_rebuild_never_shares_a_replaced_endpoint_and_adopts_only_on_request(
    local_cloud, emulator
):
    builder = make_worker("builder", [LOCAL_POOL])
    emulator.control.reset(make_scenario(3, [LOCAL_POOL], workers={2: [builder]}))
    first, _ = run_dag("share_octopus_workers", local_conf())
    old = fleet_thumbprints(first)
    clear_ledgers()  # a metadata database restored from before the first run, or Airflow moved
    rebuild(emulator)

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    new = fleet_thumbprints(dag_run)
    assert not set(new) & set(old), "the wait took a replaced instance's record for the new one"
    state = emulator.control.state()
    members = space_pool_members(state)
    assert thumbprints(members["Space 001"]) == new
    for space in ("Space 002", "Space 003"):
        # yesterday's copies are no longer provably ours: left alone, their names block the new fleet there
        assert thumbprints([w for w in members[space] if w["Name"].startswith("t-")]) == old
        assert states["share_to_space"][space] == "failed"
    summary = xcom_value(dag_run, "summarize")
    adoptable = sorted({r["thumbprint"] for records in summary["adoptable"].values() for r in records})
    assert adoptable == old

    before = identities(emulator.control.state())
    dry, _ = run_dag("share_octopus_workers", local_conf(dry_run=True, adopt=old))
    assert str(dry.state) == "success"
    assert identities(emulator.control.state()) == before

    refused, states = run_dag("share_octopus_workers", local_conf(adopt=[*old, builder["Thumbprint"]]))
    assert states["get_spaces"] == {"": "failed"}  # a thumbprint not named like the fleet: nothing written
    assert identities(emulator.control.state()) == before

    dag_run, states = run_dag("share_octopus_workers", local_conf(adopt=old))
    assert str(dag_run.state) == "success", states
    state = emulator.control.state()
    members = space_pool_members(state)
    for space in ("Space 001", "Space 002", "Space 003"):
        assert sorted(w["Endpoint"]["Thumbprint"] for w in members[space] if w["Name"].startswith("t-")) == new
    assert duplicate_records(state) == []
    assert record(state, "Space 002", "builder")  # never touched
    assert owned() == new  # the adopted endpoints are gone from every space, so the evidence forgot them


def test_a_copy_renamed_by_a_space_admin_is_still_ours(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    run_dag("share_octopus_workers", local_conf())
    copy = record(emulator.control.state(), "Space 002", "t-local-1")
    api(emulator, "PUT", f"Spaces-2/workers/{copy['Id']}", json={**copy, "Name": "Blue team's worker"})
    emulator.control.clear_requests()

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    writes = [
        r for r in emulator.control.requests() if r["method"] in ("POST", "PUT", "DELETE") and "/api/" in r["path"]
    ]
    assert writes == []  # present, left as its admin named it; no duplicate added
    renamed = next(w for w in emulator.control.state()["workers"] if w["Id"] == copy["Id"])
    assert renamed["Name"] == "Blue team's worker"

    dag_run, states = run_dag("retire_octopus_workers", RETIRE)
    assert str(dag_run.state) == "success", states
    assert copy["Id"] not in {w["Id"] for w in emulator.control.state()["workers"]}


def test_a_foreign_name_clash_blocks_one_space_not_the_asset_and_never_grows_the_evidence(local_cloud, emulator):
    squatter = make_worker("t-local-1", [LOCAL_POOL], HealthStatus="Healthy")
    emulator.control.reset(make_scenario(4, [LOCAL_POOL], workers={3: [squatter]}))
    server = emulator.url.split("://", 1)[1].rstrip("/")
    shared = f"octopus://{server}/shared-workers/t"
    sizes = []
    for day in range(3):
        if day:
            rebuild(emulator)
        dag_run, states = run_dag("share_octopus_workers", local_conf())
        assert str(dag_run.state) == "success", (day, states)
        assert states["share_to_space"]["Space 003"] == "failed"
        (event,) = asset_events(shared, [dag_run.run_id])
        assert event["extra"]["blocked"] == ["Space 003"]
        sizes.append(len(ledgers()[KEY]["owned"]))
        squatted = record(emulator.control.state(), "Space 003", "t-local-1")
        assert squatted["Endpoint"]["Thumbprint"] == squatter["Thumbprint"]
    assert sizes == [2, 2, 2]


def test_tasks_of_an_older_run_refuse_after_a_newer_run_and_write_nothing(local_cloud, emulator):
    """A cleared retire or share task of yesterday's run, after today's run claimed the deployment."""
    from airflow.sdk.exceptions import AirflowFailException

    from octopus import tasks
    from octopus.tasks import this_run

    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    old_run, _ = run_dag("share_octopus_workers", local_conf())
    old_plans = xcom_value(old_run, "get_spaces")
    old_fleet = xcom_value(old_run, "wait_for_workers", map_index=0)
    old_spaces = xcom_value(old_run, "spaces_to_share")
    new_run, _ = run_dag("share_octopus_workers", local_conf())
    assert str(new_run.state) == "success"
    before = emulator.control.state()["workers"]
    ledger_before = ledgers()[KEY]

    class TI:
        task_id, map_index = "retire_copies", 0

        def xcom_push(self, **_):
            raise AssertionError("an older run's task must refuse before pushing anything")

    class Dag:
        dag_id = "retire_octopus_workers"

    store = ModelStore()
    context = {"dag": Dag(), "run_id": old_run.run_id, "ti": TI(), "params": {**RETIRE, "dry_run": False}}
    with pytest.raises(AirflowFailException, match="claimed by a newer run"):
        tasks.retire_from_space(old_spaces[0], [{"cloud": "local"}], context, conn_id="octopus_default", store=store)
    Dag.dag_id, TI.task_id = "share_octopus_workers", "share_to_space"
    context["params"] = local_conf()
    with pytest.raises(AirflowFailException, match="claimed by a newer run"):
        tasks.share_to_space(old_spaces[0], [old_fleet], context, conn_id="octopus_default", store=store)
    TI.task_id, TI.map_index = "summarize", -1
    with pytest.raises(AirflowFailException, match="claimed by a newer run"), tasks.fail_fast_on_bad_input():
        tasks.compact(context, store, None, "local", [])
    assert this_run(context)["run_id"] == old_run.run_id
    assert old_plans and identities(emulator.control.state()) == identities({"workers": before})
    assert ledgers()[KEY] == ledger_before
