"""The access policy end to end: a denied space gets no copy, and ours there are withdrawn without killing a step."""

from __future__ import annotations

import pytest

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, local_conf, run_dag, space_pool_members, xcom_value

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]


def ours(state, space):
    return sorted((w["Name"], w["IsDisabled"]) for w in space_pool_members(state)[space] if w["Name"].startswith("t-"))


def records(state):
    """What a write could change (health checks aside)."""
    return sorted(
        (w["Id"], w["SpaceId"], w["Name"], tuple(w["WorkerPoolIds"]), w["IsDisabled"]) for w in state["workers"]
    )


def test_a_denied_space_is_withdrawn_draining_the_copy_a_step_runs_on(local_cloud, emulator):
    control = emulator.control
    control.reset(make_scenario(3, [LOCAL_POOL]))
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    assert ours(control.state(), "Space 003") == [("t-local-1", False), ("t-local-2", False)]

    step = control.start_task(LOCAL_POOL, None, space="Space 003")  # runs until completed
    busy = step["worker_name"]
    dag_run, states = run_dag("share_octopus_workers", local_conf(denied_spaces=["Space 003"]))

    assert str(dag_run.state) == "success", states
    summary = xcom_value(dag_run, "summarize")
    row = next(r for r in summary["spaces"] if r["space_name"] == "Space 003")
    assert (row["clouds"]["local"]["pruned"], row["clouds"]["local"]["draining"]) == (1, 1)
    assert ours(control.state(), "Space 003") == [(busy, True)]  # disabled, still there: the step runs on
    assert ours(control.state(), "Space 002") == [("t-local-1", False), ("t-local-2", False)]
    assert control.task(step["id"])["state"] == "Executing"

    control.complete_task(step["id"])
    dag_run, states = run_dag("share_octopus_workers", local_conf(denied_spaces=["Space 003"]))

    assert str(dag_run.state) == "success", states
    assert ours(control.state(), "Space 003") == []
    counters = control.wait_no_running_tasks(timeout=30)
    assert (counters["killed"], counters["failed_no_worker"]) == (0, 0), counters


def test_denying_the_pinned_initial_space_fails_before_anything_changes(local_cloud, emulator):
    emulator.control.reset(make_scenario(2, [LOCAL_POOL]))
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states
    before = records(emulator.control.state())

    dag_run, states = run_dag("share_octopus_workers", local_conf(denied_spaces=["Space 001"]))

    assert str(dag_run.state) == "failed"
    assert states["get_spaces"] == {"": "failed"}
    assert set(states["terraform_apply"].values()) <= {"upstream_failed"}, states
    assert records(emulator.control.state()) == before
