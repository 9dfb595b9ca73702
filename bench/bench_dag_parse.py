"""DAG file parse time vs an empty DAG file's: the DAGs do no I/O and no heavy imports at parse time.

Each file is parsed in a fresh interpreter (like the dag-processor's per-file parsing), ``--repeat`` times; the
table shows the median and the overhead over an empty DAG. Run: ``.venv/bin/python bench/bench_dag_parse.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EMPTY_DAG = '''
import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def empty():
    @task
    def noop():
        pass

    noop()


empty()
'''

PROBE = r"""
import json, sys, time
import airflow  # warm: both variants pay Airflow's own import before the clock starts
from airflow.dag_processing.dagbag import DagBag
import socket
calls = []
real_connect = socket.socket.connect
def spy(self, *args):
    calls.append(repr(args))
    return real_connect(self, *args)
socket.socket.connect = spy
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "dags": sorted(bag.dag_ids), "errors": list(bag.import_errors),
                  "connects": calls}))
"""


def parse(path: Path, env: dict[str, str]) -> dict:
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty_dag.py"
        empty.write_text(EMPTY_DAG)
        env = {
            **os.environ,
            "AIRFLOW_HOME": tmp,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "PYTHONPATH": str(ROOT / "plugins"),
        }
        files = {
            "empty DAG": empty,
            "share_octopus_workers.py": ROOT / "dags" / "share_octopus_workers.py",
            "retire_octopus_workers.py": ROOT / "dags" / "retire_octopus_workers.py",
        }
        results = {}
        for label, path in files.items():
            runs = [parse(path, env) for _ in range(args.repeat)]
            errors = runs[0]["errors"]
            if errors:
                raise SystemExit(f"{label}: import errors {errors}")
            results[label] = {
                "median": statistics.median(r["seconds"] for r in runs),
                "connects": sum(len(r["connects"]) for r in runs),
            }
    base = results["empty DAG"]["median"]
    print(f"| DAG file | parse median ({args.repeat} runs) | over empty DAG | network connects |")
    print("|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['median'] * 1000:.0f} ms | {(r['median'] - base) * 1000:+.0f} ms | {r['connects']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
