from __future__ import annotations

import json

import pytest

from tests.dags.harness import configure_local_cloud, stop_local_tentacles


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
def fresh_ledgers(airflow_db):
    """Every test starts with no deployment ledger: each builds its fleets against its own emulator scenario."""
    from tests.dags.harness import clear_ledgers

    clear_ledgers()
    yield
    clear_ledgers()


@pytest.fixture
def local_cloud(fresh_ledgers, emulator, tmp_path, monkeypatch):
    """The embedded local cloud wired to the emulator; every simulated VM is stopped afterwards."""
    runtime = configure_local_cloud(monkeypatch, tmp_path, emulator)
    try:
        yield runtime
    finally:
        stop_local_tentacles(runtime)
