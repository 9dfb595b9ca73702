"""TerraformFleetOperator: the DAG fills exactly the modules' input contract, and never with a secret."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from octopus.operators import (
    TerraformFleetOperator,
    check_state_is_shared,
    deployment_prefix,
    filtered_environ,
    parse_result,
    terraform_env,
)
from tests.conftest import ROOT
from tests.operators.support import leased_store, task_context

PLAN = {
    "cloud": "aws",
    "server_url": "https://octopus.example.com",
    "initial_space": {"id": "Spaces-1", "name": "Default", "pool_id": "WorkerPools-1"},
    "pool_name": "AWS Worker Pool TF",
    "instance_count": 2,
    "name_prefix": "octopus-shared-aws",
}
KEY = "API-SECRETSECRETSECRET00"
CLOUDS = ("aws", "azure", "gcp", "local")
#: Each cloud's own credential variable, set in the worker's environment for every test of the env.
CLOUD_CREDENTIALS = {
    "aws": "AWS_SECRET_ACCESS_KEY",
    "azure": "ARM_CLIENT_SECRET",
    "gcp": "GOOGLE_CREDENTIALS",
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
    ("plan", "prefix"),
    [
        ({"prefix": "octopus-shared"}, "octopus-shared"),
        ({}, "octopus-shared"),  # derived: name_prefix without "-aws"
        ({"name_prefix": "team-aws-aws"}, "team-aws"),
        ({"prefix": "team", "name_prefix": "team-aws"}, "team"),
    ],
)
def test_deployment_prefix(plan, prefix):
    assert deployment_prefix({**PLAN, **plan}) == prefix
    assert terraform_env({**PLAN, **plan}, "apply")["DEPLOYMENT_PREFIX"] == prefix


def test_deployment_prefix_that_cannot_name_a_folder_is_refused():
    with pytest.raises(AirflowFailException, match="deployment prefix '../x'"):
        deployment_prefix({**PLAN, "prefix": "../x"})


@pytest.mark.parametrize(
    ("destroy", "dry_run", "action"),
    [(False, False, "apply"), (False, "True", "plan"), (True, False, "destroy"), (True, "true", "plan-destroy")],
)
def test_action(destroy, dry_run, action):
    op = TerraformFleetOperator(task_id="t", fleet_plan=PLAN, destroy=destroy, dry_run=dry_run)
    assert op.action == action


def test_result_is_a_dict_and_a_bad_last_line_is_an_error():
    line = '{"cloud":"aws","action":"apply","changes":{"create":2},"outputs":{"worker_names":["a"]}}'
    assert parse_result(line) == {
        "cloud": "aws",
        "action": "apply",
        "changes": {"create": 2},
        "outputs": {"worker_names": ["a"]},
    }
    assert TerraformFleetOperator(task_id="t", fleet_plan=PLAN).output_processor(line)["changes"] == {"create": 2}
    with pytest.raises(AirflowException, match="did not end with its JSON result line"):
        parse_result("Apply complete!")
    with pytest.raises(AirflowException, match="lacks cloud/action/changes/outputs"):
        parse_result('{"cloud": "aws"}')


# ----------------------------------------------------------------------------------------------- environment
def shim_terraform(bin_dir: Path, dump: Path) -> None:
    """A ``terraform`` on PATH that writes the environment it got to ``dump`` (NUL-separated) and fails."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "terraform"
    shim.write_text(f'#!/usr/bin/env bash\nenv -0 > "{dump}"\nexit 3\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)


def read_dump(dump: Path) -> dict[str, str]:
    entries = [e for e in dump.read_bytes().split(b"\0") if e]
    return dict(e.decode().split("=", 1) for e in entries)


@pytest.fixture
def worker_env(monkeypatch, tmp_path):
    """A worker's environment with every kind of secret an Airflow worker holds, and a terraform shim."""
    dump = tmp_path / "env.dump"
    shim_terraform(tmp_path / "bin", dump)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    conn = {"conn_type": "http", "host": "http://127.0.0.1:9", "password": KEY}
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_VAR_DEPLOY_TOKEN", "var-secret-0123456789")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "fernet-secret-0123456789")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET", "db-secret-0123456789")
    monkeypatch.setenv("OCTOPUS_API_KEY", KEY)  # exported by someone on the worker: still never inherited
    monkeypatch.setenv("TF_WORKSPACE", "someone-elses")
    monkeypatch.setenv("TF_VAR_subnet_ids", '["subnet-1"]')
    monkeypatch.setenv("OCTOPUS_WORKERS_STATE_DIR", str(tmp_path / "state"))
    for cloud, name in CLOUD_CREDENTIALS.items():
        monkeypatch.setenv(name, f"{cloud}-credential")
    return dump


@pytest.mark.parametrize("cloud", CLOUDS)
def test_terraform_gets_no_airflow_secret_and_the_key_only_for_local(worker_env, cloud):
    plan, context = {**PLAN, "cloud": cloud}, task_context()
    op = TerraformFleetOperator(task_id="t", fleet_plan=plan, ledger_store=leased_store(plan, context))
    with pytest.raises(AirflowException, match="non-zero exit code 3"):
        op.execute(context)
    env = read_dump(worker_env)

    assert not [n for n in env if n.startswith("AIRFLOW") and not n.startswith("AIRFLOW_CTX_")]
    leaked = {"var-secret-0123456789", "fernet-secret-0123456789", "db-secret-0123456789"}
    assert not [n for n, v in env.items() if any(s in v for s in leaked)]
    holding_key = sorted(n for n, v in env.items() if KEY in v)
    assert holding_key == (["OCTOPUS_API_KEY"] if cloud == "local" else [])
    # the cloud's own credentials, and no other cloud's
    assert sorted(n for n in CLOUD_CREDENTIALS.values() if n in env) == (
        [CLOUD_CREDENTIALS[cloud]] if cloud in CLOUD_CREDENTIALS else []
    )
    assert env["TF_VAR_subnet_ids"] == '["subnet-1"]' and "TF_WORKSPACE" not in env
    assert env["TF_VAR_name_prefix"] == PLAN["name_prefix"] and env["CLOUD"] == cloud
    assert "OCTOPUS_API_KEY" not in (op.env or {}), "the key is in no rendered field"


def test_backend_settings_reach_terraform():
    environ = {"OCTOPUS_TF_BACKEND_AZURE": "s3", "AWS_PROFILE": "state", "PGPASSWORD": "x", "HOME": "/h"}
    assert filtered_environ("azure", environ) == {
        "OCTOPUS_TF_BACKEND_AZURE": "s3",
        "AWS_PROFILE": "state",
        "HOME": "/h",
    }
    environ = {"OCTOPUS_TF_BACKEND_LOCAL": "pg", "PGPASSWORD": "x", "PG_CONN_STR": "y", "AIRFLOW_VAR_X": "z"}
    assert set(filtered_environ("local", environ)) == {"OCTOPUS_TF_BACKEND_LOCAL", "PGPASSWORD", "PG_CONN_STR"}


def test_explicit_passthrough_never_lets_a_blocked_name_through():
    environ = {
        "OCTOPUS_WORKERS_TF_ENV_PASSTHROUGH": "VAULT_*,CUSTOM,AIRFLOW_CONN_OCTOPUS_DEFAULT,OCTOPUS_API_KEY",
        "VAULT_ADDR": "a",
        "CUSTOM": "b",
        "OTHER": "c",
        "AIRFLOW_CONN_OCTOPUS_DEFAULT": "d",
        "OCTOPUS_API_KEY": "e",
    }
    assert set(filtered_environ("aws", environ)) == {"OCTOPUS_WORKERS_TF_ENV_PASSTHROUGH", "VAULT_ADDR", "CUSTOM"}


# ------------------------------------------------------------------------------------ local state, many workers
@pytest.mark.parametrize(
    ("executor", "extra", "refused"),
    [
        ("CeleryExecutor", {}, True),
        ("airflow.providers.celery.executors.celery_executor.CeleryExecutor", {}, True),
        ("LocalExecutor,KubernetesExecutor", {}, True),
        ("LocalExecutor", {}, False),
        ("SequentialExecutor", {}, False),
        ("CeleryExecutor", {"OCTOPUS_WORKERS_SHARED_STATE_DIR": "true"}, False),
        ("CeleryExecutor", {"OCTOPUS_TF_BACKEND_LOCAL": "pg"}, False),
    ],
)
def test_local_state_on_a_multi_worker_executor_is_refused_before_init(
    worker_env, monkeypatch, executor, extra, refused
):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    plan, context = {**PLAN, "cloud": "local"}, task_context()
    op = TerraformFleetOperator(task_id="t", fleet_plan=plan, ledger_store=leased_store(plan, context))
    if refused:
        with pytest.raises(AirflowFailException) as caught:
            op.execute(context)
        message = str(caught.value)
        for setting in (
            "OCTOPUS_TF_BACKEND_LOCAL",
            "OCTOPUS_TF_BACKEND_CONFIG_LOCAL",
            "OCTOPUS_WORKERS_SHARED_STATE_DIR",
        ):
            assert setting in message
        assert not worker_env.exists(), "terraform ran although the state is not shared"
    else:
        with pytest.raises(AirflowException, match="non-zero exit code 3"):
            op.execute(context)
        assert worker_env.exists()


def test_shared_state_check_reads_only_airflow_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    check_state_is_shared("aws", {"OCTOPUS_TF_BACKEND_AWS": "s3"})
    with pytest.raises(AirflowFailException, match="OCTOPUS_TF_BACKEND_AWS"):
        check_state_is_shared("aws", {})


def test_a_task_of_a_run_that_does_not_hold_the_deployment_never_runs_terraform(worker_env, monkeypatch):
    from octopus import tasks

    monkeypatch.setattr(tasks, "run_state", lambda dag_id, run_id: "running")
    plan, holder = {**PLAN, "cloud": "local"}, task_context(run_id="scheduled__2026-12-07")
    store = leased_store(plan, holder)
    op = TerraformFleetOperator(task_id="t", fleet_plan=plan, ledger_store=store)
    with pytest.raises(AirflowFailException, match="held by run 'scheduled__2026-12-07'"):
        op.execute(task_context(run_id="manual__2026-12-06"))
    assert not worker_env.exists(), "terraform ran without the deployment's lease"
