"""Machine policies' script RunType values, and a second comms listener standing in for a second HA node."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from octopus_emulator.scenario import make_scenario
from octopus_emulator.testing import PACKAGE_ROOT, EmulatorProcess

# Octopus.Client's ScriptPolicyRunType and the TypeScript client's enum: the only values a typed client accepts.
RUN_TYPES = {"InheritFromDefault", "Inline", "OnlyConnectivity"}


def script_run_types(policy: dict) -> set[str]:
    health = policy["MachineHealthCheckPolicy"]
    return {health["PowerShellHealthCheckPolicy"]["RunType"], health["BashHealthCheckPolicy"]["RunType"]}


def test_machine_policies_report_script_run_types_octopus_defines(emulator):
    s = emulator.session()
    sid = s.get(emulator.url + "/api/spaces/all", timeout=10).json()[0]["Id"]
    listed = s.get(f"{emulator.url}/api/{sid}/machinepolicies", timeout=10).json()["Items"]
    every = s.get(f"{emulator.url}/api/{sid}/machinepolicies/all", timeout=10).json()
    template = s.get(f"{emulator.url}/api/{sid}/machinepolicies/template", timeout=10).json()
    policies = [*listed, *every, template]
    assert listed and every
    for policy in policies:
        assert script_run_types(policy) <= RUN_TYPES, policy["Name"]


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def ha_emulator():
    emu = EmulatorProcess(scenario=make_scenario(1, "Pool 1"), health_check_delay=0.2)
    emu.start()
    try:
        yield emu
    finally:
        emu.close()


def add_node(emu: EmulatorProcess) -> dict:
    resp = requests.post(emu.url + "/_emulator/comms/nodes", json={"port": 0}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def start_tentacle(emu: EmulatorProcess, tmp_path, name: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "octopus_emulator", "register-worker", "--server", emu.url, "--name", name,
            "--workerpool", "Pool 1", "--server-comms-port", str(emu.comms_port), "--home", str(tmp_path / name),
            "--run", "--ping-interval", "0.2", *extra]
    env = {**os.environ, "OCTOPUS_API_KEY": emu.api_key, "PYTHONPATH": str(PACKAGE_ROOT)}
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    proc.log_file = log
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log_file.close()


def test_second_comms_listener_is_a_second_node_sharing_the_registry(ha_emulator):
    added = add_node(ha_emulator)
    assert added["node"] == "node-2" and added["port"] not in (0, ha_emulator.comms_port)
    assert [n["node"] for n in added["nodes"]] == ["node-1", "node-2"]
    bad = requests.post(ha_emulator.url + "/_emulator/comms/nodes", json={"port": "x"}, timeout=10)
    assert bad.status_code == 400 and "port" in bad.json()["ErrorMessage"]


def test_simulated_tentacle_polls_both_nodes_of_a_cluster(ha_emulator, tmp_path):
    node2 = add_node(ha_emulator)["port"]
    both = start_tentacle(ha_emulator, tmp_path, "ha-1", "--poll-server-address", f"127.0.0.1:{node2}")
    one = start_tentacle(ha_emulator, tmp_path, "single-1")
    try:
        def settled():
            snapshot = ha_emulator.control.comms()
            return snapshot if sorted(len(e["nodes"]) for e in snapshot) == [1, 2] else None

        snapshot = wait_for(settled, what="both tentacles connected, one through both nodes")
        assert sorted(tuple(e["nodes"]) for e in snapshot) == [("node-1",), ("node-1", "node-2")]
        # The HA tentacle polls node 2 with the subscription it registered (one worker record, two channels).
        workers = ha_emulator.session().get(ha_emulator.url + "/api/Spaces-1/workers/all", timeout=10).json()
        ha_uri = next(w["Endpoint"]["Uri"] for w in workers if w["Name"] == "ha-1")
        entry = next(e for e in snapshot if len(e["nodes"]) == 2)
        assert entry["subscription"].lower() == ha_uri.lower()
    finally:
        stop(both)
        stop(one)
    wait_for(lambda: ha_emulator.control.comms() == [], what="the tentacles' connections to close")
