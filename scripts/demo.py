"""One-command demo: the share DAG on the embedded local cloud against the Octopus emulator.

Starts the emulator seeded with a handful of spaces, runs ``share_octopus_workers`` through Airflow
(``airflow dags test``) with ``clouds=["local"]``, prints the summary and what each space now holds, then runs
``retire_octopus_workers`` to tear the fleet down again (``--keep`` leaves it and the emulator running until Enter).
Everything lives under ``.demo/`` (recreated on each run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def latest_xcom(dag_id: str, task_id: str, key: str = "return_value"):
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id).order_by(DagRun.id.desc()).first()
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run.run_id, task_id=task_id, key=key, map_index=-1)
            .one_or_none()
        )
        value = None if row is None else row.value
        return (json.loads(value) if isinstance(value, str) else value), str(run.state)


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
            {"conn_type": "http", "host": emulator.url, "password": emulator.api_key}
        ),
        "OCTOPUS_WORKERS_STATE_DIR": str(DEMO / "tf-state"),
        "TF_VAR_runtime_dir": str(DEMO / "runtime"),
        "TF_VAR_server_comms_port": str(emulator.comms_port),
        "TF_VAR_boot_delay_seconds": "2",
    }
    try:
        print("Initialising the Airflow metadata database ...")
        if airflow("db", "migrate", log=DEMO / "db-migrate.log", env=env):
            print(f"airflow db migrate failed: see {DEMO / 'db-migrate.log'}")
            return 1
        conf = {"clouds": ["local"], "instance_count": {"local": args.workers}, "poll_interval_seconds": 2}
        print(f"Running share_octopus_workers with {json.dumps(conf)} (log: .demo/share.log) ...")
        airflow("dags", "test", "share_octopus_workers", "-c", json.dumps(conf), log=DEMO / "share.log", env=env)
        summary, state = latest_xcom("share_octopus_workers", "summarize")
        if summary is None:
            summary, _ = latest_xcom("share_octopus_workers", "summarize", key="summary")
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
        retired, retire_state = latest_xcom("retire_octopus_workers", "summarize")
        print(
            f"retire_octopus_workers: {retire_state}; worker records left: {len(emulator.control.state()['workers'])}"
        )
        if retired:
            print(format_table(retired))
        return 0 if state == "success" and retire_state == "success" else 1
    finally:
        stop_tentacles(DEMO / "runtime")
        emulator.close()


if __name__ == "__main__":
    sys.exit(main())
