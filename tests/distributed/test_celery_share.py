"""share_octopus_workers on a multi-machine Airflow (CeleryExecutor, two workers, Postgres, Redis), via REST v2.

The tests share one cluster and run in order: a 40-space share spread over both workers; a worker SIGKILLed
while it runs share tasks (its tasks are retried on the other one, then a one-worker re-run writes nothing);
a Terraform frozen mid-apply on a worker that is then lost leaves its pg state lock, and the retry on the
other worker says who holds it and how to release it. Outcomes are read from the REST API and the emulator.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from typing import Any

import psycopg2
import pytest

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, duplicate_records, space_pool_members, stop_local_tentacles, thumbprints
from tests.distributed.cluster import HEARTBEAT_TIMEOUT, DistributedAirflow
from tests.scheduler.standalone import SHARE_DAG

SPACES = 40
WORKERS = 3
TERMINAL = {"success", "failed"}
WRITES = {"POST", "PUT", "DELETE"}


def conf(prefix: str) -> dict[str, Any]:
    return {
        "clouds": ["local"],
        "instance_count": {"local": WORKERS},
        "name_prefix": prefix,
        "poll_interval_seconds": 1,
        "registration_timeout_minutes": 3,
    }


def by_task(tis: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [ti for ti in tis if ti["task_id"] == task_id]


def host_names(cluster: DistributedAirflow) -> dict[str, str]:
    return {host: name for name, host in cluster.WORKERS.items()}


def wait_finished(cluster: DistributedAirflow, run_id: str, timeout: float = 300) -> str:
    def finished() -> str | None:
        state = cluster.api.dag_run(SHARE_DAG, run_id)["state"]
        return state if state in TERMINAL else None

    return cluster.wait(finished, timeout=timeout, interval=1, what=f"run {run_id} to finish")


def assert_exact_fleet(emulator_process, prefix: str) -> list[str]:
    """Every space's pool holds exactly the fleet (the initial space's own registrations), once each."""
    state = emulator_process.control.state()
    assert duplicate_records(state) == []
    members = space_pool_members(state)
    assert len(members) == SPACES
    initial = members["Space 01"] if "Space 01" in members else members[sorted(members)[0]]
    fleet = thumbprints([w for w in initial if w["Name"].startswith(f"{prefix}-local-")])
    assert len(fleet) == WORKERS
    wrong = {space: thumbprints(records) for space, records in members.items() if thumbprints(records) != fleet}
    assert wrong == {}, f"spaces without exactly the fleet {fleet}"
    return fleet


def writes(emulator_process) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in emulator_process.control.requests() if r["method"] in WRITES]


@pytest.fixture(scope="module")
def fresh_spaces(cluster, emulator_process):
    """Reset the emulator to 40 spaces with the local pool, and stop every simulated VM: a clean cloud."""

    def reset() -> None:
        stop_local_tentacles(cluster.runtime_dir)
        emulator_process.control.clear_faults()
        emulator_process.control.reset(make_scenario(SPACES, [LOCAL_POOL]))
        emulator_process.control.clear_requests()

    return reset


def test_forty_spaces_spread_over_both_workers_end_exactly_right(cluster, emulator_process, fresh_spaces):
    fresh_spaces()
    run_id = cluster.api.trigger(SHARE_DAG, conf("dist"))
    assert wait_finished(cluster, run_id) == "success", cluster.log_tails()

    tis = cluster.api.task_instances(SHARE_DAG, run_id)
    shares = by_task(tis, "share_to_space")
    assert len(shares) == SPACES and {ti["state"] for ti in shares} == {"success"}
    hosts = {ti["hostname"] for ti in shares}
    assert set(cluster.WORKERS.values()) <= hosts, f"share_to_space ran only on {hosts}"
    assert_exact_fleet(emulator_process, "dist")


def test_a_lost_worker_is_retried_elsewhere_and_a_one_worker_rerun_writes_nothing(
    cluster, emulator_process, fresh_spaces
):
    fresh_spaces()
    cluster.restart_worker("worker-a")
    cluster.restart_worker("worker-b")
    # Slow Octopus down so share tasks are surely running when the worker dies.
    emulator_process.control.set_faults({"latency_ms": 300})
    run_id = cluster.api.trigger(SHARE_DAG, conf("lost"))
    victim_host = cluster.WORKERS["worker-a"]

    def victim_runs_shares() -> list[dict[str, Any]] | None:
        tis = cluster.api.task_instances(SHARE_DAG, run_id)
        running = [
            t for t in by_task(tis, "share_to_space") if t["state"] == "running" and t["hostname"] == victim_host
        ]
        return running if len(running) >= 2 else None

    killed = cluster.wait(victim_runs_shares, timeout=240, interval=0.3, what="worker-a running share tasks")
    cluster.components["worker-a"].kill()
    killed_at = time.monotonic()
    emulator_process.control.clear_faults()

    assert wait_finished(cluster, run_id, timeout=HEARTBEAT_TIMEOUT + 240) == "success", cluster.log_tails()
    tis = {(t["task_id"], t["map_index"]): t for t in cluster.api.task_instances(SHARE_DAG, run_id)}
    for ti in killed:
        final = tis[(ti["task_id"], ti["map_index"])]
        assert final["state"] == "success"
        assert final["try_number"] > ti["try_number"], f"{final['rendered_map_index']} was not retried"
        assert final["hostname"] == cluster.WORKERS["worker-b"]
    assert time.monotonic() - killed_at >= HEARTBEAT_TIMEOUT / 2  # retried after Airflow noticed, not before
    assert_exact_fleet(emulator_process, "lost")

    emulator_process.control.clear_requests()
    rerun = cluster.api.trigger(SHARE_DAG, conf("lost"))
    assert wait_finished(cluster, rerun) == "success", cluster.log_tails()
    hosts = {t["hostname"] for t in cluster.api.task_instances(SHARE_DAG, rerun) if t["hostname"]}
    assert hosts == {cluster.WORKERS["worker-b"]}
    apply = by_task(cluster.api.task_instances(SHARE_DAG, rerun), "terraform_apply")[0]
    assert apply["state"] == "success"
    assert writes(emulator_process) == [], "the one-worker re-run changed Octopus"
    assert_exact_fleet(emulator_process, "lost")


# ------------------------------------------------------------------------------------------- lost state lock
def terraform_processes(run_id: str) -> list[int]:
    """Terraform processes started for one DAG run (found by Airflow's context variable in their env)."""
    needle = f"AIRFLOW_CTX_DAG_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as fh:
                if fh.read().strip() != b"terraform":
                    continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def lock_holders(cur, workspace: str) -> list[int]:
    try:
        cur.execute(
            "SELECT l.pid FROM terraform_remote_state.states s JOIN pg_locks l ON l.locktype = 'advisory' "
            "AND l.granted AND l.objid = s.id::oid WHERE s.name = %s",
            (workspace,),
        )
    except psycopg2.errors.UndefinedTable:  # no Terraform has initialised the backend yet
        return []
    return [row[0] for row in cur.fetchall()]


def freeze_while_locked(cluster: DistributedAirflow, run_id: str, workspace: str, timeout: float = 180) -> list[int]:
    """SIGSTOP this run's Terraform at a moment it holds the workspace's state lock; returns the frozen pids."""
    conn = psycopg2.connect(cluster.postgres.url("tfstate"))
    conn.autocommit = True
    deadline = time.monotonic() + timeout
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                pids = terraform_processes(run_id)
                if pids:
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGSTOP)
                    held = False
                    try:
                        held = bool(lock_holders(cur, workspace))
                    finally:
                        if not held:  # not holding it yet (init, workspace select): let it step on
                            for pid in pids:
                                with contextlib.suppress(ProcessLookupError):
                                    os.kill(pid, signal.SIGCONT)
                    if held:
                        return pids
                time.sleep(0.01)
    finally:
        conn.close()
    raise AssertionError(f"never saw run {run_id}'s Terraform holding the lock of workspace {workspace}")


def test_a_lock_left_by_a_lost_apply_is_reported_with_how_to_release_it(cluster, emulator_process, fresh_spaces):
    fresh_spaces()
    cluster.restart_worker("worker-a")
    cluster.restart_worker("worker-b")
    run_id = cluster.api.trigger(SHARE_DAG, conf("locked"))
    frozen = freeze_while_locked(cluster, run_id, "locked")
    try:
        apply = by_task(cluster.api.task_instances(SHARE_DAG, run_id), "terraform_apply")[0]
        lost = host_names(cluster)[apply["hostname"]]
        survivor = next(name for name in cluster.WORKERS if name != lost)
        cluster.components[lost].kill()  # the worker is gone; its frozen Terraform keeps the pg session open

        def failed_with_lock() -> str | None:
            text = cluster.task_log(survivor, SHARE_DAG, run_id, "terraform_apply", 0)
            return text if "held by Postgres session" in text else None

        text = cluster.wait(
            failed_with_lock,
            timeout=HEARTBEAT_TIMEOUT + 180,
            interval=1,
            what=f"the retry on {survivor} to report the state lock",
        )
        found = re.search(r"lock id: pg-session-(\d+)", text)
        assert found, text[-3000:]
        holder = int(found.group(1))
        assert f"SELECT pg_terminate_backend({holder})" in text
        assert cluster.postgres.password not in text
        assert wait_finished(cluster, run_id) == "failed"

        cluster.postgres.sql(f"SELECT pg_terminate_backend({holder})")  # what the message says to do
    finally:
        for pid in frozen:  # the lost machine's Terraform never runs again
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    cluster.restart_worker(lost)
    cluster.api.clear_task_instances(
        SHARE_DAG,
        {
            "dag_run_id": run_id,
            "task_ids": ["terraform_apply"],
            "include_downstream": True,
            "only_failed": False,
            "reset_dag_runs": True,
            "dry_run": False,
        },
    )
    assert wait_finished(cluster, run_id) == "success", cluster.log_tails()
    assert_exact_fleet(emulator_process, "locked")
