"""A running tentacle (--run): holds the comms channel, reconnects, and leaves on SIGTERM."""

from __future__ import annotations

import shutil
import signal

from tentacle_support import API_KEY, wait_for

from octopus_emulator.tentacle_state import TentacleHome


def _status(tmp_path, name="w1"):
    return TentacleHome(tmp_path / name).read_status() or {}


def _log_after_drop(tmp_path):
    text = (tmp_path / "w1.log").read_text()
    return text.split("Lost the comms channel", 1)[1] if "Lost the comms channel" in text else ""


def _worker(octo):
    workers = list(octo.workers.values())
    return workers[0] if workers else {}


def test_running_tentacle_turns_its_worker_healthy(octo, start_tentacle, tmp_path):
    start_tentacle(octo)
    wait_for(lambda: _worker(octo).get("HealthStatus") == "Healthy", what="Healthy")


def test_running_tentacle_holds_one_comms_connection(octo, start_tentacle, tmp_path):
    start_tentacle(octo)
    status = wait_for(lambda: _status(tmp_path).get("state") == "running" and _status(tmp_path), what="running")
    wait_for(lambda: octo.connections(status["subscription"]) == 1, what="comms connection")


def test_sigterm_exits_zero_and_the_worker_turns_unavailable(octo, start_tentacle, tmp_path):
    proc = start_tentacle(octo)
    wait_for(lambda: _worker(octo).get("HealthStatus") == "Healthy", what="Healthy")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    wait_for(lambda: _worker(octo).get("HealthStatus") == "Unavailable", what="Unavailable")


def test_tentacle_reconnects_after_the_server_drops_it(octo, start_tentacle, tmp_path):
    start_tentacle(octo)
    status = wait_for(lambda: _status(tmp_path).get("state") == "running" and _status(tmp_path), what="running")
    wait_for(lambda: octo.connections(status["subscription"]) == 1, what="comms connection")
    octo.drop_comms()
    wait_for(lambda: "Comms channel to" in _log_after_drop(tmp_path), what="a reconnect in the log")
    wait_for(lambda: octo.connections(status["subscription"]) == 1, what="reconnected")


def test_sigterm_during_boot_delay_exits_without_registering(octo, start_tentacle, tmp_path):
    proc = start_tentacle(octo, "w1", "--boot-delay", "60")
    wait_for(lambda: _status(tmp_path).get("state") == "booting", what="booting")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    assert not octo.workers


def test_running_tentacle_log_never_contains_the_key(octo, start_tentacle, tmp_path):
    proc = start_tentacle(octo)
    wait_for(lambda: _status(tmp_path).get("state") == "running", what="running")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    log = proc.log_path.read_text()
    assert "Machine registered successfully" in log
    assert API_KEY not in log


def test_tentacle_reconnects_after_an_emulator_restart(octo, start_tentacle, tmp_path):
    start_tentacle(octo)
    status = wait_for(lambda: _status(tmp_path).get("state") == "running" and _status(tmp_path), what="running")
    wait_for(lambda: octo.connections(status["subscription"]) == 1, what="comms connection")
    octo.emu.restart()  # same ports, state carried over, the comms registry starts empty
    wait_for(lambda: octo.connections(status["subscription"]) == 1, timeout=30, what="reconnect after restart")
    wait_for(lambda: _worker(octo).get("HealthStatus") == "Healthy", what="Healthy after restart")


def test_tentacle_stops_when_its_home_directory_is_deleted(octo, start_tentacle, tmp_path):
    proc = start_tentacle(octo, "w1", "--ping-interval", "0.2")
    wait_for(lambda: _status(tmp_path).get("state") == "running", what="running")
    shutil.rmtree(tmp_path / "w1")
    assert proc.wait(timeout=10) == 0
