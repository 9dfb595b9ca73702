"""The package picks the instance that leaves (issue 19), through the operator: a fleet plan's ``remove_instances``
reaches the module as TF_VAR_remove_instances, and the real local cloud removes exactly those, by name."""

from __future__ import annotations

import json
import shutil

import pytest

from octopus.operators import TerraformFleetOperator, filtered_environ, terraform_env
from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, configure_local_cloud, stop_local_tentacles
from tests.operators.support import leased_store, task_context

SCENARIO = make_scenario(1, [LOCAL_POOL])
PLAN = {
    "cloud": "aws",
    "server_url": "https://octopus.example.com",
    "initial_space": {"id": "Spaces-1", "name": "Default", "pool_id": "WorkerPools-1"},
    "pool_name": "AWS Worker Pool TF",
    "instance_count": 2,
    "name_prefix": "octopus-shared-aws",
}


def test_remove_instances_is_always_set_and_only_from_the_fleet_plan(monkeypatch):
    assert terraform_env(PLAN, "apply")["TF_VAR_remove_instances"] == "[]"
    named = terraform_env({**PLAN, "remove_instances": ["octopus-shared-aws-i-0abc"]}, "apply")
    assert json.loads(named["TF_VAR_remove_instances"]) == ["octopus-shared-aws-i-0abc"]
    # A stray value in the worker's environment passes the TF_ allow-list, but the plan's value always wins.
    monkeypatch.setenv("TF_VAR_remove_instances", '["octopus-shared-aws-i-0fff"]')
    op = TerraformFleetOperator(task_id="terraform_apply", fleet_plan=PLAN)
    env = {**filtered_environ("aws"), **(op.env or {}), **terraform_env(PLAN, op.action)}
    assert env["TF_VAR_remove_instances"] == "[]"


# ------------------------------------------------------------------------------- the real local cloud, by name
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


def run(emulator, count: int, remove: list[str] | None = None) -> dict:
    fleet_plan = {
        "cloud": "local",
        "prefix": "named",
        "name_prefix": "named-local",
        "server_url": emulator.url,
        "initial_space": {"id": "Spaces-1", "name": "Space 001", "pool_id": "WorkerPools-2"},
        "pool_name": LOCAL_POOL,
        "instance_count": count,
        **({"remove_instances": remove} if remove is not None else {}),
    }
    context = task_context()
    op = TerraformFleetOperator(
        task_id="terraform_apply", fleet_plan=fleet_plan, ledger_store=leased_store(fleet_plan, context)
    )
    return op.execute(context)


@pytest.fixture
def local_cloud(monkeypatch, tmp_path, emulator):
    runtime = configure_local_cloud(monkeypatch, tmp_path, emulator)
    try:
        yield runtime
    finally:
        stop_local_tentacles(runtime)


@needs_terraform
@pytest.mark.octopus_scenario(SCENARIO)
def test_a_scale_in_through_the_runner_removes_the_instance_the_package_named(local_cloud, emulator):
    first = run(emulator, 3)
    assert first["outputs"]["worker_names"] == ["named-local-1", "named-local-2", "named-local-3"]
    kept_ids = {i["name"]: i["id"] for i in first["outputs"]["instances"]}

    second = run(emulator, 2, ["named-local-2"])
    assert second["changes"] == {"delete": 1}
    assert second["removed"] == ["named-local-2"]
    assert second["outputs"]["instances"] == [
        {"name": n, "id": kept_ids[n]} for n in ("named-local-1", "named-local-3")
    ]
    assert sorted(p.name for p in local_cloud.iterdir()) == ["named-local-1", "named-local-3"]

    # The next run, which names nothing, keeps the fleet the package chose.
    third = run(emulator, 2)
    assert third["changes"] == {} and third["removed"] == []
    assert third["outputs"]["worker_names"] == ["named-local-1", "named-local-3"]


# ------------------------------------------------------------------ remove_outdated: names from the drain's XCom
def test_the_drain_result_names_what_the_apply_removes_and_nothing_else():
    drained = {"records": [{"name": "octopus-shared-aws-i-0abc"}], "instances": ["octopus-shared-aws-i-0abc"]}
    op = TerraformFleetOperator(task_id="remove_outdated", fleet_plan={**PLAN, "remove_instances": ["other"]},
                                remove_instances=drained)
    env = {**(op.env or {}), **terraform_env(op._plan(), op.action)}
    assert json.loads(env["TF_VAR_remove_instances"]) == ["octopus-shared-aws-i-0abc"]


def test_nothing_to_remove_skips_without_running_terraform(monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    monkeypatch.setenv("PATH", "/nonexistent")  # were Terraform or the runner started, they could not be found
    op = TerraformFleetOperator(task_id="remove_outdated", fleet_plan=PLAN, remove_instances={"instances": []})
    with pytest.raises(AirflowSkipException, match="nothing to remove; Terraform not run"):
        op.execute(task_context())
