"""A rebuild without a gap in the local module, applied for real (issue 19): an instance built from an older
configuration is *outdated* (the fingerprint it keeps on its disk differs), never replaced in place; the apply starts
instance_count current instances beside it, and it goes only when named in remove_instances."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from octopus.operators import include_dir, terraform_env
from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, configure_local_cloud, stop_local_tentacles

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

SCENARIO = make_scenario(1, [LOCAL_POOL])
SCENARIO["spaces"][0]["policies"] = [{"Name": "Fast Checks", "Description": ""}]


@pytest.fixture
def runtime(monkeypatch, tmp_path, emulator):
    runtime = configure_local_cloud(monkeypatch, tmp_path, emulator)
    try:
        yield runtime
    finally:
        stop_local_tentacles(runtime)


def apply(emulator, count: int, *, policy: str = "Default Machine Policy", remove=(), action: str = "apply"):
    plan = {
        "cloud": "local",
        "prefix": "rb",
        "name_prefix": "rb-local",
        "server_url": emulator.url,
        "initial_space": {"name": "Space 001"},
        "pool_name": LOCAL_POOL,
        "instance_count": count,
        "remove_instances": list(remove),
    }
    env = {**os.environ, **terraform_env(plan, action), "TF_VAR_machine_policy_name": policy,
           "OCTOPUS_API_KEY": emulator.api_key}
    done = subprocess.run(["bash", str(include_dir() / "terraform-fleet.sh")], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def ids(result):
    return {i["name"]: i["id"] for i in result["outputs"]["instances"]}


@pytest.mark.octopus_scenario(SCENARIO)
def test_a_changed_build_input_leaves_the_old_instances_running_beside_new_ones(runtime, emulator):
    first = apply(emulator, 2)
    assert first["outputs"]["outdated_instances"] == []
    assert (runtime / "rb-local-1" / "build.fingerprint").read_text().strip() == first["outputs"]["build"]

    rebuilt = apply(emulator, 2, policy="Fast Checks")
    assert rebuilt["changes"] == {"create": 2}  # nothing replaced, nothing deleted
    assert rebuilt["outputs"]["outdated_instances"] == ["rb-local-1", "rb-local-2"]
    assert [i["name"] for i in rebuilt["outputs"]["instances"]] == [f"rb-local-{n}" for n in (1, 2, 3, 4)]
    assert {n: ids(rebuilt)[n] for n in ("rb-local-1", "rb-local-2")} == ids(first)  # the very same instances
    assert (runtime / "rb-local-1" / "tentacle.pid").exists()  # still running
    assert rebuilt["outputs"]["build"] != first["outputs"]["build"]

    again = apply(emulator, 2, policy="Fast Checks")  # an unchanged re-run keeps them, adds nothing
    assert again["changes"] == {} and again["outputs"]["outdated_instances"] == ["rb-local-1", "rb-local-2"]

    removed = apply(emulator, 2, policy="Fast Checks", remove=["rb-local-1", "rb-local-2"])
    assert removed["changes"] == {"delete": 2} and removed["removed"] == ["rb-local-1", "rb-local-2"]
    assert removed["outputs"]["outdated_instances"] == []
    assert [i["name"] for i in removed["outputs"]["instances"]] == ["rb-local-3", "rb-local-4"]
    assert not (runtime / "rb-local-1").exists() and not (runtime / "rb-local-2").exists()


@pytest.mark.octopus_scenario(SCENARIO)
def test_outdated_instances_do_not_count_toward_instance_count(runtime, emulator):
    apply(emulator, 2)
    grown = apply(emulator, 3, policy="Fast Checks")  # a new count and a new build at once
    assert grown["outputs"]["outdated_instances"] == ["rb-local-1", "rb-local-2"]
    assert len(grown["outputs"]["instances"]) == 5  # 3 current beside the 2 outdated
    shrunk = apply(emulator, 1, policy="Fast Checks")  # fewer: the highest current go, outdated stay until named
    assert [i["name"] for i in shrunk["outputs"]["instances"]] == ["rb-local-1", "rb-local-2", "rb-local-3"]
    assert shrunk["outputs"]["outdated_instances"] == ["rb-local-1", "rb-local-2"]


@pytest.mark.octopus_scenario(SCENARIO)
def test_a_dry_run_plans_the_surge_without_starting_anything(runtime, emulator):
    apply(emulator, 2)
    planned = apply(emulator, 2, policy="Fast Checks", action="plan")
    assert planned["changes"] == {"create": 2} and planned["outputs"] == {}
    assert sorted(p.name for p in runtime.iterdir()) == ["rb-local-1", "rb-local-2"]
