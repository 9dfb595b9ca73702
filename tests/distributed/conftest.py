"""The distributed suite's cluster: Postgres + Redis + Airflow on CeleryExecutor with two workers + the emulator.

Started once per module and stopped whatever happens: Airflow's process groups, every simulated VM, pg_ctl stop,
Redis shutdown; processes that outlived them (by their private AIRFLOW_HOME) are killed and fail the teardown.
"""

from __future__ import annotations

import json

import pytest

from tests.dags.harness import stop_local_tentacles
from tests.distributed.cluster import DistributedAirflow
from tests.distributed.services import PostgresCluster, RedisServer, missing_services
from tests.scheduler.standalone import SHARE_DAG, kill_leftovers, processes_with_env

#: How long another Terraform waits for the state lock before the runner explains who holds it.
LOCK_TIMEOUT = "10s"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "distributed: Airflow on CeleryExecutor with two workers, Postgres and Redis (tests/distributed)"
    )


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/distributed/" in str(item.fspath):
            item.add_marker(pytest.mark.distributed)


@pytest.fixture(scope="module")
def services():
    missing = missing_services()
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: run scripts/setup.sh (scripts/setup.d/20-services.sh)")
    postgres = PostgresCluster(databases=("airflow", "tfstate"))
    redis = RedisServer()
    try:
        postgres.start()
        redis.start()
        yield postgres, redis
    finally:
        redis.stop()
        postgres.stop()


@pytest.fixture(scope="module")
def cluster(services, emulator_process, tmp_path_factory):
    """The running cluster, the share DAG parsed and unpaused; ``octopus_default`` points at the emulator."""
    postgres, redis = services
    base = tmp_path_factory.mktemp("distributed")
    runtime = base / "local-cloud"  # the local cloud's "VMs" (the cloud, not an Airflow file)
    backend = base / "tf-backend.hcl"
    backend.write_text(f'conn_str = "{postgres.url("tfstate")}?sslmode=disable"\n', encoding="utf-8")
    backend.chmod(0o600)
    conn = {
        "conn_type": "http",
        "host": emulator_process.url,
        "password": emulator_process.api_key,
        "extra": {"timeout": 30},
    }
    airflow = DistributedAirflow(
        base / "airflow",
        postgres,
        redis,
        {
            "AIRFLOW_CONN_OCTOPUS_DEFAULT": json.dumps(conn),
            "OCTOPUS_TF_BACKEND_LOCAL": "pg",
            "OCTOPUS_TF_BACKEND_CONFIG_LOCAL": str(backend),
            "OCTOPUS_TF_LOCK_TIMEOUT": LOCK_TIMEOUT,
            "TF_VAR_runtime_dir": str(runtime),
            "TF_VAR_server_comms_port": str(emulator_process.comms_port),
            "TF_VAR_boot_delay_seconds": "0",
        },
    )
    airflow.runtime_dir = runtime
    try:
        airflow.start()
        airflow.wait(
            lambda: airflow.api.call("GET", f"dags/{SHARE_DAG}", ok=(200, 404)).get("dag_id"),
            timeout=120,
            what=f"the dag-processor to register {SHARE_DAG}",
        )
        airflow.api.unpause(SHARE_DAG)
        yield airflow
    finally:
        airflow.stop()
        stop_local_tentacles(runtime)
        leftovers = [pid for home in airflow.homes() for pid in processes_with_env("AIRFLOW_HOME", str(home))]
        leftovers += processes_with_env("OCTOPUS_TF_BACKEND_CONFIG_LOCAL", str(backend))  # orphaned Terraform
        kill_leftovers(leftovers, "the distributed Airflow")
