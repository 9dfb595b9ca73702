"""Pytest fixtures for the Octopus emulator (load with ``pytest_plugins = ["octopus_emulator.pytest_plugin"]``).

- ``octopus_api_key`` (session): the API key the emulator accepts;
- ``emulator_process`` (session): one :class:`~octopus_emulator.testing.EmulatorProcess` for the whole run;
- ``emulator`` (function): the same process with state, faults and request log reset before the test. The
  state is the default scenario (one "Default" space) unless the test is marked
  ``@pytest.mark.octopus_scenario({...})`` (a scenario dict, see ``octopus_emulator/README.md``).
"""

from __future__ import annotations

import secrets

import pytest

from .testing import EmulatorProcess


def pytest_configure(config):
    config.addinivalue_line("markers", "octopus_scenario(scenario): scenario the `emulator` fixture resets to")


@pytest.fixture(scope="session")
def octopus_api_key() -> str:
    return "API-" + secrets.token_hex(13).upper()


@pytest.fixture(scope="session")
def emulator_process(octopus_api_key):
    proc = EmulatorProcess(api_key=octopus_api_key, health_check_delay=0.2)
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def emulator(emulator_process, request):
    if not emulator_process.running:  # a test killed it: bring it back on the same ports
        emulator_process.start()
    marker = request.node.get_closest_marker("octopus_scenario")
    scenario = marker.args[0] if marker and marker.args else None
    control = emulator_process.control
    control.clear_faults()
    control.reset(scenario)
    control.clear_requests()
    return emulator_process
