"""The local Terraform module without a server: validation, and apply failing loudly when tentacles can't start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tentacle_support import MODULE, pid_alive

BASE_VARS = {
    "octopus_server_url": "http://127.0.0.1:9",
    "octopus_space_name": "Default",
    "worker_pool_name": "Pool",
    "name_prefix": "t",
}


def test_module_validates_offline(terraform):
    proc = terraform.run("validate")
    assert "The configuration is valid" in proc.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("instance_count", "-1", "instance_count must be a whole number"),
        ("instance_count", "1.5", "instance_count must be a whole number"),
        ("name_prefix", "bad/prefix", "name_prefix must be 1-63 characters"),
        ("octopus_server_url", "127.0.0.1:8065", "octopus_server_url must be an http"),
        ("server_comms_port", "70000", "server_comms_port must be a whole number between 1 and 65535"),
    ],
)
def test_invalid_input_is_rejected_with_its_name(terraform, variable, value, message):
    proc = terraform.run("plan", check=False, **{**BASE_VARS, "instance_count": "1", variable: value})
    assert proc.returncode != 0
    assert message in " ".join(proc.stderr.split())


def test_apply_fails_without_api_key_in_environment(terraform):
    del terraform.env["OCTOPUS_API_KEY"]
    proc = terraform.run("apply", "-auto-approve", check=False, **BASE_VARS, instance_count="1")
    assert proc.returncode != 0
    assert "OCTOPUS_API_KEY is not set in Terraform's environment" in proc.stdout + proc.stderr


def test_apply_fails_and_shows_log_tail_when_simulator_cannot_start(terraform):
    terraform.env["PYTHONPATH"] = "/nonexistent"  # the module copy is outside the repository
    proc = terraform.run("apply", "-auto-approve", check=False, **BASE_VARS, instance_count="1")
    assert proc.returncode != 0
    assert "No module named octopus_emulator" in proc.stdout + proc.stderr


def test_zero_instances_apply_reports_outputs_without_secrets(terraform):
    terraform.run("apply", "-auto-approve", **BASE_VARS, instance_count="0")
    out = terraform.run("output", "-json").stdout
    assert '"worker_names"' in out and '"fleet_id"' in out
    assert terraform.env["OCTOPUS_API_KEY"] not in out


def booting(terraform, count, **extra):
    """Instances that start and stay 'booting' (long boot delay), so no server is needed."""
    return terraform.run("apply", "-auto-approve", **BASE_VARS, instance_count=str(count),
                         boot_delay_seconds="300", **extra)


def test_outputs_list_the_instances_in_number_order_past_nine(terraform):
    booting(terraform, 11)
    names = json.loads(terraform.run("output", "-json", "worker_names").stdout)
    assert names == [f"t-{i}" for i in range(1, 12)]
    instances = json.loads(terraform.run("output", "-json", "instances").stdout)
    assert [i["name"] for i in instances] == names and len({i["id"] for i in instances}) == 11


FIXTURES = Path(__file__).with_name("fixtures")


def test_a_count_indexed_fleet_of_an_earlier_version_is_kept_running(terraform):
    """moved.tf carries terraform_data.tentacle[i] to ["i+1"]: upgrading the package restarts no instance."""
    (terraform.dir / "moved.tf").unlink()
    shutil.copy(FIXTURES / "local-main-count-indexed.tf.txt", terraform.dir / "main.tf")
    shutil.copy(FIXTURES / "local-outputs-count-indexed.tf.txt", terraform.dir / "outputs.tf")
    booting(terraform, 3)
    pids = terraform.pids()
    assert len(pids) == 3 and all(pid_alive(p) for p in pids.values())

    for name in ("main.tf", "outputs.tf", "moved.tf"):
        shutil.copy(MODULE / name, terraform.dir / name)
    proc = booting(terraform, 3)
    assert "Resources: 0 added, 0 changed, 0 destroyed." in proc.stdout
    assert 'terraform_data.tentacle[0] has moved to terraform_data.tentacle["1"]' in proc.stdout
    assert terraform.pids() == pids and all(pid_alive(p) for p in pids.values())
    assert json.loads(terraform.run("output", "-json", "worker_names").stdout) == ["t-1", "t-2", "t-3"]


def test_moved_blocks_cover_every_count_the_dags_allow():
    text = (MODULE / "moved.tf").read_text()
    for i in range(100):  # dag_defaults.instance_count_param: maximum 100
        assert f'from = terraform_data.tentacle[{i}]\n  to   = terraform_data.tentacle["{i + 1}"]' in text
