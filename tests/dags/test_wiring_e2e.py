"""Upstream values reach tasks through the DAG's wiring: a DAG copy with its tasks renamed still works end to end."""

from __future__ import annotations

import re

import pytest

from octopus_emulator.scenario import make_scenario
from tests.conftest import ROOT
from tests.dags.harness import LOCAL_POOL, local_conf, run_dag, space_pool_members, task_states

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]


def renamed_copy(tmp_path, monkeypatch, source: str, dag_id: str, renames: dict[str, str]):
    """Load ``dags/<source>`` with its dag id and the given task ids renamed (a user's fork of the DAG), from a
    DAGs folder of its own (``dag.test()`` runs only DAGs of a configured bundle)."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    text = (ROOT / "dags" / source).read_text()
    text = text.replace(f'dag_id="{source.removesuffix(".py")}"', f'dag_id="{dag_id}"')
    for old, new in renames.items():
        changed = re.sub(
            rf'task_id="{old}"|(?<![.\w]){old}\(|(?<![.\w]){old}\.(partial|expand)\(',
            lambda m, old=old, new=new: m[0].replace(old, new),
            text,
        )
        assert changed != text, f"{old} is not a task of {source}: the test no longer renames anything"
        text = changed
    folder = tmp_path / "renamed"
    folder.mkdir()
    (folder / f"{dag_id}.py").write_text(text)
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))  # the dags-folder bundle's path
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]


def test_a_retire_with_every_upstream_task_renamed_still_reports_drain_results_and_destroy(
    local_cloud, emulator, tmp_path, monkeypatch
):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states

    dag = renamed_copy(
        tmp_path,
        monkeypatch,
        "retire_octopus_workers.py",
        "retire_renamed",
        {
            "wait_for_drain": "drain_all_copies",
            "terraform_destroy": "destroy_fleet",
            "retire_copies": "remove_copies",
            "retire_initial": "remove_initial",
        },
    )
    for task in dag.tasks:
        if hasattr(task, "partial_kwargs"):
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    dag_run = dag.test(run_conf={"clouds": ["local"], "name_prefix": "t"})
    states = task_states(dag_run)

    assert str(dag_run.state) == "success", states
    assert set(states["remove_copies"]) == {"Space 002", "Space 003"}
    summary = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "summarize").xcom_pull(
        task_ids="summarize"
    )
    assert summary["destroyed"] == ["local"] and summary["not_destroyed"] == []
    assert summary["drain"]["records"] == 6  # 2 workers x 3 spaces, read from the renamed drain sensor
    assert summary["totals"]["pruned"] == 6  # every space result, read from the renamed retire phases
    assert space_pool_members(emulator.control.state()) == {"Space 001": [], "Space 002": [], "Space 003": []}


def test_a_share_with_every_upstream_task_renamed_still_drains_reports_and_starts_triggers_right(
    local_cloud, emulator, tmp_path, monkeypatch
):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": 3}))
    assert str(dag_run.state) == "success", states

    renames = {
        "spaces_to_share": "spaces_for_the_share",
        "wait_for_workers": "await_registration",
        "drain_removed": "drain_leaving",
        "terraform_apply": "build_fleet",
        "drain_outdated": "drain_old_build",
        "remove_outdated": "remove_old_build",
    }
    dag = renamed_copy(tmp_path, monkeypatch, "share_octopus_workers.py", "share_renamed", renames)
    trigger_args = dag.get_task("share_to_space").partial_kwargs["start_trigger_args"]
    assert trigger_args.trigger_kwargs["upstream"] == {"spaces": "spaces_for_the_share", "fleets": "await_registration"}
    for task in dag.tasks:
        if hasattr(task, "partial_kwargs"):
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    dag_run = dag.test(run_conf=local_conf(instance_count={"local": 2}))
    states = task_states(dag_run)

    assert str(dag_run.state) == "success", states
    summary = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "summarize").xcom_pull(
        task_ids="summarize"
    )
    assert summary["drain"]["local"]["records"] == 3  # t-local-3 in 3 spaces, read from the renamed drain
    assert summary["totals"]["present"] == 4  # the two that stay, in the two copy spaces
    members = space_pool_members(emulator.control.state())
    assert sorted(w["Name"] for w in members["Space 002"]) == ["t-local-1", "t-local-2"]
