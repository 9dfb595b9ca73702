"""The local Terraform cloud against an Octopus server: simulated VMs register, scale, and go away."""

from __future__ import annotations

import json
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


def apply(terraform, fleet_vars, count, remove=()):
    return terraform.run("apply", "-auto-approve", **fleet_vars, instance_count=str(count),
                         remove_instances=json.dumps(list(remove)))


def names(terraform):
    return json.loads(terraform.run("output", "-json", "worker_names").stdout)


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


# ---- issue 19: the package picks the instance that leaves ("local by name") ----
@pytest.fixture
def fleet3(terraform, fleet_vars, octo):
    apply(terraform, fleet_vars, 3)
    wait_for(lambda: registered(octo, ["tf-1", "tf-2", "tf-3"]), what="3 registered workers")
    return terraform


def test_a_named_instance_leaves_and_no_other_is_touched(fleet3, fleet_vars, octo):
    pids = fleet3.pids()
    proc = apply(fleet3, fleet_vars, 2, ["tf-2"])
    assert "Resources: 0 added, 0 changed, 1 destroyed." in proc.stdout
    assert not pid_alive(pids["tf-2"]) and not (fleet3.runtime_dir / "tf-2").exists()
    assert fleet3.pids() == {"tf-1": pids["tf-1"], "tf-3": pids["tf-3"]}
    assert names(fleet3) == ["tf-1", "tf-3"]
    wait_for(lambda: {w["Name"]: w["HealthStatus"] for w in octo.workers.values()}["tf-2"] == "Unavailable",
             what="tf-2 disconnected")


def test_the_next_apply_does_not_undo_a_named_removal(fleet3, fleet_vars):
    apply(fleet3, fleet_vars, 2, ["tf-2"])
    pids = fleet3.pids()
    assert "No changes." in apply(fleet3, fleet_vars, 2).stdout  # the name is no longer passed
    assert fleet3.pids() == pids and names(fleet3) == ["tf-1", "tf-3"]


def test_scale_up_after_a_named_removal_adds_new_numbers(fleet3, fleet_vars, octo):
    apply(fleet3, fleet_vars, 2, ["tf-2"])
    pids = fleet3.pids()
    proc = apply(fleet3, fleet_vars, 3)
    assert "Resources: 1 added, 0 changed, 0 destroyed." in proc.stdout
    assert names(fleet3) == ["tf-1", "tf-3", "tf-4"]
    assert {k: v for k, v in fleet3.pids().items() if k != "tf-4"} == pids
    wait_for(lambda: registered(octo, ["tf-4"]), what="tf-4 registered")


def test_a_named_instance_is_replaced_by_a_new_one_when_the_count_stays(fleet, fleet_vars, octo):
    pids = fleet.pids()
    proc = apply(fleet, fleet_vars, 2, ["tf-1"])
    assert "Resources: 1 added, 0 changed, 1 destroyed." in proc.stdout
    assert names(fleet) == ["tf-2", "tf-3"] and fleet.pids()["tf-2"] == pids["tf-2"]
    assert not pid_alive(pids["tf-1"])
    wait_for(lambda: registered(octo, ["tf-3"]), what="the replacement registered")


def test_the_highest_named_instance_is_not_reborn_under_its_own_name(fleet, fleet_vars):
    """Removing tf-2 of {tf-1, tf-2} at the same count adds tf-3: the same number would be the same instance."""
    pids = fleet.pids()
    proc = apply(fleet, fleet_vars, 2, ["tf-2"])
    assert "Resources: 1 added, 0 changed, 1 destroyed." in proc.stdout
    assert names(fleet) == ["tf-1", "tf-3"] and not pid_alive(pids["tf-2"])


def test_names_of_no_instance_of_this_fleet_are_ignored(fleet, fleet_vars):
    pids = fleet.pids()
    proc = apply(fleet, fleet_vars, 2, ["tf-9", "other-1", "tf-1x", "tf-01"])
    assert "No changes." in proc.stdout and fleet.pids() == pids


def test_named_and_unnamed_scale_in_together(fleet3, fleet_vars):
    """3 -> 1 naming only tf-1: tf-1 goes, and of the rest the highest-numbered (the documented fallback)."""
    proc = apply(fleet3, fleet_vars, 1, ["tf-1"])
    assert "Resources: 0 added, 0 changed, 2 destroyed." in proc.stdout
    assert names(fleet3) == ["tf-2"]
