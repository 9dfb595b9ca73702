"""One-command demo: the share DAG on the embedded local cloud against the Octopus emulator.

Starts the emulator seeded with a handful of spaces and Airflow's API server, runs
``share_octopus_workers`` through Airflow (``airflow dags test``) with ``clouds=["local"]``, reads the run's state and
summary back through the REST API v2, prints them and what each space now holds, then runs
``retire_octopus_workers`` to tear the fleet down again (``--keep`` leaves it and the emulator running until Enter).
The connection ``octopus_default`` is of type ``octopus`` (this package's connection type). Everything lives under
``.demo/`` (recreated on each run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
POOL = "Local Worker Pool TF"


def scenario(n_spaces: int) -> dict:
    names = ["Default", "Platform", "Team Alpha", "Team Beta", "Sandbox", "Team Gamma", "Team Delta", "Team Omega"]
    names += [f"Team {i:02d}" for i in range(len(names), n_spaces)]
    spaces = []
    for i, name in enumerate(names[:n_spaces]):
        pools = [] if name == "Sandbox" else [{"Name": POOL, "SortOrder": 1}]
        spaces.append({"Name": name, "IsDefault": i == 0, "pools": pools})
    return {"spaces": spaces, "health_check_delay_seconds": 1.0}


def airflow(*args: str, log: Path, env: dict[str, str]) -> int:
    with log.open("w") as out:
        return subprocess.run(  # noqa: S603
            [str(Path(sys.executable).parent / "airflow"), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RestApi:
    """Airflow's REST API v2 (the simple auth manager with every user an admin: no token needed locally)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,), **params: Any) -> Any:
        response = self.session.request(
            method, f"{self.base_url}/api/v2/{path}", json=body, params=params or None, timeout=30
        )
        if response.status_code not in ok:
            raise RuntimeError(f"{method} /api/v2/{path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def wait_healthy(self, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow api-server exited with {proc.returncode}: see {log}")
            try:
                if self.call("GET", "monitor/health")["metadatabase"]["status"] == "healthy":
                    return
            except (requests.RequestException, RuntimeError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"airflow api-server did not answer within {timeout:.0f} s: see {log}")

    def latest_result(self, dag_id: str, task_id: str = "summarize") -> tuple[Any, str]:
        """The state of the DAG's latest run and a task's return value in it (None if it pushed none)."""
        runs = self.call("GET", f"dags/{dag_id}/dagRuns", order_by="-run_after", limit=1)["dag_runs"]
        if not runs:
            return None, "no run"
        run = runs[0]
        entry = self.call(
            "GET",
            f"dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/xcomEntries/return_value",
            ok=(200, 404),
        )
        value = (entry or {}).get("value")
        return (json.loads(value) if isinstance(value, str) else value), run["state"]


def start_api_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, RestApi]:
    port = free_port()
    env = {
        **env,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603
            [str(Path(sys.executable).parent / "airflow"), "api-server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = RestApi(f"http://127.0.0.1:{port}")
    try:
        api.wait_healthy(proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, api


def stop(proc: subprocess.Popen | None) -> None:
    """Stop the API server's process group (its own session: the server and the workers it forked)."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", type=int, default=6, help="spaces to seed (one of them without the pool)")
    parser.add_argument("--workers", type=int, default=3, help="workers in the local fleet")
    parser.add_argument("--keep", action="store_true", help="keep the fleet and emulator until Enter")
    args = parser.parse_args()

    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "airflow").mkdir(parents=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from octopus.sharing import format_table
    from octopus_emulator.local_cloud import stop_tentacles
    from octopus_emulator.testing import EmulatorProcess

    emulator = EmulatorProcess(scenario=scenario(args.spaces), log_path=DEMO / "emulator.log")
    emulator.start()
    print(f"Octopus emulator on {emulator.url} (comms port {emulator.comms_port}), {args.spaces} spaces")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW_CONN_OCTOPUS_DEFAULT": json.dumps(
            {"conn_type": "octopus", "host": emulator.url, "password": emulator.api_key}
        ),
        "OCTOPUS_WORKERS_STATE_DIR": str(DEMO / "tf-state"),
        "TF_VAR_runtime_dir": str(DEMO / "runtime"),
        "TF_VAR_server_comms_port": str(emulator.comms_port),
        "TF_VAR_boot_delay_seconds": "2",
    }
    api_server = None
    try:
        print("Initialising the Airflow metadata database ...")
        if airflow("db", "migrate", log=DEMO / "db-migrate.log", env=env):
            print(f"airflow db migrate failed: see {DEMO / 'db-migrate.log'}")
            return 1
        api_server, api = start_api_server(env, DEMO / "api-server.log")
        print(f"Airflow API server on {api.base_url} (log: .demo/api-server.log)")
        conf = {"clouds": ["local"], "instance_count": {"local": args.workers}, "poll_interval_seconds": 2}
        print(f"Running share_octopus_workers with {json.dumps(conf)} (log: .demo/share.log) ...")
        airflow("dags", "test", "share_octopus_workers", "-c", json.dumps(conf), log=DEMO / "share.log", env=env)
        summary, state = api.latest_result("share_octopus_workers")
        print(f"\nshare_octopus_workers: {state}")
        if summary:
            print(format_table(summary))
        print("\nWhat each space's pool now holds (from the emulator):")
        snapshot = emulator.control.state()
        pools = {p["Id"]: p for p in snapshot["pools"] if p["Name"] == POOL}
        for space in snapshot["spaces"]:
            pool = next((p for p in pools.values() if p["SpaceId"] == space["Id"]), None)
            if pool is None:
                print(f"  {space['Name']:<12} (no {POOL!r})")
                continue
            members = [w for w in snapshot["workers"] if pool["Id"] in w["WorkerPoolIds"]]
            print(f"  {space['Name']:<12} " + ", ".join(f"{w['Name']} [{w['HealthStatus']}]" for w in members))
        print(f"\nOctopus requests: {emulator.control.counters()['by_method']}")
        if args.keep:
            input(f"\nFleet and emulator left running at {emulator.url}; press Enter to retire them ... ")
        print("\nRunning retire_octopus_workers (log: .demo/retire.log) ...")
        airflow(
            "dags",
            "test",
            "retire_octopus_workers",
            "-c",
            json.dumps({"clouds": ["local"]}),
            log=DEMO / "retire.log",
            env=env,
        )
        retired, retire_state = api.latest_result("retire_octopus_workers")
        print(
            f"retire_octopus_workers: {retire_state}; worker records left: {len(emulator.control.state()['workers'])}"
        )
        if retired:
            print(format_table(retired))
        return 0 if state == "success" and retire_state == "success" else 1
    finally:
        stop(api_server)
        stop_tentacles(DEMO / "runtime")
        emulator.close()


if __name__ == "__main__":
    sys.exit(main())
