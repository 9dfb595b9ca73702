"""Process lifecycle, state file, comms channel health transitions and the control API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import requests

from octopus_emulator.scenario import make_scenario, make_worker, polling_endpoint
from octopus_emulator.testing import PACKAGE_ROOT, EmulatorProcess


class Tentacle:
    """A raw-socket tentacle on the comms channel."""

    def __init__(self, port: int, subscription: str, thumbprint: str, **hello):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rwb")
        self.send({"subscription": subscription, "thumbprint": thumbprint, **hello})
        self.hello_reply = self.recv()

    def send(self, obj):
        self.file.write(json.dumps(obj).encode() + b"\n")
        self.file.flush()

    def recv(self):
        return json.loads(self.file.readline())

    def close(self):
        self.file.close()
        self.sock.close()


def wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def worker(emulator, wid="Workers-1", space="Spaces-1"):
    return requests.get(f"{emulator.url}/api/{space}/workers/{wid}", headers=emulator.headers(), timeout=5).json()


def post_polling(emulator, name, seed, space="Spaces-1", pools=("WorkerPools-1",)):
    uri, thumb = polling_endpoint(seed)
    body = {"Name": name, "IsDisabled": False, "WorkerPoolIds": list(pools),
            "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": uri, "Thumbprint": thumb}}
    resp = requests.post(f"{emulator.url}/api/{space}/workers", json=body, headers=emulator.headers(), timeout=5)
    assert resp.status_code == 201, resp.text
    return resp.json()


# ------------------------------------------------------------------------------------------ comms / health
def test_new_worker_turns_healthy_when_its_tentacle_is_connected(emulator):
    uri, thumb = polling_endpoint("t1")
    t = Tentacle(emulator.comms_port, uri, thumb, **{"version": "8.3.1", "os": "Linux", "shell": "Bash"})
    try:
        assert t.hello_reply == {"ok": True}
        t.send({"ping": 1})
        assert t.recv() == {"pong": 1}
        w = post_polling(emulator, "t1", "t1")
        assert w["HealthStatus"] == "Unknown"
        healthy = wait_for(lambda: worker(emulator)["HealthStatus"] == "Healthy" and worker(emulator))
        assert healthy["Status"] == "Online" and healthy["Endpoint"]["TentacleVersionDetails"]["Version"] == "8.3.1"
        assert emulator.control.comms()[0]["subscription"] == uri
        conn = requests.get(f"{emulator.url}/api/Spaces-1/workers/Workers-1/connection",
                            headers=emulator.headers(), timeout=10).json()
        assert conn["IsConnected"] is True
    finally:
        t.close()
    wait_for(lambda: worker(emulator)["HealthStatus"] == "Unavailable")
    assert worker(emulator)["Status"] == "Offline"


def test_worker_without_tentacle_turns_unavailable_after_the_delay(emulator):
    post_polling(emulator, "lonely", "lonely")
    assert worker(emulator)["HealthStatus"] == "Unknown"
    wait_for(lambda: worker(emulator)["HealthStatus"] == "Unavailable")


def test_thumbprint_must_match(emulator):
    uri, _ = polling_endpoint("t2")
    t = Tentacle(emulator.comms_port, uri, "F" * 40)
    try:
        post_polling(emulator, "t2", "t2")
        wait_for(lambda: worker(emulator)["HealthStatus"] == "Unavailable")
    finally:
        t.close()


def test_one_tentacle_serves_records_in_several_spaces_and_reconnects(emulator):
    emulator.control.reset(make_scenario(3, "Pool"))
    uri, thumb = polling_endpoint("shared")
    for space, pool in (("Spaces-1", "WorkerPools-2"), ("Spaces-2", "WorkerPools-4"), ("Spaces-3", "WorkerPools-6")):
        post_polling(emulator, "shared", "shared", space, [pool])
    ids = [("Workers-1", "Spaces-1"), ("Workers-2", "Spaces-2"), ("Workers-3", "Spaces-3")]

    def statuses():
        return {worker(emulator, w, s)["HealthStatus"] for w, s in ids}

    wait_for(lambda: statuses() == {"Unavailable"})
    t = Tentacle(emulator.comms_port, uri, thumb)
    second = Tentacle(emulator.comms_port, uri, thumb)  # a second polling connection of the same tentacle
    wait_for(lambda: statuses() == {"Healthy"})
    t.close()
    time.sleep(0.3)
    assert statuses() == {"Healthy"}  # still one connection open
    assert emulator.control.drop_tentacle(uri) == 1  # the server side drops it
    wait_for(lambda: statuses() == {"Unavailable"})
    second.close()


def test_seeded_health_holds_until_the_tentacle_connects(emulator):
    emulator.control.reset(make_scenario(1, "Pool", workers={1: [make_worker("seeded", HealthStatus="Unhealthy")]}))
    time.sleep(0.4)  # longer than the health-check delay
    assert worker(emulator)["HealthStatus"] == "Unhealthy"
    seeded = make_worker("seeded")
    t = Tentacle(emulator.comms_port, seeded["Uri"], seeded["Thumbprint"])
    try:
        wait_for(lambda: worker(emulator)["HealthStatus"] == "Healthy")
    finally:
        t.close()


def test_bad_hello_and_http_handshake_on_the_comms_port(emulator):
    t = Tentacle(emulator.comms_port, "https://not-polling/", "AB")
    assert t.hello_reply["ok"] is False
    t.close()
    with socket.create_connection(("127.0.0.1", emulator.comms_port), timeout=5) as s:
        s.sendall(b"POST /handshake HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 200")
    assert emulator.control.comms() == []


def test_skip_initial_health_check(emulator):
    uri, thumb = polling_endpoint("skip")
    body = {"Name": "skip", "WorkerPoolIds": ["WorkerPools-1"], "SkipInitialHealthCheck": True,
            "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": uri, "Thumbprint": thumb}}
    requests.post(f"{emulator.url}/api/Spaces-1/workers", json=body, headers=emulator.headers(), timeout=10)
    time.sleep(0.4)
    assert worker(emulator)["HealthStatus"] == "Unknown"
    assert emulator.control.health_check() == {"Workers-1": "Unavailable"}


# ------------------------------------------------------------------------------------------ control API
def test_request_log_and_counters(emulator):
    requests.get(emulator.url + "/api/Spaces-1/workers?take=5", headers=emulator.headers(), timeout=10)
    requests.get(emulator.url + "/api/Spaces-9/workers", headers=emulator.headers(), timeout=10)
    emulator.control.state()  # control requests are not logged
    log = emulator.control.requests()
    assert [(e["method"], e["path"], e["query"], e["status"], e["space_id"]) for e in log] == [
        ("GET", "/api/Spaces-1/workers", "take=5", 200, "Spaces-1"),
        ("GET", "/api/Spaces-9/workers", "", 404, None)]
    counters = emulator.control.counters()
    assert counters["total"] == 2 and counters["by_method"] == {"GET": 2}
    assert counters["by_status"] == {"200": 1, "404": 1}
    assert counters["by_route"] == {"GET /api/{space}/workers": 2}
    assert counters["by_route_status"]["GET /api/{space}/workers"] == {"200": 1, "404": 1}
    emulator.control.clear_requests()
    assert emulator.control.requests() == [] and emulator.control.counters()["total"] == 0


def test_state_dump_round_trips_through_reset(emulator):
    emulator.control.reset(make_scenario(2, "Pool", workers={2: [make_worker("w")]}))
    post_polling(emulator, "posted", "posted", "Spaces-1", ["WorkerPools-2"])
    dump = emulator.control.state()
    assert dump["format"] == "octopus-emulator-state"
    emulator.control.reset(None)
    assert len(emulator.control.state()["spaces"]) == 1
    emulator.control.reset(dump)
    again = emulator.control.state()
    assert [w["Id"] for w in again["workers"]] == [w["Id"] for w in dump["workers"]]
    assert post_polling(emulator, "next", "next", "Spaces-1", ["WorkerPools-2"])["Id"] == "Workers-3"


@pytest.mark.octopus_scenario({"spaces": [{"Name": "Marked", "pools": [{"Name": "P"}]}]})
def test_scenario_marker(emulator):
    assert [s["Name"] for s in emulator.control.state()["spaces"]] == ["Marked"]


def test_make_scenario_helpers():
    scenario = make_scenario(12, ["A", "B"], spaces_without_pool=[2, "Space 003"],
                             workers={1: [make_worker("w")]}, strict_endpoints=True)
    assert scenario["strict_endpoints"] is True
    assert [s["Name"] for s in scenario["spaces"]][:2] == ["Space 001", "Space 002"]
    assert scenario["spaces"][1]["pools"] == [] and scenario["spaces"][2]["pools"] == []
    assert scenario["spaces"][0]["workers"][0]["pools"] == ["A"]
    assert make_worker("x") == make_worker("x") and make_worker("x")["Uri"] != make_worker("y")["Uri"]


# ------------------------------------------------------------------------------------------ processes
def test_state_file_survives_kill_and_restart(tmp_path):
    state = tmp_path / "state.json"
    with EmulatorProcess(state_file=state, scenario=make_scenario(2, "Pool"), health_check_delay=0.1) as emu:
        port, comms_port = emu.port, emu.comms_port
        created = post_polling(emu, "persisted", "persisted", "Spaces-2", ["WorkerPools-4"])
        emu.kill()  # SIGKILL right after the write: it must already be on disk
        assert json.loads(state.read_text())["workers"][0]["Id"] == created["Id"]
        emu.start()
        assert (emu.port, emu.comms_port) == (port, comms_port)
        assert worker(emu, created["Id"], "Spaces-2")["Name"] == "persisted"
        # the scenario does not overwrite an existing state file; ids continue
        assert post_polling(emu, "more", "more", "Spaces-2", ["WorkerPools-4"])["Id"] == "Workers-2"
        emu.restart()
        assert len(emu.control.state()["workers"]) == 2


def test_restart_without_state_file_carries_state_over():
    with EmulatorProcess() as emu:
        post_polling(emu, "kept", "kept")
        key = emu.api_key
        emu.restart()
        assert worker(emu)["Name"] == "kept" and emu.api_key == key


def test_cli_ready_line_env_keys_and_generated_key(tmp_path):
    env = {"PYTHONPATH": str(PACKAGE_ROOT), "OCTOPUS_EMULATOR_API_KEYS": "API-ONE, API-TWO", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "octopus_emulator", "serve", "--port", "0", "--comms-port", "0",
                             "--api-key", "API-THREE"], stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        ready = json.loads(proc.stdout.readline())
        assert set(ready) == {"url", "comms_port", "pid"}
        for key in ("API-ONE", "API-TWO", "API-THREE"):
            resp = requests.get(ready["url"] + "/api/spaces", headers={"X-Octopus-ApiKey": key}, timeout=10)
            assert resp.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
    env.pop("OCTOPUS_EMULATOR_API_KEYS")
    proc = subprocess.Popen([sys.executable, "-m", "octopus_emulator", "serve", "--port", "0", "--comms-port", "0"],
                            stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        ready = json.loads(proc.stdout.readline())
        key = ready["api_key"]
        resp = requests.get(ready["url"] + "/api/spaces", headers={"X-Octopus-ApiKey": key}, timeout=10)
        assert resp.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_main_dispatches_other_commands_to_the_tentacle(monkeypatch):
    import types

    from octopus_emulator import __main__ as entry

    seen = []
    fake = types.ModuleType("octopus_emulator.tentacle")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "octopus_emulator.tentacle", fake)
    assert entry.main(["register-worker", "--name", "w1"]) == 0
    assert seen == [["register-worker", "--name", "w1"]]
