"""share_octopus_workers under a real scheduler: ``airflow standalone`` + the emulator + the local cloud, via REST v2.

One DAG run is shared by the tests (module fixture ``failed_run``): a space whose writes answer 403 fails only
its own index; the fleet sensor defers to the real triggerer. The last test clears that index and ``summarize``
only, and the same run ends in success.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, duplicate_records, local_conf, space_pool_members, thumbprints
from tests.scheduler.standalone import SHARE_DAG, AirflowStandalone

pytestmark = [pytest.mark.scheduler]

TERMINAL = {"success", "failed"}
SPACES = ["Space 001", "Space 002", "Space 003", "Space 004"]
READONLY_SPACE, READONLY_SPACE_ID = "Space 003", "Spaces-3"
INITIAL_SPACE_ID = "Spaces-1"  # where the fleet registers itself
TRIGGER_CLASSPATH = "octopus.triggers.OctopusWorkersRegisteredTrigger"
# The simulated tentacles retry a 503 on GET /api for 60 s (a starting server). Answering it 503 holds their
# registration until the test has seen the sensor deferred, so its wait is surely done by the triggerer.
HOLD_REGISTRATION = {"count": 1_000_000, "status": 503, "method": "GET", "path_regex": "^/api/?$"}
CONF = local_conf(wait_mode="deferrable", registration_timeout_minutes=3, name_prefix="sched")


@dataclass
class RunResult:
    run_id: str
    state: str
    task_instances: list[dict[str, Any]]
    deferred_sensor: dict[str, Any]  # wait_for_workers as the API showed it while deferred
    pool_reads_while_held: int  # reads of the initial pool before any worker could register


def by_task(task_instances: list[dict[str, Any]], task_id: str) -> dict[str, dict[str, Any]]:
    """``rendered_map_index`` (or "" when not mapped) → task instance, for one task."""
    return {ti["rendered_map_index"] or "": ti for ti in task_instances if ti["task_id"] == task_id}


def wait_run_finished(airflow: AirflowStandalone, run_id: str, timeout: float = 240) -> str:
    def finished() -> str | None:
        state = airflow.api.dag_run(SHARE_DAG, run_id)["state"]
        return state if state in TERMINAL else None

    return airflow.wait(finished, timeout=timeout, interval=1, what=f"run {run_id} to finish")


@pytest.fixture(scope="module")
def failed_run(standalone, emulator_process) -> RunResult:
    control = emulator_process.control
    control.reset(make_scenario(len(SPACES), [LOCAL_POOL]))
    control.clear_requests()
    control.set_faults({"readonly_spaces": [READONLY_SPACE_ID], "fail_next": [HOLD_REGISTRATION]})
    api = standalone.api
    run_id = api.trigger(SHARE_DAG, CONF)

    def sensor_deferred() -> dict[str, Any] | None:
        tis = api.task_instances(SHARE_DAG, run_id)
        sensor = by_task(tis, "wait_for_workers").get("local")
        if sensor and sensor["state"] in TERMINAL | {"upstream_failed", "skipped"}:
            states = sorted((ti["task_id"], ti["rendered_map_index"], ti["state"]) for ti in tis)
            raise AssertionError(f"wait_for_workers ended {sensor['state']} without deferring; tasks: {states}")
        picked_up = sensor and sensor["state"] == "deferred" and (sensor["trigger"] or {}).get("triggerer_id")
        return sensor if picked_up else None

    def initial_pool_reads() -> int:
        return sum(
            1
            for r in control.requests()
            if (r["method"], r["path"], r["status"]) == ("GET", f"/api/{INITIAL_SPACE_ID}/workers", 200)
        )

    try:
        deferred = standalone.wait(
            sensor_deferred, timeout=120, interval=0.5, what="wait_for_workers[local] to be deferred to the triggerer"
        )
        # The sensor read the pool once before deferring; a further read is the trigger's, finding no worker.
        reads = standalone.wait(
            lambda: (n := initial_pool_reads()) >= 2 and n,
            timeout=60,
            what="the trigger to read the initial space's pool while registration is held",
        )
    finally:
        control.set_faults({"readonly_spaces": [READONLY_SPACE_ID]})  # let the tentacles register
    state = wait_run_finished(standalone, run_id)
    return RunResult(run_id, state, api.task_instances(SHARE_DAG, run_id), deferred, reads)


def test_the_package_parses_in_the_dag_processor_without_import_errors(standalone):
    assert standalone.api.import_errors() == []


def test_a_read_only_space_fails_the_run(failed_run):
    assert failed_run.state == "failed"
    assert by_task(failed_run.task_instances, "summarize")[""]["state"] == "failed"


def test_fleet_tasks_are_named_by_cloud_and_succeed(failed_run):
    for task_id in ("terraform_apply", "wait_for_workers"):
        assert {label: ti["state"] for label, ti in by_task(failed_run.task_instances, task_id).items()} == {
            "local": "success"
        }, task_id


def test_share_tasks_are_named_by_space(failed_run):
    assert sorted(by_task(failed_run.task_instances, "share_to_space")) == SPACES


def test_the_read_only_space_fails_alone(failed_run):
    shares = by_task(failed_run.task_instances, "share_to_space")
    assert {label: ti["state"] for label, ti in shares.items()} == {
        label: "failed" if label == READONLY_SPACE else "success" for label in SPACES
    }


def test_a_forbidden_write_is_not_retried(failed_run):
    failing = by_task(failed_run.task_instances, "share_to_space")[READONLY_SPACE]
    assert (failing["state"], failing["try_number"]) == ("failed", 1)


def test_summarize_fails_without_retrying_when_a_space_failed(failed_run):
    summary = by_task(failed_run.task_instances, "summarize")[""]
    assert (summary["state"], summary["try_number"]) == ("failed", 1)


def test_the_sensor_waited_in_the_triggerer(failed_run, standalone):
    trigger = failed_run.deferred_sensor["trigger"]
    assert trigger["classpath"] == TRIGGER_CLASSPATH
    assert trigger["triggerer_id"] in {job["id"] for job in standalone.api.jobs("TriggererJob")}
    assert failed_run.pool_reads_while_held >= 2  # the sensor's one poke, then the trigger's polling
    sensor = by_task(failed_run.task_instances, "wait_for_workers")["local"]
    assert (sensor["state"], sensor["try_number"]) == ("success", 1)  # resumed by the trigger's event, same try


def test_clearing_only_the_failed_index_and_summarize_makes_the_run_succeed(failed_run, standalone, emulator_process):
    control = emulator_process.control
    control.clear_faults()
    index = by_task(failed_run.task_instances, "share_to_space")[READONLY_SPACE]["map_index"]

    cleared = standalone.api.clear_task_instances(
        SHARE_DAG,
        {
            "dag_run_id": failed_run.run_id,
            "task_ids": [["share_to_space", index], "summarize"],
            "only_failed": True,
            "dry_run": False,
        },
    )

    assert sorted((ti["task_id"], ti["map_index"]) for ti in cleared) == [("share_to_space", index), ("summarize", -1)]
    assert wait_run_finished(standalone, failed_run.run_id) == "success"
    after = standalone.api.task_instances(SHARE_DAG, failed_run.run_id)
    before = {label: ti["try_number"] for label, ti in by_task(failed_run.task_instances, "share_to_space").items()}
    tries = {label: ti["try_number"] for label, ti in by_task(after, "share_to_space").items()}
    assert tries == {label: n + 1 if label == READONLY_SPACE else n for label, n in before.items()}  # it alone re-ran
    members = space_pool_members(control.state())
    fleet = thumbprints(members["Space 001"])
    assert len(fleet) == CONF["instance_count"]["local"]
    assert {space: thumbprints(records) for space, records in members.items()} == {space: fleet for space in SPACES}


def task_processes(ti_id: str) -> list[int]:
    """Pids of the process running one task instance (its title is ``airflow worker -- <ti id>``)."""
    title = f"airflow worker -- {ti_id}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "cmdline").read_bytes().startswith(title):
                    pids.append(int(proc.name))
    return pids


def test_a_share_task_killed_mid_way_is_retried_to_the_exact_end_state(failed_run, standalone, emulator_process):
    control = emulator_process.control
    state = control.state()
    target_id = next(s["Id"] for s in state["spaces"] if s["Name"] == "Space 004")
    headers = {"X-Octopus-ApiKey": emulator_process.api_key}
    for worker in [w for w in state["workers"] if w["SpaceId"] == target_id]:  # give Space 004 writes to do
        requests.delete(f"{emulator_process.url}/api/{target_id}/workers/{worker['Id']}", headers=headers, timeout=10)
    control.clear_requests()
    control.set_faults({"latency_ms": 1500})  # slow enough to kill the task between its read and its writes
    api = standalone.api
    run_id = api.trigger(SHARE_DAG, CONF)

    def policy_read_done() -> bool:
        return any(
            r["method"] == "GET" and r["path"].startswith(f"/api/{target_id}/machinepolicies")
            for r in control.requests()
        )

    try:
        standalone.wait(policy_read_done, timeout=180, interval=0.2, what="Space 004's share to look up its policy")
        # A running index has no rendered label yet (the task sets it): find it by the first run's map index.
        index = by_task(failed_run.task_instances, "share_to_space")["Space 004"]["map_index"]
        tis = api.task_instances(SHARE_DAG, run_id)
        ti = next(t for t in tis if t["task_id"] == "share_to_space" and t["map_index"] == index)
        pids = task_processes(ti["id"])
        assert pids, f"no process titled 'airflow worker -- {ti['id']}' (state {ti['state']})"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # its POSTs are in flight: the server may or may not apply them
    finally:
        control.clear_faults()

    assert wait_run_finished(standalone, run_id) == "success"
    killed = by_task(api.task_instances(SHARE_DAG, run_id), "share_to_space")["Space 004"]
    assert (killed["state"], killed["try_number"]) == ("success", 2)
    after = control.state()
    members = space_pool_members(after)
    fleet = thumbprints(members["Space 001"])
    assert {space: thumbprints(records) for space, records in members.items()} == {space: fleet for space in SPACES}
    assert duplicate_records(after) == []


# --------------------------------------------------------------------------- runs of one deployment never overlap
# (issue 9, point 6). These run last: the retire test tears the module's fleet down.

RETIRE_DAG = "retire_octopus_workers"
# Slow Octopus: every request of the share run takes this long, so it is surely still running when the other
# run starts. Nothing below depends on the figure beyond that; every wait is a bounded poll of task states.
SLOW = {"latency_ms": 1000}


def utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def wait_task_state(airflow, dag_id, run_id, task_id, states, *, timeout=180) -> tuple[dict[str, Any], datetime]:
    """Poll until ``task_id`` (unmapped) is in one of ``states``; return it and when it was seen so."""

    def reached() -> dict[str, Any] | None:
        ti = by_task(airflow.api.task_instances(dag_id, run_id), task_id).get("")
        if ti and ti["state"] in TERMINAL - set(states):  # e.g. a claim that did not wait: fail now, not at timeout
            raise AssertionError(f"{dag_id}/{run_id}.{task_id} ended {ti['state']}, never {sorted(states)}")
        return ti if ti and ti["state"] in states else None

    ti = airflow.wait(reached, timeout=timeout, interval=0.5, what=f"{dag_id}/{run_id}.{task_id} in {sorted(states)}")
    return ti, datetime.now(timezone.utc)


def wait_finished(airflow, dag_id, run_id, timeout=300) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = airflow.api.dag_run(dag_id, run_id)
        return run if run["state"] in TERMINAL else None

    return airflow.wait(finished, timeout=timeout, interval=1, what=f"run {run_id} of {dag_id} to finish")


def assert_waited_for(airflow, dag_id, run_id, seen_waiting: datetime, holder: dict[str, Any]) -> None:
    """``run_id``'s claim waited while ``holder`` ran, and its first write-capable task started only after it."""
    holder_end = utc(holder["end_date"])
    assert seen_waiting < holder_end, f"{run_id}'s claim was seen waiting only after {holder['dag_run_id']} ended"
    tis = airflow.api.task_instances(dag_id, run_id)
    claim, spaces = by_task(tis, "claim_deployment")[""], by_task(tis, "get_spaces")[""]
    assert claim["state"] == "success"
    assert utc(claim["end_date"]) >= holder_end
    assert utc(spaces["start_date"]) >= holder_end, "discovery (and so every write) began before the holder ended"


def test_a_backfill_beside_a_running_share_run_waits_for_it(failed_run, standalone, emulator_process):
    control = emulator_process.control
    control.set_faults(SLOW)
    api = standalone.api
    try:
        first = api.trigger(SHARE_DAG, CONF)
        wait_task_state(standalone, SHARE_DAG, first, "claim_deployment", {"success"})
        # Airflow counts max_active_runs per (DAG, backfill): without the lease this run would overlap the first.
        before = {r["dag_run_id"] for r in api.dag_runs(SHARE_DAG)}
        api.backfill(SHARE_DAG, "2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z", CONF)
        backfill_run = standalone.wait(
            lambda: next((r["dag_run_id"] for r in api.dag_runs(SHARE_DAG) if r["dag_run_id"] not in before), None),
            timeout=60,
            what="the backfill's run to be created",
        )
        _, seen_waiting = wait_task_state(
            standalone, SHARE_DAG, backfill_run, "claim_deployment", {"up_for_reschedule"}
        )
        holder = wait_finished(standalone, SHARE_DAG, first)
    finally:
        control.clear_faults()
    assert api.dag_run(SHARE_DAG, backfill_run)["run_type"] == "backfill"
    assert holder["state"] == "success"
    assert wait_finished(standalone, SHARE_DAG, backfill_run)["state"] == "success"
    assert_waited_for(standalone, SHARE_DAG, backfill_run, seen_waiting, holder)
    members = space_pool_members(control.state())
    fleet = thumbprints(members["Space 001"])
    assert {space: thumbprints(records) for space, records in members.items()} == {space: fleet for space in SPACES}


def test_a_cleared_share_task_of_an_older_run_refuses_to_replay_its_fleet(failed_run, standalone, emulator_process):
    """Later runs registered newer fleet generations; clearing the first run's share of a space writes nothing."""
    control = emulator_process.control
    control.clear_faults()
    api = standalone.api
    space = "Space 002"
    ti = by_task(api.task_instances(SHARE_DAG, failed_run.run_id), "share_to_space")[space]
    control.clear_requests()

    api.clear_task_instances(
        SHARE_DAG,
        {
            "dag_run_id": failed_run.run_id,
            "task_ids": [["share_to_space", ti["map_index"]]],
            "only_failed": False,
            "include_downstream": False,
            "dry_run": False,
        },
    )

    def refused() -> dict[str, Any] | None:
        again = by_task(api.task_instances(SHARE_DAG, failed_run.run_id), "share_to_space")[space]
        if again["try_number"] > ti["try_number"] and again["state"] == "success":
            raise AssertionError("the older run's share ran to success: it replayed its fleet")
        return again if again["try_number"] > ti["try_number"] and again["state"] == "failed" else None

    again = standalone.wait(refused, timeout=180, interval=1, what=f"the cleared share of {space} to be refused")
    assert again["try_number"] == ti["try_number"] + 1  # refused at once: not retried
    writes = [r for r in control.requests() if r["method"] in ("POST", "PUT", "DELETE")]
    assert writes == []
    log = api.call(
        "GET",
        f"dags/{SHARE_DAG}/dagRuns/{failed_run.run_id}/taskInstances/share_to_space/logs/{again['try_number']}",
        params={"map_index": ti["map_index"], "full_content": "true"},
    )
    text = str(log)
    # A later run claimed the deployment since: the older run's task refuses before its first write.
    assert "was claimed by a newer run" in text and "writes nothing" in text


def test_a_retire_triggered_mid_share_waits_for_the_share_to_finish(failed_run, standalone, emulator_process):
    control = emulator_process.control
    api = standalone.api
    standalone.wait(
        lambda: api.call("GET", f"dags/{RETIRE_DAG}", ok=(200, 404)).get("dag_id"),
        timeout=120,
        what=f"the dag-processor to register {RETIRE_DAG}",
    )
    api.unpause(RETIRE_DAG)
    control.set_faults(SLOW)
    try:
        share = api.trigger(SHARE_DAG, CONF)
        wait_task_state(standalone, SHARE_DAG, share, "claim_deployment", {"success"})
        retire = api.trigger(RETIRE_DAG, {"clouds": ["local"], "name_prefix": CONF["name_prefix"]})
        _, seen_waiting = wait_task_state(standalone, RETIRE_DAG, retire, "claim_deployment", {"up_for_reschedule"})
        holder = wait_finished(standalone, SHARE_DAG, share)
    finally:
        control.clear_faults()
    assert holder["state"] == "success", "the share was disturbed by the retire"
    assert wait_finished(standalone, RETIRE_DAG, retire)["state"] == "success"
    assert_waited_for(standalone, RETIRE_DAG, retire, seen_waiting, holder)
    fleet_prefix = f"{CONF['name_prefix']}-local-"
    assert [w["Name"] for w in control.state()["workers"] if w["Name"].startswith(fleet_prefix)] == []
