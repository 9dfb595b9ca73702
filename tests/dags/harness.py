"""Helpers for running the DAGs end to end with ``dag.test()`` against the emulator and the local cloud."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from octopus_emulator.local_cloud import stop_tentacles
from tests.conftest import ROOT

LOCAL_POOL = "Local Worker Pool TF"


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]


def local_conf(**overrides: Any) -> dict[str, Any]:
    """Run conf for the local cloud with test-speed polling."""
    conf = {
        "clouds": ["local"],
        "instance_count": {"local": 2},
        "poll_interval_seconds": 1,
        "registration_timeout_minutes": 2,
        "name_prefix": "t",
    }
    conf.update(overrides)
    return conf


def run_dag(dag_id: str, conf: dict[str, Any], *, retries: int | None = 0, logical_date=None):
    """Run a DAG once with ``dag.test()`` and return ``(dag_run, {task_id: {label: state}})``.

    ``dag.test()`` waits out real retry delays, so tests run without task retries unless they ask for them.
    """
    dag = load_dag(dag_id)
    if retries is not None:
        for task in dag.tasks:
            if hasattr(task, "partial_kwargs"):
                task.partial_kwargs["retries"] = retries
            else:
                task.retries = retries
    kwargs = {"logical_date": logical_date} if logical_date is not None else {}
    dag_run = dag.test(run_conf=conf, **kwargs)
    return dag_run, task_states(dag_run)


def task_states(dag_run) -> dict[str, dict[str, str]]:
    states: dict[str, dict[str, str]] = {}
    for ti in dag_run.get_task_instances():
        label = ti.rendered_map_index or (str(ti.map_index) if ti.map_index >= 0 else "")
        states.setdefault(ti.task_id, {})[label] = str(ti.state)
    return states


def xcom_value(dag_run, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key, map_index=map_index)
            .one_or_none()
        )
        return None if row is None else json.loads(row.value) if isinstance(row.value, str) else row.value


def ledgers() -> dict[str, Any]:
    """Every deployment ledger (Variable ``octopus_workers.*``), by key."""
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(VariableModel).filter(VariableModel.key.like("octopus_workers.%")).all()
        return {row.key: json.loads(row.val) for row in rows}


def clear_ledgers() -> None:
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(VariableModel).filter(VariableModel.key.like("octopus_workers.%")).delete(
            synchronize_session=False
        )


def space_pool_members(state: dict[str, Any], pool_name: str = LOCAL_POOL) -> dict[str, list[dict[str, Any]]]:
    """From an emulator state dump: space name → worker records in that space's pool named ``pool_name``."""
    spaces = {s["Id"]: s["Name"] for s in state["spaces"]}
    pools = {p["Id"]: p for p in state["pools"] if p["Name"] == pool_name}
    members: dict[str, list[dict[str, Any]]] = {}
    for pool in pools.values():
        members.setdefault(spaces[pool["SpaceId"]], [])
    for worker in state["workers"]:
        for pool_id in worker["WorkerPoolIds"]:
            if pool_id in pools:
                members[spaces[pools[pool_id]["SpaceId"]]].append(worker)
    return members


def thumbprints(records: list[dict[str, Any]]) -> list[str]:
    return sorted(w["Endpoint"]["Thumbprint"] for w in records)


def duplicate_records(state: dict[str, Any]) -> list[tuple[str, str]]:
    """(space id, thumbprint) pairs held by more than one record: never allowed."""
    counts = Counter((w["SpaceId"], w["Endpoint"].get("Thumbprint")) for w in state["workers"])
    return [key for key, n in counts.items() if n > 1]


def configure_local_cloud(monkeypatch, tmp_path: Path, emulator, **extra: Any) -> Path:
    """Point ``octopus_default`` and the local cloud at ``emulator``; return the simulated VMs' runtime dir."""
    conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key, "extra": {"timeout": 30, **extra}}
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("OCTOPUS_WORKERS_STATE_DIR", str(tmp_path / "tf-state"))
    monkeypatch.setenv("TF_VAR_runtime_dir", str(runtime))
    monkeypatch.setenv("TF_VAR_server_comms_port", str(emulator.comms_port))
    monkeypatch.setenv("TF_VAR_boot_delay_seconds", "0")
    return runtime


def stop_local_tentacles(runtime_dir: Path) -> None:
    """Stop every simulated VM under ``runtime_dir`` (test teardown, whatever state Terraform is in)."""
    stop_tentacles(runtime_dir)


def terraform_local(
    action: str,
    *,
    server_url: str,
    space_name: str,
    count: int,
    name_prefix: str = "t-local",
    api_key: str | None = None,
) -> dict[str, Any]:
    """Run ``include/terraform-fleet.sh`` for the local cloud outside Airflow, with the DAG's inputs.

    For tests that rebuild or pre-build a fleet between DAG runs. Returns the script's JSON line.
    """
    from octopus.operators import include_dir, terraform_env

    plan = {
        "cloud": "local",
        "server_url": server_url,
        "initial_space": {"name": space_name},
        "pool_name": LOCAL_POOL,
        "instance_count": count,
        "name_prefix": name_prefix,
    }
    env = {**os.environ, **terraform_env(plan, action)}
    if api_key:
        env["OCTOPUS_API_KEY"] = api_key
    result = subprocess.run(
        ["bash", str(include_dir() / "terraform-fleet.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
