"""Two Octopus emulators for the trigger tests: ``fast`` (the session's) and ``slow`` (its own process)."""

from __future__ import annotations

import json

import pytest

from octopus_emulator.scenario import make_scenario, make_worker
from octopus_emulator.testing import EmulatorProcess

POOL = "Local Worker Pool TF"
#: Fast retry settings, as the hook tests use; Retry-After still sets the floor of each wait.
FAST_RETRIES = {"retry_initial_wait": 0.01, "retry_max_wait": 0.05, "max_attempts": 4, "timeout": 30}


@pytest.fixture(scope="session")
def slow_emulator_process(octopus_api_key):
    proc = EmulatorProcess(api_key=octopus_api_key, health_check_delay=0.2)
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def _seed(emu: EmulatorProcess, monkeypatch, conn_id: str) -> dict:
    """One space whose pool holds one live fleet worker; ``conn_id`` points at ``emu``. Returns trigger kwargs."""
    workers = [make_worker("t-local-1", pools=[POOL], HealthStatus="Healthy")]
    emu.control.clear_faults()
    emu.control.reset(make_scenario(1, [POOL], workers={1: workers}))
    emu.control.clear_requests()
    conn = {"conn_type": "http", "host": emu.url, "password": emu.api_key, "extra": FAST_RETRIES}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    pool_id = next(p["Id"] for p in emu.control.state()["pools"] if p["Name"] == POOL)
    return {"octopus_conn_id": conn_id, "space_id": "Spaces-1", "pool_id": pool_id}


@pytest.fixture
def fast(emulator, monkeypatch):
    return emulator, _seed(emulator, monkeypatch, "octopus_fast")


@pytest.fixture
def slow(slow_emulator_process, monkeypatch):
    if not slow_emulator_process.running:
        slow_emulator_process.start()
    return slow_emulator_process, _seed(slow_emulator_process, monkeypatch, "octopus_slow")


@pytest.fixture
def octopus_conn(emulator, monkeypatch):
    """Point ``octopus_default`` at the emulator; call it again with extras to change the connection."""

    def configure(*, host: str | None = None, password: str | None = None, **extra):
        conn = {
            "conn_type": "http",
            "host": host or emulator.url,
            "password": emulator.api_key if password is None else password,
            "extra": {**FAST_RETRIES, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
        return conn

    configure()
    return configure
