"""The local Terraform cloud against an Octopus server: simulated VMs register, scale, and go away."""

from __future__ import annotations

import os
import signal

import pytest
from tentacle_support import pid_alive, wait_for

from octopus_emulator.tentacle_state import TentacleHome


@pytest.fixture
def fleet_vars(octo):
    return {
        "octopus_server_url": octo.url,
        "octopus_space_name": "Default",
        "worker_pool_name": "Pool 1",
        "name_prefix": "tf",
        "server_comms_port": str(octo.comms_port),
    }


def apply(terraform, fleet_vars, count):
    return terraform.run("apply", "-auto-approve", **fleet_vars, instance_count=str(count))


def registered(octo, names):
    """Worker records named ``names`` whose tentacles hold a comms connection."""
    workers = {w["Name"]: w for w in octo.workers.values()}
    return all(n in workers and workers[n]["HealthStatus"] == "Healthy" for n in names) and workers


@pytest.fixture
def fleet(terraform, fleet_vars, octo):
    """Two applied instances, registered and connected."""
    apply(terraform, fleet_vars, 2)
    wait_for(lambda: registered(octo, ["tf-1", "tf-2"]), what="2 registered workers")
    return terraform


def test_apply_registers_one_worker_per_instance(fleet, octo):
    assert sorted(w["Name"] for w in octo.workers.values()) == ["tf-1", "tf-2"]


def test_instances_have_distinct_identities(fleet, octo):
    endpoints = {(w["Endpoint"]["Thumbprint"], w["Endpoint"]["Uri"]) for w in octo.workers.values()}
    assert len(endpoints) == 2


def test_outputs_name_the_workers(fleet):
    out = fleet.run("output", "-json", "worker_names").stdout
    assert out.strip() == '["tf-1","tf-2"]'


def test_unchanged_reapply_is_a_no_op(fleet, fleet_vars):
    pids = fleet.pids()
    proc = apply(fleet, fleet_vars, 2)
    assert "No changes." in proc.stdout
    assert fleet.pids() == pids


def test_scale_up_adds_only_the_difference(fleet, fleet_vars, octo):
    pids = fleet.pids()
    proc = apply(fleet, fleet_vars, 3)
    assert "Resources: 1 added, 0 changed, 0 destroyed." in proc.stdout
    wait_for(lambda: registered(octo, ["tf-3"]), what="tf-3 registered")
    assert {k: v for k, v in fleet.pids().items() if k != "tf-3"} == pids


def test_scale_down_stops_the_removed_instance(fleet, fleet_vars, octo):
    pid = fleet.pids()["tf-2"]
    proc = apply(fleet, fleet_vars, 1)
    assert "Resources: 0 added, 0 changed, 1 destroyed." in proc.stdout
    assert not pid_alive(pid)
    assert list(fleet.pids()) == ["tf-1"]


def test_destroy_stops_every_process_and_disconnects(fleet, fleet_vars, octo):
    pids = fleet.pids().values()
    fleet.run("destroy", "-auto-approve", **fleet_vars, instance_count="2")
    assert not any(pid_alive(p) for p in pids)
    wait_for(lambda: all(w["HealthStatus"] == "Unavailable" for w in octo.workers.values()), what="Unavailable")


def test_destroy_deletes_each_instance_disk(fleet, fleet_vars):
    fleet.run("destroy", "-auto-approve", **fleet_vars, instance_count="2")
    assert list(fleet.runtime_dir.iterdir()) == []


def test_rebuild_after_destroy_gets_new_thumbprints(fleet, fleet_vars, octo):
    before = {w["Endpoint"]["Thumbprint"] for w in octo.workers.values()}
    fleet.run("destroy", "-auto-approve", **fleet_vars, instance_count="2")
    apply(fleet, fleet_vars, 2)
    wait_for(lambda: registered(octo, ["tf-1", "tf-2"]), what="rebuilt workers")
    after = {w["Endpoint"]["Thumbprint"] for w in octo.workers.values()}
    assert before.isdisjoint(after)


def test_destroy_succeeds_when_a_process_already_died(fleet, fleet_vars):
    pid = fleet.pids()["tf-1"]
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), what="process death")
    proc = fleet.run("destroy", "-auto-approve", **fleet_vars, instance_count="2")
    assert "tentacle tf-1 was not running" in proc.stdout


def test_apply_does_not_wait_for_a_booting_tentacle(terraform, fleet_vars):
    apply(terraform, {**fleet_vars, "boot_delay_seconds": "300"}, 1)
    home = TentacleHome(terraform.runtime_dir / "tf-1")
    assert home.read_status()["state"] == "booting"
    assert pid_alive(terraform.pids()["tf-1"])


def test_api_key_is_not_in_state_or_logs(fleet):
    key = fleet.env["OCTOPUS_API_KEY"]
    assert key not in (fleet.dir / "terraform.tfstate").read_text()
    assert all(key not in p.read_text() for p in fleet.runtime_dir.glob("*/tentacle.log"))
