"""terraform-fleet.sh with the real local cloud: state keyed by deployment (prefix, cloud), and lock diagnosis.

Every test runs the operator for real (Terraform, simulated VMs registering into the emulator).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from airflow.sdk.exceptions import AirflowException

from octopus.operators import TerraformFleetOperator, terraform_env
from octopus_emulator.scenario import make_scenario
from tests.conftest import ROOT
from tests.dags.harness import LOCAL_POOL, configure_local_cloud, stop_local_tentacles
from tests.distributed.services import PostgresCluster, missing_services
from tests.operators.support import leased_store, task_context

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

SCENARIO = make_scenario(1, [LOCAL_POOL])
SPACE = "Space 001"


def plan(emulator, prefix: str, count: int) -> dict:
    return {
        "cloud": "local",
        "prefix": prefix,
        "name_prefix": f"{prefix}-local",
        "server_url": emulator.url,
        "initial_space": {"id": "Spaces-1", "name": SPACE, "pool_id": "WorkerPools-2"},
        "pool_name": LOCAL_POOL,
        "instance_count": count,
    }


def run(emulator, prefix: str, count: int = 1, *, destroy: bool = False) -> dict:
    fleet_plan, context = plan(emulator, prefix, count), task_context()
    op = TerraformFleetOperator(
        task_id="terraform_apply",
        fleet_plan=fleet_plan,
        destroy=destroy,
        ledger_store=leased_store(fleet_plan, context),
    )
    return op.execute(context)


def worker_names(emulator) -> list[str]:
    return sorted(w["Name"] for w in emulator.control.state()["workers"])


@pytest.fixture
def local_cloud(monkeypatch, tmp_path, emulator):
    runtime = configure_local_cloud(monkeypatch, tmp_path, emulator)
    try:
        yield tmp_path / "tf-state"
    finally:
        stop_local_tentacles(runtime)


@pytest.mark.octopus_scenario(SCENARIO)
def test_two_prefixes_keep_both_fleets_and_states_and_destroy_one_leaves_the_other(local_cloud, emulator):
    first = run(emulator, "team-a", 2)
    second = run(emulator, "team-b", 1)
    assert first["changes"] == {"create": 3} and second["changes"] == {"create": 2}  # fleet + instances
    assert first["outputs"]["worker_names"] == ["team-a-local-1", "team-a-local-2"]
    assert (local_cloud / "team-a/local/terraform.tfstate").is_file()
    assert (local_cloud / "team-b/local/terraform.tfstate").is_file()
    # the second deployment did not replace the first: an unchanged re-run of each is a no-op
    assert run(emulator, "team-a", 2)["changes"] == {}
    assert run(emulator, "team-b", 1)["changes"] == {}

    destroyed = run(emulator, "team-b", 1, destroy=True)
    assert destroyed["changes"] == {"delete": 2}
    assert run(emulator, "team-a", 2)["changes"] == {}, "destroying team-b touched team-a's fleet"
    state = json.loads((local_cloud / "team-a/local/terraform.tfstate").read_text())
    assert state["outputs"]["worker_names"]["value"] == ["team-a-local-1", "team-a-local-2"]


@pytest.mark.octopus_scenario(SCENARIO)
def test_legacy_per_cloud_state_moves_only_to_its_own_deployment(local_cloud, emulator, capfd):
    run(emulator, "legacy", 1)
    legacy = local_cloud / "local/terraform.tfstate"
    legacy.parent.mkdir(parents=True)
    (local_cloud / "legacy/local/terraform.tfstate").rename(legacy)  # how an earlier version kept it

    assert run(emulator, "other", 1)["changes"] == {"create": 2}  # not its state: a fleet of its own
    assert legacy.is_file(), "another deployment's legacy state must stay where it is"
    text = "".join(capfd.readouterr())
    assert "left the legacy state" in text and "'legacy-local', not 'other-local'" in text

    assert run(emulator, "legacy", 1)["changes"] == {}, "its own legacy state was not adopted"
    assert not legacy.exists() and (local_cloud / "legacy/local/terraform.tfstate").is_file()


# --------------------------------------------------------------------------------------------- pg backend
@pytest.fixture(scope="module")
def postgres():
    missing = missing_services()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.d/20-services.sh)")
    cluster = PostgresCluster(databases=("tfstate",))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pg_backend(local_cloud, monkeypatch, tmp_path, postgres):
    config = tmp_path / "backend.hcl"
    config.write_text(f'conn_str = "{postgres.url("tfstate")}?sslmode=disable"\n')
    monkeypatch.setenv("OCTOPUS_TF_BACKEND_LOCAL", "pg")
    monkeypatch.setenv("OCTOPUS_TF_BACKEND_CONFIG_LOCAL", str(config))
    monkeypatch.setenv("OCTOPUS_TF_LOCK_TIMEOUT", "1s")
    return postgres


def workspaces(postgres) -> list[str]:
    return postgres.sql("SELECT name FROM terraform_remote_state.states ORDER BY name", "tfstate").split()


@pytest.mark.octopus_scenario(SCENARIO)
def test_pg_backend_keeps_one_workspace_per_deployment(pg_backend, local_cloud, emulator, capfd):
    assert run(emulator, "team-a", 1)["changes"] == {"create": 2}
    assert run(emulator, "team-b", 1)["changes"] == {"create": 2}
    assert workspaces(pg_backend) == ["team-a", "team-b"]
    assert run(emulator, "team-a", 1, destroy=True)["changes"] == {"delete": 2}
    assert run(emulator, "team-b", 1)["changes"] == {}
    assert not list(local_cloud.glob("**/*.tfstate")), "pg state must not also be written locally"
    assert pg_backend.password not in "".join(capfd.readouterr())


@pytest.mark.octopus_scenario(SCENARIO)
def test_a_lock_left_by_a_lost_session_is_reported_with_how_to_release_it(pg_backend, emulator, capfd):
    import psycopg2

    run(emulator, "locked", 1)
    # A Terraform that hangs mid-apply (or whose worker vanished without closing its connection) holds the
    # workspace's advisory lock in its own database session: this session plays that part.
    holder = psycopg2.connect(pg_backend.url("tfstate"))
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT id FROM terraform_remote_state.states WHERE name = 'locked'")
            (row,) = cur.fetchone()
            cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (row,))
            _, pid = cur.fetchone()
        capfd.readouterr()
        with pytest.raises(AirflowException, match="non-zero exit code"):
            run(emulator, "locked", 1)
        text = "".join(capfd.readouterr())
        assert f"held by Postgres session {pid}" in text and f"lock id: pg-session-{pid}" in text
        assert f"SELECT pg_terminate_backend({pid})" in text
        assert "terraform force-unlock cannot release" in text
        assert pg_backend.password not in text

        pg_backend.sql(f"SELECT pg_terminate_backend({pid})")  # what the message says to do
    finally:
        holder.close()
    assert run(emulator, "locked", 1)["changes"] == {}, "the retry after the release found the same state"


@pytest.mark.octopus_scenario(SCENARIO)
def test_a_held_local_lock_is_reported_with_its_id_and_force_unlock(
    local_cloud, emulator, tmp_path, capfd, monkeypatch
):
    import signal
    import subprocess
    import time

    monkeypatch.setenv("OCTOPUS_TF_LOCK_TIMEOUT", "1s")
    run(emulator, "held", 1)
    state = local_cloud / "held/local/terraform.tfstate"
    copy = tmp_path / "holder"
    shutil.copytree(ROOT / "include", copy, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    module = copy / "terraform/local"
    (module / "backend_override.tf").write_text(f'terraform {{\n  backend "local" {{ path = "{state}" }}\n}}\n')
    # Another apply of this deployment, still running: it holds the state lock while a resource takes its time.
    (module / "slow.tf").write_text(
        'resource "terraform_data" "slow" {\n  provisioner "local-exec" { command = "sleep 300" }\n}\n'
    )
    tf_vars = {k: v for k, v in terraform_env(plan(emulator, "held", 1), "apply").items() if k.startswith("TF_VAR_")}
    env = {**os.environ, **tf_vars, "TF_DATA_DIR": str(copy / ".tf"), "TF_IN_AUTOMATION": "1"}
    subprocess.run(["terraform", "init", "-input=false"], cwd=module, env=env, check=True, capture_output=True)
    holder = subprocess.Popen(
        ["terraform", "apply", "-auto-approve", "-input=false", "-target=terraform_data.slow"],
        cwd=module,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    info = state.parent / ".terraform.tfstate.lock.info"
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline and holder.poll() is None:
            time.sleep(0.1)
        lock_id = json.loads(info.read_text())["ID"]
        capfd.readouterr()
        with pytest.raises(AirflowException, match="non-zero exit code"):
            run(emulator, "held", 1)
        text = "".join(capfd.readouterr())
        assert f"lock id: {lock_id}" in text
        assert f"terraform force-unlock -force {lock_id}" in text
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
