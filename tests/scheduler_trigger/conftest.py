"""``airflow standalone`` with ``[octopus] share_mode = triggerer``: every ``share_to_space`` index in the triggerer.

Reuses the scheduler suite's harness (:mod:`tests.scheduler.standalone`).
"""

from __future__ import annotations

import pytest

from tests.scheduler.standalone import SHARE_DAG, share_standalone


@pytest.fixture(scope="module")
def triggerer_standalone(emulator_process, tmp_path_factory):
    """Airflow (scheduler, triggerer, dag-processor, api-server) with share_to_space started from the triggerer.

    The connection allows one attempt per request, so a fault the test injects reaches Airflow's own retries.
    """
    with share_standalone(
        emulator_process,
        tmp_path_factory.mktemp("standalone-trigger"),
        conn={"extra": {"max_attempts": 1}},
        env={"AIRFLOW__OCTOPUS__SHARE_MODE": "triggerer"},
    ) as airflow:
        airflow.api.unpause(SHARE_DAG)
        yield airflow
