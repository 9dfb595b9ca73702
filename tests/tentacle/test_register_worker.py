"""register-worker against an Octopus server: the request sequence, idempotency, --force and the errors."""

from __future__ import annotations

import json
import re

import pytest
from tentacle_support import API_KEY

from octopus_emulator import tentacle
from octopus_emulator.tentacle_state import TentacleHome


@pytest.fixture
def register(octo, tmp_path, monkeypatch, capsys):
    """Run register-worker in-process against ``octo``; returns (exit status, captured stderr+stdout)."""
    monkeypatch.setenv("OCTOPUS_API_KEY", API_KEY)

    def run(*extra: str, server=None, name="w1", pools=("Pool 1",), home=None):
        srv = server or octo
        argv = ["--server", srv.url, "--name", name, "--server-comms-port", str(srv.comms_port)]
        argv += ["--home", str(home or tmp_path / "home")]
        for p in pools:
            argv += ["--workerpool", p]
        rc = tentacle.main([*argv, *extra])
        out = capsys.readouterr()
        return rc, out.out + out.err

    return run


def test_registration_makes_the_register_worker_calls_in_order(octo, register):
    assert register("--policy", "slow", pools=("Pool 3",))[0] == 0
    assert octo.log == [
        "GET /api",
        "GET /api/users/me",
        "GET /api/users/Users-1/spaces",
        "GET /api/Spaces-1",
        "GET /api/configuration/certificates/certificate-global",
        "GET /api/Spaces-1/workers?name=w1",
        "GET /api/Spaces-1/machinepolicies",
        "GET /api/Spaces-1/machinepolicies?skip=2&take=2",
        "GET /api/Spaces-1/workerpools",
        "GET /api/Spaces-1/workerpools?skip=2&take=2",
        "POST /api/Spaces-1/workers",
    ]


def test_new_worker_is_a_polling_worker_with_home_identity(octo, register, tmp_path):
    register()
    (worker,) = octo.workers.values()
    home = TentacleHome(tmp_path / "home")
    (trust,) = home.trusted_servers()
    endpoint = worker["Endpoint"]
    assert (endpoint["CommunicationStyle"], endpoint["Uri"], endpoint["Thumbprint"]) == (
        "TentacleActive",
        trust.subscription_id,
        home.ensure_certificate(),
    )


def test_trust_entry_records_server_thumbprint_and_comms_address(octo, register, tmp_path):
    register()
    (trust,) = TentacleHome(tmp_path / "home").trusted_servers()
    server_thumbprint = octo.get("/api/configuration/certificates/certificate-global")["Thumbprint"]
    assert (trust.thumbprint, trust.address) == (server_thumbprint, f"https://127.0.0.1:{octo.comms_port}")


def test_policy_is_omitted_without_policy_flag(octo, register):
    register()
    assert octo.log[-1] == "POST /api/Spaces-1/workers"
    assert not any("machinepolicies" in line for line in octo.log)


def test_rerun_with_force_reuses_thumbprint_subscription_and_worker_id(octo, register):
    register()
    first = dict(next(iter(octo.workers.values())))
    assert register("--force")[0] == 0
    (again,) = octo.workers.values()
    assert (again["Id"], again["Endpoint"]) == (first["Id"], first["Endpoint"])


def test_force_puts_to_self_link_and_replaces_pools(octo, register):
    register()
    octo.clear_log()
    register("--force", pools=("Pool 3", "pool-4"))
    last_request = octo.log[-1]
    (worker,) = octo.workers.values()
    assert last_request == f"PUT /api/Spaces-1/workers/{worker['Id']}"
    assert worker["WorkerPoolIds"] == [octo.pool_id("Spaces-1", "Pool 3"), octo.pool_id("Spaces-1", "Pool 4")]


def test_existing_name_without_force_fails_and_writes_nothing(octo, register):
    register()
    octo.clear_log()
    rc, out = register(name="W1 ")
    assert rc == 1
    assert "A worker named 'W1' already exists in the environment. Use the 'force' parameter" in out
    assert not any(line.startswith(("POST", "PUT")) for line in octo.log)


def test_pool_resolves_by_slug_after_a_name_listing(octo, register):
    register(pools=("pool-5",))
    (worker,) = octo.workers.values()
    assert worker["WorkerPoolIds"] == [octo.pool_id("Spaces-1", "Pool 5")]


def test_pool_resolves_by_id_after_name_and_slug_listings(octo, register):
    pool_id = octo.pool_id("Spaces-1", "Pool 2")
    assert register(pools=(pool_id,))[0] == 0
    assert octo.log[-2:] == [f"GET /api/Spaces-1/workerpools?ids={pool_id}", "POST /api/Spaces-1/workers"]


def test_unknown_pool_fails_with_name_slug_or_id_message(octo, register):
    rc, out = register(pools=("Nope",))
    assert rc == 1
    assert "Could not find the worker pool with name, slug or Id Nope" in out
    assert not octo.workers


def test_unknown_policy_fails(octo, register):
    rc, out = register("--policy", "Nope")
    assert rc == 1
    assert "Could not find the machine policy named Nope" in out


def test_space_matches_trimmed_name_case_insensitively(octo, register):
    assert register("--space", "SECOND", pools=("Airflow Pool",))[0] == 0
    (worker,) = octo.workers.values()
    assert worker["SpaceId"] == "Spaces-2"


def test_unknown_space_fails_with_tentacles_message(octo, register):
    rc, out = register("--space", "Nowhere")
    assert rc == 1
    assert 'A space with name "Nowhere" could not be found.' in out


def test_server_under_a_path_prefix(octo_prefixed, register):
    assert register(server=octo_prefixed)[0] == 0
    assert octo_prefixed.proxy_log[0] == "GET /octopus/api"
    assert len(octo_prefixed.workers) == 1


def test_wrong_api_key_fails_with_401_and_never_shows_a_key(octo, register, monkeypatch):
    monkeypatch.setenv("OCTOPUS_API_KEY", "API-WRONGKEY")
    rc, out = register()
    assert rc == 1
    assert "HTTP 401" in out
    assert "API-WRONGKEY" not in out and API_KEY not in out


def test_api_key_flag_never_appears_in_output(octo, register, monkeypatch):
    monkeypatch.delenv("OCTOPUS_API_KEY")
    rc, out = register("--apiKey", API_KEY, "--policy", "missing")
    assert rc == 1
    assert API_KEY not in out


def test_closed_comms_port_warns_and_still_registers(octo, register, tmp_path, monkeypatch):
    monkeypatch.setattr(tentacle.time, "sleep", lambda s: None)
    rc, out = register("--server-comms-port", "9")  # discard port: nothing listens
    assert rc == 0
    assert "Could not connect to the server communications port 127.0.0.1:9" in out
    assert len(octo.workers) == 1


def test_unreachable_server_is_a_clear_error(register, tmp_path, octo):
    rc, out = register("--server", "http://127.0.0.1:9")
    assert rc == 1
    assert "Could not reach the Octopus Server" in out


def test_status_file_records_the_registered_worker(octo, register, tmp_path):
    register()
    status = TentacleHome(tmp_path / "home").read_status()
    assert (status["state"], status["worker_id"]) == ("registered", next(iter(octo.workers)))
    assert re.fullmatch(r"poll://[a-z0-9]{20}/", status["subscription"])
    assert API_KEY not in json.dumps(status)


def test_starting_server_503_on_root_is_retried(octo, register, monkeypatch):
    monkeypatch.setattr(tentacle.time, "sleep", lambda s: None)
    octo.control.set_faults({"fail_next": [{"count": 2, "status": 503, "method": "GET", "path_regex": "^/api$"}]})
    assert register()[0] == 0
    assert octo.log[:3] == ["GET /api"] * 3


def test_server_error_on_create_fails_with_status_and_message(octo, register):
    octo.control.set_faults({"fail_next": [{"count": 1, "status": 500, "method": "POST", "message": "boom"}]})
    rc, out = register()
    assert rc == 1
    assert "POST /api/Spaces-1/workers returned HTTP 500: boom" in out


def test_forbidden_space_fails_with_the_servers_permission_message(octo, register):
    octo.control.set_faults({"forbidden_spaces": ["Spaces-1"]})
    rc, out = register()
    assert rc == 1
    assert "HTTP 403" in out and "Missing permission" in out


def test_unwritable_home_is_a_clear_error(register, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, out = register(home=blocker / "home")
    assert rc == 1
    assert "Cannot use the tentacle home directory" in out
