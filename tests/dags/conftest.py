from __future__ import annotations

import json

import pytest

from tests.dags.harness import stop_local_tentacles


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh metadata database for this test session (SQLite under the private AIRFLOW_HOME)."""
    from airflow.utils.db import resetdb

    resetdb()


@pytest.fixture
def octopus_connection(emulator, monkeypatch):
    """``octopus_default`` pointing at the emulator, given as env JSON like a deployment would."""
    conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key, "extra": {"timeout": 30}}
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
    return conn


@pytest.fixture
def local_cloud(airflow_db, octopus_connection, emulator, tmp_path, monkeypatch):
    """The embedded local cloud wired to the emulator; every simulated VM is stopped afterwards."""
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("OCTOPUS_WORKERS_STATE_DIR", str(tmp_path / "tf-state"))
    monkeypatch.setenv("TF_VAR_runtime_dir", str(runtime))
    monkeypatch.setenv("TF_VAR_server_comms_port", str(emulator.comms_port))
    monkeypatch.setenv("TF_VAR_boot_delay_seconds", "0")
    try:
        yield runtime
    finally:
        stop_local_tentacles(runtime)
