"""Proof under faults and bad input: the share DAG against a misbehaving emulator (issue #6, "Faults")."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from octopus_emulator.scenario import make_scenario
from octopus_emulator.testing import EmulatorProcess
from tests.conftest import ROOT
from tests.dags.harness import (
    LOCAL_POOL,
    configure_local_cloud,
    duplicate_records,
    local_conf,
    run_dag,
    space_pool_members,
    stop_local_tentacles,
    terraform_local,
    thumbprints,
    xcom_value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]


def assert_every_space_holds_exactly_the_fleet(state, n_spaces):
    members = space_pool_members(state)
    assert len(members) == n_spaces
    initial = sorted(members)[0]
    fleet = sorted(w["Endpoint"]["Thumbprint"] for w in members[initial] if w["HealthStatus"] != "Unavailable")
    assert len(fleet) == 2
    wrong = {name: thumbprints(records) for name, records in members.items() if thumbprints(records) != fleet}
    assert wrong == {}
    assert duplicate_records(state) == []


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


#: Seeded and scheduled per request (see ``octopus_emulator/faults.py``): whether the n-th request to a method and
#: path fails does not depend on what runs concurrently, so every run meets the same faults (seed 2 gives 55 503s,
#: 25 429s and 12 dropped connections with today's requests; discovery's 16 concurrent pool reads meet all three).
#: A fault hits one request at most twice in a row and its next try passes, so two concurrent requests to the same
#: path (a space's two POSTs) meet at most four counted failures between them: under the hook's six attempts (429s
#: do not count). No timing decides anything: no token bucket, and the VMs are registered before the faults start.
SCHEDULED_FAULTS = {
    "seed": 2,
    "fail_next": [
        {"rate": 0.02, "drop": True},  # the connection reset, no answer
        {"rate": 0.10, "status": 503},
        {"rate": 0.02, "status": 503, "repeat": 2},  # twice in a row: the hook's second retry
        # the rate limit bites where requests are dense, discovery's concurrent pool reads: 429 bursts
        {"rate": 0.15, "status": 429, "retry_after": 1, "repeat": 2, "path_regex": "/workerpools/all$"},
        {"rate": 0.01, "status": 429, "retry_after": 1},
    ],
}


def test_hundred_spaces_absorb_503s_dropped_connections_and_429_bursts(local_cloud, emulator, capsys):
    emulator.control.reset(make_scenario(100, [LOCAL_POOL]))
    terraform_local("apply", server_url=emulator.url, space_name="Space 001", count=2, api_key=emulator.api_key)
    # The VMs register before the storm; the DAG's own traffic meets every fault. terraform returns once the
    # tentacles have started, not registered: their registration (which, like Tentacle's, retries only a
    # starting server's GET /api) must not meet a fault, or a VM never registers and wait_for_workers times out.
    wait_for(lambda: len(space_pool_members(emulator.control.state())["Space 001"]) == 2, 60, "2 registrations")
    emulator.control.clear_requests()
    emulator.control.set_faults(SCHEDULED_FAULTS)

    dag_run, states = run_dag("share_octopus_workers", local_conf())

    counters = emulator.control.counters()
    emulator.control.clear_faults()
    assert str(dag_run.state) == "success", states
    statuses = counters["by_status"]
    assert statuses.get("503", 0) > 0 and statuses.get("dropped", 0) > 0 and statuses.get("429", 0) > 0, statuses
    routes = counters["by_route_status"]
    pool_reads, creates = routes["GET /api/{space}/workerpools/all"], routes["POST /api/{space}/workers"]
    assert {"503", "429", "dropped"} <= set(pool_reads), pool_reads  # discovery, 16 requests in flight
    assert creates["201"] == 2 * 99 and set(creates) - {"201"}, creates  # writes met faults: no duplicate made
    assert_every_space_holds_exactly_the_fleet(emulator.control.state(), 100)
    with capsys.disabled():
        absorbed = {k: statuses[k] for k in ("503", "429", "dropped") if k in statuses}
        total = counters["total"]
        print(f"\n100-space run absorbed {sum(absorbed.values())} injected faults {absorbed} in {total} requests")


def test_share_killed_midway_then_rerun_ends_exact_with_no_duplicates(emulator, octopus_connection, tmp_path):
    fleet = {
        "cloud": "local",
        "workers": [
            {"name": f"k-{i:02d}", "thumbprint": f"{i:040X}", "uri": f"poll://{i:020d}/"} for i in range(1, 31)
        ],
    }
    emulator.control.reset(make_scenario(2, [LOCAL_POOL]))
    pool_id = next(
        p["Id"] for p in emulator.control.state()["pools"] if p["SpaceId"] == "Spaces-2" and p["Name"] == LOCAL_POOL
    )
    space = {"id": "Spaces-2", "name": "Space 002", "pools": {"local": {"pool_id": pool_id, "role": "copy"}}}
    emulator.control.set_faults({"latency_ms": 60})
    args = json.dumps({"space": space, "fleet": fleet})
    # The body share_to_space runs, in its own process so that it can be SIGKILLed like a task's.
    code = (
        "import json, sys\n"
        "from octopus.hooks import OctopusHook\n"
        "from octopus.operations import share_space\n"
        "a = json.loads(sys.argv[1])\n"
        "share_space(OctopusHook(), a['space'], [a['fleet']], prune=True, dry_run=False, parallelism=2)\n"
    )
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", code, args], cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}/plugins"}
    )
    try:
        wait_for(lambda: emulator.control.counters()["by_method"].get("POST", 0) >= 8, 60, "8 POSTs")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    emulator.control.clear_faults()
    created_before = len(emulator.control.state()["workers"])
    assert 8 <= created_before < 30

    from octopus.hooks import OctopusHook
    from octopus.operations import share_space

    result = share_space(OctopusHook(), space, [fleet], prune=True, dry_run=False)

    counts = result["clouds"]["local"]
    assert counts["added"] + counts["present"] == 30 and counts["errors"] == []
    assert counts["present"] == created_before
    state = emulator.control.state()
    assert sorted(w["Name"] for w in state["workers"]) == [w["name"] for w in fleet["workers"]]
    assert duplicate_records(state) == []


@pytest.fixture
def restartable_emulator(airflow_db, tmp_path, monkeypatch):
    emu = EmulatorProcess(state_file=True, health_check_delay=0.2)
    emu.start()
    runtime = configure_local_cloud(monkeypatch, tmp_path, emu, max_retry_seconds=60)
    try:
        yield emu
    finally:
        stop_local_tentacles(runtime)
        emu.close()


def test_emulator_restart_mid_run_completes_after_retries(restartable_emulator):
    emu = restartable_emulator
    emu.control.reset(make_scenario(30, [LOCAL_POOL]))
    terraform_local("apply", server_url=emu.url, space_name="Space 001", count=2, api_key=emu.api_key)
    emu.control.set_faults({"latency_ms": 30})
    restarted = threading.Event()

    def restart_when_sharing():
        wait_for(lambda: emu.control.counters()["by_method"].get("POST", 0) >= 10, 120, "10 POSTs")
        emu.restart()  # same ports, state kept in the state file; faults are not
        restarted.set()

    thread = threading.Thread(target=restart_when_sharing, daemon=True)
    thread.start()
    dag_run, states = run_dag("share_octopus_workers", local_conf())
    thread.join(30)

    assert restarted.is_set()
    assert str(dag_run.state) == "success", states
    assert_every_space_holds_exactly_the_fleet(emu.control.state(), 30)


# --------------------------------------------------------------------------- bad input


def test_invalid_api_key_fails_fast_without_retry_storm(local_cloud, emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTOPUS_DEFAULT",
        json.dumps({"conn_type": "http", "host": emulator.url, "password": "API-NOTTHEKEY0000000000000"}),
    )

    dag_run, states = run_dag("share_octopus_workers", local_conf(), retries=2)

    assert str(dag_run.state) == "failed"
    assert states["get_spaces"] == {"": "failed"}
    counters = emulator.control.counters()
    assert counters["by_status"] == {"401": 1}, counters  # no hook retry, no task retry
    assert states["terraform_apply"] == {"": "upstream_failed"}


def test_pool_that_exists_nowhere_names_the_pool(local_cloud, emulator, capfd):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))

    dag_run, states = run_dag("share_octopus_workers", local_conf(worker_pool_name="{cloud} Pool Nobody Made"))

    assert str(dag_run.state) == "failed"
    assert states["get_spaces"] == {"": "failed"}
    assert "No space holds the worker pool 'Local Pool Nobody Made'" in capfd.readouterr().out
    assert emulator.control.counters()["by_method"] == {"GET": 4}


def test_more_spaces_than_airflow_maps_fail_before_anything_is_built_naming_the_setting(
    local_cloud, emulator, capfd, monkeypatch
):
    emulator.control.reset(make_scenario(6, [LOCAL_POOL]))
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "5")  # 6 spaces: 5 to share into, plus the initial (prune)

    dag_run, states = run_dag("share_octopus_workers", local_conf(), retries=2)

    assert str(dag_run.state) == "failed" and states["get_spaces"] == {"": "failed"}
    assert states["terraform_apply"] == {"": "upstream_failed"}  # no fleet built for a run that cannot share it
    out = capfd.readouterr().out
    assert "6 spaces to visit, one share_to_space index each, but Airflow maps at most 5" in out
    assert "AIRFLOW__CORE__MAX_MAP_LENGTH to at least 6" in out
    assert set(emulator.control.counters()["by_method"]) == {"GET"}  # nothing written

    # without pruning the initial space is not visited: 5 indexes, exactly the limit
    dag_run, states = run_dag("share_octopus_workers", local_conf(prune_stale=False))
    assert str(dag_run.state) == "success", states
    assert len(states["share_to_space"]) == 5


def test_empty_space_list_is_a_clear_error(local_cloud, emulator, capfd):
    emulator.control.reset({"spaces": []})

    dag_run, states = run_dag("share_octopus_workers", local_conf())

    assert str(dag_run.state) == "failed" and states["get_spaces"] == {"": "failed"}
    assert "Octopus returned no spaces" in capfd.readouterr().out


def test_html_error_page_from_a_proxy_fails_only_that_space_with_a_clear_message(local_cloud, emulator, capfd):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
    emulator.control.set_faults(
        {
            "fail_next": [
                {"count": 1000, "status": 502, "html": True, "method": "POST", "path_regex": "Spaces-3/workers"}
            ]
        }
    )

    dag_run, states = run_dag("share_octopus_workers", local_conf(), retries=0)

    assert str(dag_run.state) == "failed"
    assert states["share_to_space"]["Space 003"] == "failed"
    assert states["share_to_space"]["Space 002"] == "success"
    out = capfd.readouterr().out
    assert "non-JSON body (text/html)" in out and "502" in out
    assert "<html>" not in out.split("non-JSON body")[1][:300]


@pytest.mark.parametrize(
    "conf", [{"clouds": ["oci"]}, {"instance_count": {"local": -1}}, {"clouds": ["local"], "wait_mode": "spin"}]
)
def test_bad_params_are_refused_at_trigger_time(local_cloud, emulator, conf):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        run_dag("share_octopus_workers", conf)
    assert emulator.control.counters()["total"] == 0


def test_terraform_failure_in_one_cloud_leaves_the_other_cloud_shared(local_cloud, emulator):
    emulator.control.reset(make_scenario(3, [LOCAL_POOL, "AWS Worker Pool TF"]))

    dag_run, states = run_dag("share_octopus_workers", local_conf(clouds=["aws", "local"]))

    assert str(dag_run.state) == "failed"
    assert states["terraform_apply"] == {"aws": "failed", "local": "success"}
    assert states["wait_for_workers"]["local"] == "success"
    assert states["wait_for_workers"].get("aws", states["wait_for_workers"].get("0")) == "upstream_failed"
    assert set(states["share_to_space"].values()) == {"success"}
    state = emulator.control.state()
    assert all(len(records) == 2 for records in space_pool_members(state).values())
    assert space_pool_members(state, "AWS Worker Pool TF") == {f"Space {i:03d}": [] for i in (1, 2, 3)}
    summary_failure = xcom_value(dag_run, "summarize", key="summary")
    assert summary_failure["clouds_not_ready"] == ["aws"]
