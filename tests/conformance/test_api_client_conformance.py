"""The official TypeScript client (@octopusdeploy/api-client, npm) against the emulator, for the calls this package
makes: list spaces (paged), worker pools, machine policies (their script RunType must be one the client's enum
knows), workers of a pool with paging, and create / update / delete a polling worker."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from octopus_emulator.scenario import make_scenario, make_worker

HERE = Path(__file__).resolve().parent
PACKAGES = ("@octopusdeploy/api-client", "@octopusdeploy/message-contracts")
POOL = "Airflow Pool"
SCENARIO = make_scenario(5, POOL, workers={1: [make_worker(f"seed-{i}") for i in range(1, 6)]})


@pytest.fixture(scope="module")
def node_client() -> Path:
    """tests/conformance/node_modules from the lock (scripts/setup.d/30-terraform-checks.sh installs it); installed
    here if missing, skipped only when the npm registry is unreachable."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed (Node 20): run scripts/setup.d/30-terraform-checks.sh")
    if not all((HERE / "node_modules" / p / "package.json").is_file() for p in PACKAGES):
        done = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=HERE,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            ping = subprocess.run(["npm", "ping"], capture_output=True, text=True, timeout=120)
            if ping.returncode != 0:
                pytest.skip(f"the npm registry is unreachable, so the TypeScript client cannot be installed: "
                            f"{ping.stderr.strip()[:200]}")
            pytest.fail(f"npm ci in {HERE} failed:\n{done.stderr[-2000:]}")
    return HERE / "conformance.cjs"


@pytest.fixture(scope="module")
def seen(node_client, emulator_process) -> dict:
    emulator_process.control.reset(SCENARIO)
    emulator_process.control.clear_requests()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "OCTOPUS_URL": emulator_process.url,
           "OCTOPUS_API_KEY": emulator_process.api_key, "SPACE_NAME": "Space 001", "POOL_NAME": POOL}
    node = shutil.which("node")
    done = subprocess.run([node, str(node_client)], cwd=HERE, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    result["requests"] = emulator_process.control.requests()
    return result


def test_client_reads_the_server_information(seen):
    assert seen["server"]["version"]


def test_client_lists_every_space_through_its_pages(seen):
    assert seen["spaces"] == [f"Space {i:03d}" for i in range(1, 6)]
    assert [p["items"] for p in seen["spacePages"]] == [2, 2, 1]
    assert {p["total"] for p in seen["spacePages"]} == {5}


def test_client_lists_worker_pools_and_machine_policies(seen):
    assert POOL in seen["pools"]
    assert [p["name"] for p in seen["policies"] if p["isDefault"]] == ["Default Machine Policy"]


def test_machine_policy_script_run_types_are_in_the_clients_enum(seen):
    assert seen["badRunTypes"] == []
    assert {r for p in seen["policies"] for r in p["runTypes"]} <= {"InheritFromDefault", "Inline", "OnlyConnectivity"}


def test_client_pages_through_the_workers_of_a_pool(seen):
    assert sorted(seen["workers"]) == [f"seed-{i}" for i in range(1, 6)]
    assert [p["items"] for p in seen["workerPages"]] == [2, 2, 1]
    assert {p["perPage"] for p in seen["workerPages"]} == {2}


def test_client_creates_updates_and_deletes_a_polling_worker(seen):
    assert seen["created"]["name"] == "conformance-1" and seen["created"]["id"].startswith("Workers-")
    assert seen["created"]["spaceId"] == "Spaces-1"
    assert seen["modified"] == {"isDisabled": True, "uri": "poll://conformance0000000002/"}
    writes = [(r["method"], r["status"]) for r in seen["requests"] if r["method"] in ("POST", "PUT", "DELETE")]
    assert writes == [("POST", 201), ("PUT", 200), ("DELETE", 200)]
    assert seen["afterDelete"] != "still there"
