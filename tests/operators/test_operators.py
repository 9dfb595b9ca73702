"""TerraformFleetOperator: the DAG fills exactly the modules' input contract, and never with a secret."""

from __future__ import annotations

import json

import pytest

from octopus.operators import TerraformFleetOperator, terraform_env
from tests.conftest import ROOT

PLAN = {
    "cloud": "aws",
    "server_url": "https://octopus.example.com",
    "initial_space": {"id": "Spaces-1", "name": "Default", "pool_id": "WorkerPools-1"},
    "pool_name": "AWS Worker Pool TF",
    "instance_count": 2,
    "name_prefix": "octopus-shared-aws",
}


def test_env_sets_exactly_the_contract_variables():
    contract = json.loads((ROOT / "include/terraform/contract.json").read_text())
    env = terraform_env(PLAN, "apply")
    assert {k.removeprefix("TF_VAR_") for k in env if k.startswith("TF_VAR_")} == set(contract["variables"])
    assert env["TF_VAR_instance_count"] == "2" and env["TF_VAR_octopus_space_name"] == "Default"


def test_local_cloud_also_gets_its_interpreter_and_import_path():
    env = terraform_env({**PLAN, "cloud": "local"}, "apply")
    assert env["TF_VAR_python_executable"]
    assert str(ROOT) in env["PYTHONPATH"].split(":")


@pytest.mark.parametrize(
    ("destroy", "dry_run", "action"),
    [(False, False, "apply"), (False, "True", "plan"), (True, False, "destroy"), (True, "true", "plan-destroy")],
)
def test_action(destroy, dry_run, action):
    op = TerraformFleetOperator(task_id="t", fleet_plan=PLAN, destroy=destroy, dry_run=dry_run)
    assert op.action == action


def test_key_is_added_only_at_execution_and_only_for_local(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTOPUS_DEFAULT",
        json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9", "password": "API-SECRETSECRETSECRET00"}),
    )
    seen = {}

    def fake_execute(self, context):
        seen[self.fleet_plan["cloud"]] = dict(self.env)
        return "{}"

    monkeypatch.setattr("airflow.providers.standard.operators.bash.BashOperator.execute", fake_execute)
    for cloud in ("aws", "local"):
        op = TerraformFleetOperator(task_id="t", fleet_plan={**PLAN, "cloud": cloud})
        op.execute({})
        assert "OCTOPUS_API_KEY" not in (op.env or {}), "the key must not outlive the execution"
    assert "OCTOPUS_API_KEY" not in seen["aws"]
    assert seen["local"]["OCTOPUS_API_KEY"] == "API-SECRETSECRETSECRET00"
