"""share_to_space started and ended in the triggerer (``start_from_trigger``) under a real scheduler, via REST v2.

One run (module fixture ``first_run``) over 5 spaces: Space 003 answers 403 to writes (an error no retry fixes:
its index resumes on a worker that fails it at once), Space 004 answers 503 to its first read (a retryable
error: its index fails its first try in the triggerer and succeeds on Airflow's retry, again in the triggerer);
every other index succeeds in the triggerer. Then only Space 003's index (and ``summarize``) is cleared: it
re-runs alone in the triggerer and the run ends in success.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, local_conf
from tests.scheduler.standalone import SHARE_DAG, AirflowStandalone

pytestmark = [pytest.mark.scheduler]

TERMINAL = {"success", "failed"}
N_SPACES = 5
READONLY = (2, "Spaces-3", "Space 003")  # map index, id, name
FLAKY = (3, "Spaces-4", "Space 004")
CONF = local_conf(instance_count={"local": 1}, registration_timeout_minutes=3, name_prefix="trig")


@dataclass
class Run:
    run_id: str
    state: str
    shares: dict[int, dict[str, Any]]  # map index → task instance
    requests: list[dict[str, Any]]


def wait_finished(airflow: AirflowStandalone, run_id: str, timeout: float = 300) -> str:
    def finished() -> str | None:
        state = airflow.api.dag_run(SHARE_DAG, run_id)["state"]
        return state if state in TERMINAL else None

    return airflow.wait(finished, timeout=timeout, interval=1, what=f"run {run_id} to finish")


def shares_of(airflow: AirflowStandalone, run_id: str) -> dict[int, dict[str, Any]]:
    tis = airflow.api.task_instances(SHARE_DAG, run_id)
    return {ti["map_index"]: ti for ti in tis if ti["task_id"] == "share_to_space"}


def log_events(airflow: AirflowStandalone, run_id: str, map_index: int, try_number: int) -> list[str]:
    body = airflow.api.call(
        "GET",
        f"dags/{SHARE_DAG}/dagRuns/{run_id}/taskInstances/share_to_space/logs/{try_number}",
        params={"map_index": map_index, "full_content": "true"},
    )
    return [str(e.get("event", "")) for e in body.get("content") or [] if isinstance(e, dict)]


def space_result(airflow: AirflowStandalone, run_id: str, map_index: int) -> Any:
    entry = airflow.api.call(
        "GET",
        f"dags/{SHARE_DAG}/dagRuns/{run_id}/taskInstances/share_to_space/xcomEntries/space_result",
        params={"map_index": map_index},
    )
    return entry["value"]


def ran_on_a_worker(events: list[str]) -> bool:
    """The task runner's own log groups appear only when a worker process ran the task."""
    return any(e.startswith("::group::Pre Execute") for e in events)


@pytest.fixture(scope="module")
def first_run(triggerer_standalone, emulator_process) -> Run:
    control = emulator_process.control
    control.reset(make_scenario(N_SPACES, [LOCAL_POOL]))
    control.set_faults(
        {
            "readonly_spaces": [READONLY[1]],
            "fail_next": [{"count": 1, "status": 503, "method": "GET", "path_regex": f"^/api/{FLAKY[1]}/workers$"}],
        }
    )
    control.clear_requests()
    run_id = triggerer_standalone.api.trigger(SHARE_DAG, CONF)
    state = wait_finished(triggerer_standalone, run_id)
    return Run(run_id, state, shares_of(triggerer_standalone, run_id), control.requests())


def test_one_unfixable_space_fails_only_its_own_index(first_run):
    assert first_run.state == "failed"  # summarize's verdict: a space failed
    states = {i: ti["state"] for i, ti in first_run.shares.items()}
    assert states == {0: "success", 1: "success", 2: "failed", 3: "success", 4: "success"}
    # No retry of an error no retry fixes (retries=3 on the task).
    assert first_run.shares[READONLY[0]]["try_number"] == 1


def test_shares_run_in_the_triggerer_and_log_to_the_task_log(triggerer_standalone, first_run):
    events = log_events(triggerer_standalone, first_run.run_id, 1, 1)
    assert not ran_on_a_worker(events), events[:20]
    assert any("Space 002 / local:" in e for e in events), events
    assert any("1 Octopus requests" in e or "Octopus requests" in e for e in events)
    result = space_result(triggerer_standalone, first_run.run_id, 1)
    assert isinstance(result, dict), f"space_result must arrive as the result, not {type(result).__name__}"
    assert result["clouds"]["local"]["added"] == 1


def test_a_retryable_error_is_retried_by_airflow_in_the_triggerer(triggerer_standalone, first_run):
    ti = first_run.shares[FLAKY[0]]
    assert (ti["state"], ti["try_number"]) == ("success", 2)
    first_try = log_events(triggerer_standalone, first_run.run_id, FLAKY[0], 1)
    assert any("503" in e and FLAKY[2] in e for e in first_try), first_try
    assert not ran_on_a_worker(first_try) and not ran_on_a_worker(
        log_events(triggerer_standalone, first_run.run_id, FLAKY[0], 2)
    )


def test_an_unfixable_error_fails_on_a_worker_with_the_space_label(triggerer_standalone, first_run):
    ti = first_run.shares[READONLY[0]]
    events = log_events(triggerer_standalone, first_run.run_id, READONLY[0], 1)
    assert any("403" in e or "permission" in e.lower() for e in events), events
    assert ran_on_a_worker(events)  # resumed there only to fail without retries
    assert ti["rendered_map_index"] == READONLY[2]  # rendered by the worker
    assert space_result(triggerer_standalone, first_run.run_id, READONLY[0])["clouds"]["local"]["failed"] == 1


def test_clearing_one_index_reruns_only_that_space_in_the_triggerer(triggerer_standalone, emulator_process, first_run):
    control = emulator_process.control
    control.clear_faults()
    control.clear_requests()
    triggerer_standalone.api.clear_task_instances(
        SHARE_DAG,
        {
            "dag_run_id": first_run.run_id,
            "task_ids": [["share_to_space", READONLY[0]], "summarize"],
            "dry_run": False,
            "reset_dag_runs": True,
        },
    )
    assert wait_finished(triggerer_standalone, first_run.run_id) == "success"
    ti = shares_of(triggerer_standalone, first_run.run_id)[READONLY[0]]
    assert (ti["state"], ti["try_number"]) == ("success", 2)
    assert not ran_on_a_worker(log_events(triggerer_standalone, first_run.run_id, READONLY[0], 2))
    spaces_touched = Counter(
        e["path"].split("/")[2] for e in control.requests() if e["path"].startswith("/api/Spaces-")
    )
    assert set(spaces_touched) == {READONLY[1]}, spaces_touched
