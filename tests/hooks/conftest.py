"""Fixtures for the OctopusHook tests; the emulator fixtures come from ``octopus_emulator.pytest_plugin``."""

from __future__ import annotations

import json

import pytest

#: Fast retry settings so retry tests take milliseconds; production defaults are 0.5 s doubling to 30 s.
FAST_RETRIES = {"retry_initial_wait": 0.01, "retry_max_wait": 0.05, "max_attempts": 4, "timeout": 10}


@pytest.fixture
def octopus_conn(emulator, monkeypatch):
    """Point ``octopus_default`` at the emulator; call it again with extras to change the connection.

    ``conn_type`` is ``http`` (how existing deployments define it) unless a test asks for ``octopus``.
    """

    def configure(*, host: str | None = None, password: str | None = None, conn_type: str = "http", **extra):
        conn = {
            "conn_type": conn_type,
            "host": host or emulator.url,
            "password": emulator.api_key if password is None else password,
            "extra": {**FAST_RETRIES, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
        return conn

    configure()
    return configure
