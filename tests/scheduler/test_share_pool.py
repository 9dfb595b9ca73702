"""The share pool (issue 18, item 6: no silent hang when the pool was never created).

``share_to_space`` runs in Airflow's ``default_pool`` (which every Airflow has and none can delete) unless
``[octopus] share_pool`` names a pool. Under a real scheduler: a fresh Airflow without ``octopus_share`` shares;
an install that configured the dedicated pool shares in it; and a configured pool that is missing holds the shares
in ``scheduled`` (Airflow 3.3 shows pools to no task, so nothing in the package can check it) with the reason
Airflow gives in the task's blocking dependencies, and the same run finishes once the pool is created.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from octopus.dag_defaults import DEFAULT_SHARE_POOL, SHARE_MAX_ACTIVE_TIS, SHARE_POOL, share_pool
from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, local_conf, space_pool_members, thumbprints
from tests.scheduler.standalone import SHARE_DAG, AirflowStandalone, share_standalone

SPACES = ["Space 001", "Space 002", "Space 003"]
CONF = local_conf(name_prefix="pool")
TERMINAL = {"success", "failed"}


def shares(airflow: AirflowStandalone, run_id: str) -> dict[str, dict[str, Any]]:
    """``share_to_space`` instances of one run by map index."""
    tis = airflow.api.task_instances(SHARE_DAG, run_id)
    return {ti["map_index"]: ti for ti in tis if ti["task_id"] == "share_to_space"}


def wait_run_finished(airflow: AirflowStandalone, run_id: str, timeout: float = 240) -> str:
    def finished() -> str | None:
        state = airflow.api.dag_run(SHARE_DAG, run_id)["state"]
        return state if state in TERMINAL else None

    return airflow.wait(finished, timeout=timeout, interval=1, what=f"run {run_id} to finish")


def assert_shared_everywhere(emulator) -> None:
    members = space_pool_members(emulator.control.state())
    fleet = thumbprints(members["Space 001"])
    assert len(fleet) == CONF["instance_count"]["local"]
    assert {space: thumbprints(records) for space, records in members.items()} == {space: fleet for space in SPACES}


# --------------------------------------------------------------------------- the setting, as the DAG parses it


@pytest.mark.parametrize(
    ("configured", "pool"),
    [
        (None, DEFAULT_SHARE_POOL),
        ("  ", DEFAULT_SHARE_POOL),
        (" octopus_share ", "octopus_share"),
        ("team-a", "team-a"),
    ],
)
def test_share_pool_setting(monkeypatch, configured, pool):
    if configured is None:
        monkeypatch.delenv("AIRFLOW__OCTOPUS__SHARE_POOL", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__OCTOPUS__SHARE_POOL", configured)
    assert share_pool() == pool


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("configured", [None, SHARE_POOL])
def test_share_to_space_takes_its_pool_from_the_setting_and_caps_itself_in_any_pool(monkeypatch, configured):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    if configured is None:
        monkeypatch.delenv("AIRFLOW__OCTOPUS__SHARE_POOL", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__OCTOPUS__SHARE_POOL", configured)
    bag = DagBag(dag_folder=str(ROOT / "dags" / "share_octopus_workers.py"))
    assert bag.import_errors == {}
    share = bag.dags[SHARE_DAG].get_task("share_to_space")
    assert share.pool == (configured or "default_pool")
    # The pool no longer caps the shares across runs: the task does, so the hooks' pacing at a 1/16 share of
    # max_requests_per_minute holds whatever the pool (and however many runs, e.g. a backfill beside a run).
    assert share.partial_kwargs["max_active_tis_per_dagrun"] == SHARE_MAX_ACTIVE_TIS
    assert share.partial_kwargs["max_active_tis_per_dag"] == SHARE_MAX_ACTIVE_TIS


# --------------------------------------------------------------------------- under a real scheduler


@pytest.mark.scheduler
def test_without_the_share_pool_a_run_still_shares(emulator_process, tmp_path_factory):
    """A fresh Airflow where nobody ran the old README's ``airflow pools set octopus_share``: the run succeeds."""
    emulator_process.control.reset(make_scenario(len(SPACES), [LOCAL_POOL]))
    emulator_process.control.clear_faults()
    with share_standalone(emulator_process, tmp_path_factory.mktemp("standalone-no-pool")) as airflow:
        api = airflow.api
        api.call("GET", f"pools/{SHARE_POOL}", ok=(404,))  # the pool really is missing
        api.unpause(SHARE_DAG)
        run_id = api.trigger(SHARE_DAG, CONF)

        assert wait_run_finished(airflow, run_id) == "success"
        tis = shares(airflow, run_id)
        assert sorted(ti["rendered_map_index"] for ti in tis.values()) == SPACES
        assert {(ti["state"], ti["pool"]) for ti in tis.values()} == {("success", "default_pool")}
    assert_shared_everywhere(emulator_process)


@pytest.mark.scheduler
def test_a_configured_share_pool_is_used_and_a_missing_one_is_named_until_created(emulator_process, tmp_path_factory):
    """``[octopus] share_pool = octopus_share`` (an install that created it keeps its pool). Missing, the shares
    wait in ``scheduled`` and Airflow's blocking dependencies (the task's details in the UI) name the pool; once
    it is created, the same run shares in it and succeeds."""
    emulator_process.control.reset(make_scenario(len(SPACES), [LOCAL_POOL]))
    emulator_process.control.clear_faults()
    with share_standalone(
        emulator_process,
        tmp_path_factory.mktemp("standalone-configured-pool"),
        env={"AIRFLOW__OCTOPUS__SHARE_POOL": SHARE_POOL},
    ) as airflow:
        api = airflow.api
        api.call("GET", f"pools/{SHARE_POOL}", ok=(404,))
        api.unpause(SHARE_DAG)
        run_id = api.trigger(SHARE_DAG, CONF)

        def all_scheduled() -> dict[int, dict[str, Any]] | None:
            if api.dag_run(SHARE_DAG, run_id)["state"] in TERMINAL:
                raise AssertionError(f"run {run_id} finished although its share pool does not exist")
            tis = shares(airflow, run_id)
            held = len(tis) == len(SPACES) and all(ti["state"] == "scheduled" for ti in tis.values())
            return tis if held else None

        airflow.wait(all_scheduled, timeout=240, interval=1, what="every share_to_space to be scheduled")
        time.sleep(10)  # some twenty scheduler loops: none of them queues a share
        held = all_scheduled()
        assert held is not None, "a share left 'scheduled' although its pool does not exist"
        assert {ti["pool"] for ti in held.values()} == {SHARE_POOL}
        for index in held:
            deps = api.call(
                "GET", f"dags/{SHARE_DAG}/dagRuns/{run_id}/taskInstances/share_to_space/{index}/dependencies"
            )["dependencies"]
            assert f"non-existent pool '{SHARE_POOL}'" in " ".join(d["reason"] for d in deps), deps

        api.create_share_pool()  # the README's `airflow pools set octopus_share 16 "..."`

        assert wait_run_finished(airflow, run_id) == "success"
        tis = shares(airflow, run_id)
        assert {(ti["state"], ti["pool"]) for ti in tis.values()} == {("success", SHARE_POOL)}
    assert_shared_everywhere(emulator_process)
