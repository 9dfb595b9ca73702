"""A real ``airflow standalone`` (scheduler, triggerer, dag-processor, api-server) wired to the emulator."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest

from tests.dags.harness import stop_local_tentacles
from tests.scheduler.standalone import SHARE_DAG, AirflowStandalone, processes_with_env


@pytest.fixture(scope="module")
def standalone(emulator_process, tmp_path_factory):
    """``airflow standalone`` with the package, ``octopus_default`` pointing at the emulator and the local cloud.

    The share DAG is parsed and unpaused. Teardown stops Airflow's process group, then every simulated VM, and
    fails if any process started under this Airflow home is still alive.
    """
    base = tmp_path_factory.mktemp("standalone")
    runtime = base / "runtime"
    conn = {
        "conn_type": "http",
        "host": emulator_process.url,
        "password": emulator_process.api_key,
        "extra": {"timeout": 30},
    }
    airflow = AirflowStandalone(
        base / "home",
        {
            "AIRFLOW_CONN_OCTOPUS_DEFAULT": json.dumps(conn),
            "OCTOPUS_WORKERS_STATE_DIR": str(base / "tf-state"),
            "TF_VAR_runtime_dir": str(runtime),
            "TF_VAR_server_comms_port": str(emulator_process.comms_port),
            "TF_VAR_boot_delay_seconds": "0",
            # The DAG's default_args retry after 30 s, 60 s...: cap every retry delay at 1 s so a task that
            # retries (summarize, when a space failed) does not hold the suite for minutes.
            "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "1",
        },
    )
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
        leftovers = processes_with_env("AIRFLOW_HOME", str(airflow.home))
        for pid in leftovers:  # only processes that inherited this test's private AIRFLOW_HOME
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leftovers:
            raise RuntimeError(f"processes outlived airflow standalone and the local cloud (killed): {leftovers}")
