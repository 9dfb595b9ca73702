"""The local Terraform module without a server: validation, and apply failing loudly when tentacles can't start."""

from __future__ import annotations

import pytest

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
