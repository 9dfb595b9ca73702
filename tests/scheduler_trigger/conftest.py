"""``airflow standalone`` with ``[octopus] share_mode = triggerer``: every ``share_to_space`` index in the triggerer.

Reuses the scheduler suite's harness (:mod:`tests.scheduler.standalone`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest

from tests.dags.harness import stop_local_tentacles
from tests.scheduler.standalone import SHARE_DAG, AirflowStandalone, processes_with_env


@pytest.fixture(scope="module")
def triggerer_standalone(emulator_process, tmp_path_factory):
    """Airflow (scheduler, triggerer, dag-processor, api-server) with share_to_space started from the triggerer.

    The connection allows one attempt per request, so a fault the test injects reaches Airflow's own retries.
    """
    base = tmp_path_factory.mktemp("standalone-trigger")
    runtime = base / "runtime"
    conn = {
        "conn_type": "http",
        "host": emulator_process.url,
        "password": emulator_process.api_key,
        "extra": {"timeout": 30, "max_attempts": 1},
    }
    airflow = AirflowStandalone(
        base / "home",
        {
            "AIRFLOW_CONN_OCTOPUS_DEFAULT": json.dumps(conn),
            "AIRFLOW__OCTOPUS__SHARE_MODE": "triggerer",
            "OCTOPUS_WORKERS_STATE_DIR": str(base / "tf-state"),
            "TF_VAR_runtime_dir": str(runtime),
            "TF_VAR_server_comms_port": str(emulator_process.comms_port),
            "TF_VAR_boot_delay_seconds": "0",
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
