"""A real ``airflow standalone`` (scheduler, triggerer, dag-processor, api-server) wired to the emulator."""

from __future__ import annotations

import pytest

from tests.scheduler.standalone import SHARE_DAG, share_standalone


@pytest.fixture(scope="module")
def standalone(emulator_process, tmp_path_factory):
    """``airflow standalone`` with the package, ``octopus_default`` pointing at the emulator and the local cloud.

    The share DAG is parsed and unpaused. Teardown stops Airflow's process group, then every simulated VM, and
    fails if any process started under this Airflow home is still alive.
    """
    with share_standalone(emulator_process, tmp_path_factory.mktemp("standalone")) as airflow:
        airflow.api.unpause(SHARE_DAG)
        yield airflow
