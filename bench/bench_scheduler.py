"""Benchmark under a real scheduler (issue 11): the post's runbook and ``share_octopus_workers``, side by side.

Everything here is **end to end**: wall times of whole runs, on this machine, against the Octopus emulator with
``--latency-ms`` (default 100 ms) added to every API request.

* PostgreSQL, started by the benchmark from the distribution's packages (a throwaway cluster on a free loopback
  port, run as the system user ``octopus-pg`` when root; scripts/setup.d/20-services.sh installs both), is
  Airflow's metadata database.
* ``airflow standalone`` (scheduler, dag-processor, triggerer, api-server) with the LocalExecutor and Airflow's
  default concurrency (``parallelism`` 32, ``max_active_tasks_per_dag`` 16, heartbeats and idle sleep at their
  defaults; ``--test-tuning`` uses the scheduler suite's faster heartbeats instead).
* The post's runbook (:mod:`bench.runbook_port`) runs first against its fleet, pre-registered in Space 001, then
  the emulator is reset without any fleet and the DAG builds its own with the local Terraform cloud (simulated
  tentacles registering over the emulator's comms port). Each client: a first run, then a re-run.

Printed (markdown): the issue's table (spaces × workers | post first / re-run | DAG first / re-run | post ÷ DAG),
then per DAG run the phases (one row per task id: instances, span from the run's queue time, durations, time
queued) and where a ``share_to_space`` index's time goes (queued, process start, pre-execute, execute,
post-execute, finalize: see :data:`PARTS`), from the task instances' times and the task runner's log markers over
REST API v2, with the time Octopus was busy during the share phase (the emulator's request log).

    .venv/bin/python bench/bench_scheduler.py                     # 100 × 3 at 100 ms (about 6 minutes)
    .venv/bin/python bench/bench_scheduler.py --sizes 100x3,300x3 --json /tmp/sched.json

Nothing is asserted: the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "plugins")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench.runbook_port import RunbookPort  # noqa: E402
from octopus_emulator.local_cloud import stop_tentacles  # noqa: E402
from octopus_emulator.scenario import make_scenario, make_worker  # noqa: E402
from octopus_emulator.testing import EmulatorProcess  # noqa: E402
from tests.distributed.services import PostgresCluster  # noqa: E402
from tests.scheduler.standalone import SHARE_DAG, AirflowStandalone, StandaloneError  # noqa: E402

CLOUD = "local"
POOL_NAME = "Local Worker Pool TF"
TERMINAL = {"success", "failed"}
SHARE_TASK = "share_to_space"

#: Airflow's own defaults, restored over the scheduler suite's test tuning (tests/scheduler/standalone.py).
AIRFLOW_DEFAULTS = {
    "AIRFLOW__CORE__PARALLELISM": "32",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "2",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
}


@dataclass(frozen=True)
class Size:
    """``spaces`` spaces, each holding the pool; a fleet of ``workers``."""

    spaces: int
    workers: int

    @property
    def name_prefix(self) -> str:
        """A deployment of its own per size: its first run builds a fleet from nothing (state, ledger, VMs)."""
        return f"bench{self.spaces}x{self.workers}"

    @classmethod
    def parse(cls, text: str) -> Size:
        try:
            spaces, workers = (int(part) for part in text.lower().replace("×", "x").split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {text!r} must look like 100x3 (spaces x workers)") from None
        if spaces < 2 or workers < 1:
            raise argparse.ArgumentTypeError(f"size {text!r}: need at least 2 spaces and 1 worker")
        return cls(spaces, workers)

    def __str__(self) -> str:
        return f"{self.spaces} × {self.workers}"


def parse_sizes(text: str) -> list[Size]:
    return [Size.parse(part) for part in text.split(",") if part.strip()]


def post_scenario(size: Size) -> dict[str, Any]:
    """The post's situation: the fleet already registered (polling, Healthy) in Space 001's pool."""
    fleet = [
        make_worker(f"{size.name_prefix}-{CLOUD}-{i}", [POOL_NAME], HealthStatus="Healthy")
        for i in range(1, size.workers + 1)
    ]
    return make_scenario(size.spaces, [POOL_NAME], workers={1: fleet})


def dag_scenario(size: Size) -> dict[str, Any]:
    """The same spaces and pools, no fleet: the DAG builds it with the local cloud."""
    return make_scenario(size.spaces, [POOL_NAME])


# --------------------------------------------------------------------------- measurements


@dataclass
class RunFigures:
    client: str  # "post" or "dag"
    phase: str  # "first run" or "re-run"
    size: str
    wall: float
    requests: int
    ok: bool
    note: str = ""
    tasks: list[dict[str, Any]] = field(default_factory=list)  # DAG only: task instances (REST)
    breakdown: dict[str, Any] = field(default_factory=dict)  # DAG only: share_to_space decomposition
    octopus_busy_share: float | None = None  # DAG only: union of request intervals in the share phase


def api_requests(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return emulator.control.requests()


def run_post(emulator: EmulatorProcess, size: Size, phase: str) -> RunFigures:
    emulator.control.clear_requests()
    started = time.perf_counter()
    result = RunbookPort(emulator.url, emulator.api_key, POOL_NAME, size.workers).run()
    wall = time.perf_counter() - started
    note = f"stopped: {result.aborted}" if result.aborted else ""
    if result.post_errors and phase == "first run":
        note = (note + "; " if note else "") + f"POST errors: {dict(result.post_errors)}"
    return RunFigures("post", phase, str(size), wall, len(api_requests(emulator)), not result.aborted, note)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def dag_conf(size: Size, poll_interval: int) -> dict[str, Any]:
    return {
        "clouds": [CLOUD],
        "instance_count": {CLOUD: size.workers},
        "name_prefix": size.name_prefix,
        "poll_interval_seconds": poll_interval,
    }


def run_dag(
    airflow: AirflowStandalone,
    emulator: EmulatorProcess,
    size: Size,
    phase: str,
    *,
    poll_interval: int,
    latency_ms: float,
    timeout: float,
    log_samples: int,
) -> RunFigures:
    emulator.control.clear_requests()
    run_id = airflow.api.trigger(SHARE_DAG, dag_conf(size, poll_interval))
    run = airflow.wait(
        lambda: (lambda r: r if r["state"] in TERMINAL else None)(airflow.api.dag_run(SHARE_DAG, run_id)),
        timeout=timeout,
        what=f"DAG run {run_id} to finish",
        interval=0.5,
    )
    queued, ended = _ts(run.get("queued_at")), _ts(run.get("end_date"))
    tis = airflow.api.task_instances(SHARE_DAG, run_id)
    log = api_requests(emulator)
    figures = RunFigures(
        "dag",
        phase,
        str(size),
        (ended or time.time()) - (queued or 0.0),
        len(log),
        run["state"] == "success",
        "" if run["state"] == "success" else f"run {run['state']}: " + _failed_tasks(tis),
    )
    figures.tasks = [
        {
            "task_id": ti["task_id"],
            "map_index": ti.get("map_index", -1),
            "state": ti.get("state"),
            "try_number": ti.get("try_number"),
            "queued": _ts(ti.get("queued_when")),
            "start": _ts(ti.get("start_date")),
            "end": _ts(ti.get("end_date")),
            "duration": ti.get("duration"),
            "run_queued": queued,
        }
        for ti in tis
    ]
    shares = [t for t in figures.tasks if t["task_id"] == SHARE_TASK and t["start"] and t["end"]]
    if shares:
        window = (min(t["start"] for t in shares), max(t["end"] for t in shares))
        figures.octopus_busy_share = octopus_busy(log, window, latency_ms / 1000.0)
        figures.breakdown = share_breakdown(airflow, run_id, shares, log_samples)
    return figures


def _failed_tasks(tis: Sequence[Mapping[str, Any]]) -> str:
    bad = sorted({ti["task_id"] for ti in tis if ti.get("state") not in ("success", "skipped")})
    return ", ".join(bad) or "?"


def octopus_busy(log: Sequence[Mapping[str, Any]], window: tuple[float, float], latency: float) -> float:
    """Seconds within ``window`` during which at least one API request was in flight at the emulator.

    The emulator logs a request when it answers (``time``); it was in flight for at least the injected latency
    before that (its own handling is a few ms more, not counted).
    """
    spans = sorted((e["time"] - latency, e["time"]) for e in log if window[0] <= e["time"] <= window[1] + latency)
    busy, current_start, current_end = 0.0, None, None
    for start, end in spans:
        start = max(start, window[0])
        if current_end is None or start > current_end:
            if current_end is not None:
                busy += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        busy += current_end - current_start
    return busy


#: Parts of one task instance, from its times (REST) and the markers Airflow's task runner writes to its log.
PARTS = (
    ("queued → start", "scheduler queued it → executor started it (start_date)"),
    ("process start", "start_date → the task runner's first log line"),
    ("DAG parse", "the task runner parsing the DAG file (its own dag_file_parse_ms)"),
    ("pre-execute rest", "bundle, upstream XCom pull, rendering: the rest of the Pre Execute group"),
    ("execute", "the task's own code, its Octopus work included"),
    ("post-execute", "Post Execute group → end_date: XCom push, final state"),
    ("duration", "start_date → end_date"),
)


def share_breakdown(
    airflow: AirflowStandalone, run_id: str, shares: Sequence[Mapping[str, Any]], samples: int
) -> dict[str, Any]:
    """Where a share index's time goes (see :data:`PARTS`); logs are read for an evenly spread sample of indexes."""
    parts: dict[str, list[float]] = {name: [] for name, _ in PARTS}
    for ti in shares:
        if ti["queued"]:
            parts["queued → start"].append(ti["start"] - ti["queued"])
        parts["duration"].append(ti["end"] - ti["start"])
    picked = sorted(shares, key=lambda t: t["map_index"])
    step = max(1, len(picked) // max(1, samples))
    sampled = 0
    for ti in picked[::step][:samples]:
        marks = _log_marks(airflow, run_id, ti)
        if marks is None:
            continue
        sampled += 1
        pre, parse, pre_end, post = marks
        parts["process start"].append(pre - ti["start"])
        parts["DAG parse"].append(parse)
        parts["pre-execute rest"].append(pre_end - pre - parse)
        parts["execute"].append(post - pre_end)
        parts["post-execute"].append(ti["end"] - post)
    return {
        "indexes": len(shares),
        "sampled": sampled,
        "max at once": _max_overlap([(t["start"], t["end"]) for t in shares]),
        **{name: _stats(values) for name, values in parts.items()},
    }


def _log_marks(
    airflow: AirflowStandalone, run_id: str, ti: Mapping[str, Any]
) -> tuple[float, float, float, float] | None:
    """Start of the task runner's "Pre Execute" group, its DAG parse seconds, the group's end, "Post Execute"."""
    try:
        body = airflow.api.call(
            "GET",
            f"dags/{SHARE_DAG}/dagRuns/{run_id}/taskInstances/{SHARE_TASK}/logs/{ti['try_number'] or 1}",
            params={"map_index": ti["map_index"], "full_content": "true"},
        )
    except StandaloneError:
        return None
    pre = pre_end = post = None
    parse = 0.0
    for entry in body.get("content") or []:
        if not isinstance(entry, dict) or not entry.get("timestamp"):
            continue
        event, at = str(entry.get("event", "")), _ts(entry["timestamp"])
        if event == "::group::Pre Execute" and pre is None:
            pre = at
        elif event == "Worker startup parse complete":
            parse = float(entry.get("dag_file_parse_ms") or 0) / 1000.0
        elif event == "::group::Post Execute" and post is None:
            post = at
        elif event == "::endgroup::" and pre is not None and pre_end is None and post is None:
            pre_end = at
    if None in (pre, pre_end, post):
        return None
    return pre, parse, pre_end, post


def _max_overlap(spans: Sequence[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = best = 0
    for _, delta in edges:
        running += delta
        best = max(best, running)
    return best


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "p50": statistics.median(values), "max": max(values)}


# --------------------------------------------------------------------------- tables


def table_main(results: Sequence[RunFigures]) -> str:
    rows = [
        "| spaces × workers | post first / re-run | DAG first / re-run | post ÷ DAG |",
        "|---|---|---|---|",
    ]
    for size in dict.fromkeys(r.size for r in results):
        get = {(r.client, r.phase): r for r in results if r.size == size}
        post = [get.get(("post", p)) for p in ("first run", "re-run")]
        dag = [get.get(("dag", p)) for p in ("first run", "re-run")]

        def pair(runs):
            return " / ".join(f"{r.wall:.1f} s" + ("" if r.ok else " (failed)") if r else "–" for r in runs)

        ratio = " / ".join(
            f"{p.wall / d.wall:.1f}×" if p and d and d.wall else "–" for p, d in zip(post, dag, strict=True)
        )
        rows.append(f"| {size} | {pair(post)} | {pair(dag)} | {ratio} |")
    return "\n".join(rows)


def table_requests(results: Sequence[RunFigures]) -> str:
    rows = [
        "| spaces × workers | client | phase | wall s | API requests (all) | notes |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in results:
        rows.append(f"| {r.size} | {r.client} | {r.phase} | {r.wall:.1f} | {r.requests} | {r.note or '-'} |")
    return "\n".join(rows)


def table_phases(r: RunFigures) -> str:
    rows = [
        f"DAG {r.phase}, {r.size}: wall {r.wall:.1f} s (run queued → run ended)",
        "",
        "| task | instances | starts at s | ends at s | span s | duration mean / max s | queued → start mean s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for t in r.tasks:
        by_task.setdefault(t["task_id"], []).append(t)
    order = sorted(by_task, key=lambda k: min((t["start"] or 1e20) for t in by_task[k]))
    for task_id in order:
        tis = [t for t in by_task[task_id] if t["start"] and t["end"]]
        if not tis:
            rows.append(f"| {task_id} | {len(by_task[task_id])} | – | – | – | – | – |")
            continue
        base = tis[0]["run_queued"] or 0.0
        first, last = min(t["start"] for t in tis), max(t["end"] for t in tis)
        durations = [t["end"] - t["start"] for t in tis]
        waits = [t["start"] - t["queued"] for t in tis if t["queued"]]
        rows.append(
            f"| {task_id} | {len(by_task[task_id])} | {first - base:.1f} | {last - base:.1f} | {last - first:.1f} | "
            f"{statistics.fmean(durations):.2f} / {max(durations):.2f} | "
            f"{statistics.fmean(waits) if waits else 0:.2f} |"
        )
    if r.breakdown:
        b = r.breakdown
        rows += [
            "",
            f"`{SHARE_TASK}`: {b['indexes']} indexes, at most {b['max at once']} running at once; "
            f"Octopus busy {r.octopus_busy_share or 0:.1f} s of the share phase; "
            f"log-based parts from {b['sampled']} sampled indexes",
            "",
            "| part of one index | mean s | p50 s | max s |",
            "|---|---:|---:|---:|",
        ]
        for name, meaning in PARTS:
            s = b.get(name)
            if s:
                rows.append(f"| {name} ({meaning}) | {s['mean']:.2f} | {s['p50']:.2f} | {s['max']:.2f} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- the services


@contextlib.contextmanager
def services(args: argparse.Namespace) -> Iterator[tuple[EmulatorProcess, AirflowStandalone, Path]]:
    """Postgres, the emulator and ``airflow standalone`` (on Postgres, wired to both); all stopped after."""
    work = Path(tempfile.mkdtemp(prefix="octopus-bench-sched-"))
    runtime = work / "runtime"
    with contextlib.ExitStack() as stack:
        postgres = PostgresCluster(databases=("airflow",))
        stack.callback(postgres.stop)
        postgres.start()
        emulator = EmulatorProcess(health_check_delay=0.2, extra_args=["--max-log", "1000000"])
        stack.callback(emulator.close)
        emulator.start()
        conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key, "extra": {"timeout": 30}}
        env = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url("airflow", driver="postgresql+psycopg2"),
            "AIRFLOW_CONN_OCTOPUS_DEFAULT": json.dumps(conn),
            "OCTOPUS_WORKERS_STATE_DIR": str(work / "tf-state"),
            "TF_VAR_runtime_dir": str(runtime),
            "TF_VAR_server_comms_port": str(emulator.comms_port),
            "TF_VAR_boot_delay_seconds": "0",
            "AIRFLOW__OCTOPUS__SHARE_MODE": args.share_mode,
            **({} if args.test_tuning else AIRFLOW_DEFAULTS),
            # more spaces than Airflow maps by default (1024): the limit get_spaces names, raised
            **({"AIRFLOW__CORE__MAX_MAP_LENGTH": str(args.max_map_length)} if args.max_map_length else {}),
        }
        airflow = AirflowStandalone(work / "home", env, startup_timeout=300)
        stack.callback(lambda: stop_tentacles(runtime))
        stack.callback(airflow.stop)
        airflow.start()
        airflow.wait(
            lambda: airflow.api.call("GET", f"dags/{SHARE_DAG}", ok=(200, 404)).get("dag_id"),
            timeout=300,
            what=f"the dag-processor to register {SHARE_DAG}",
        )
        airflow.api.unpause(SHARE_DAG)
        print(
            f"  services up: postgres :{postgres.port}, emulator {emulator.url}, airflow {airflow.url} "
            f"(home {airflow.home})",
            file=sys.stderr,
            flush=True,
        )
        yield emulator, airflow, runtime


def measure_size(
    emulator: EmulatorProcess, airflow: AirflowStandalone, size: Size, args, runtime: Path
) -> list[RunFigures]:
    stop_tentacles(runtime)  # an earlier size's simulated VMs (registered with the emulator's previous state)
    faults = {"latency_ms": args.latency_ms} if args.latency_ms else {}
    results = []
    emulator.control.reset(post_scenario(size))
    emulator.control.set_faults(faults)
    for phase in ("first run", "re-run"):
        results.append(run_post(emulator, size, phase))
        print(f"  post {size} {phase}: {results[-1].wall:.1f} s", file=sys.stderr, flush=True)
    emulator.control.clear_faults()
    emulator.control.reset(dag_scenario(size))
    emulator.control.set_faults(faults)
    for phase in ("first run", "re-run"):
        results.append(
            run_dag(
                airflow,
                emulator,
                size,
                phase,
                poll_interval=args.poll_interval,
                latency_ms=args.latency_ms,
                timeout=args.run_timeout,
                log_samples=args.log_samples,
            )
        )
        print(f"  DAG {size} {phase}: {results[-1].wall:.1f} s", file=sys.stderr, flush=True)
    emulator.control.clear_faults()
    return results


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average at start {load[0]:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("100x3"), help="e.g. 100x3,300x3")
    parser.add_argument(
        "--max-map-length",
        type=int,
        default=None,
        help="Airflow's [core] max_map_length for every component (default: Airflow's, 1024); 2000x1 needs more",
    )
    parser.add_argument("--latency-ms", type=float, default=100.0, help="added to every Octopus API request")
    parser.add_argument("--poll-interval", type=int, default=5, help="the DAG's poll_interval_seconds param")
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="seconds one DAG run may take")
    parser.add_argument("--log-samples", type=int, default=20, help="share_to_space logs read per run")
    parser.add_argument("--test-tuning", action="store_true", help="the scheduler suite's fast heartbeats")
    parser.add_argument(
        "--share-mode",
        choices=("worker", "triggerer"),
        default="worker",
        help="where share_to_space indexes run ([octopus] share_mode): task processes, or the triggerer",
    )
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("bench.runbook_port").setLevel(logging.ERROR)

    report = [
        f"Machine: {machine()}",
        f"Command: bench/bench_scheduler.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"End to end, {args.latency_ms:g} ms added to every Octopus request; Airflow "
        + ("with the test suite's fast heartbeats" if args.test_tuning else "at its default concurrency")
        + f"; LocalExecutor on Postgres; DAG poll_interval_seconds={args.poll_interval}; "
        + f"share_to_space in the {args.share_mode} ([octopus] share_mode={args.share_mode}).",
    ]
    results: list[RunFigures] = []
    started = time.perf_counter()
    with services(args) as (emulator, airflow, runtime):
        for size in args.sizes:
            results += measure_size(emulator, airflow, size, args, runtime)
    report += ["", table_main(results), "", table_requests(results)]
    for r in results:
        if r.client == "dag":
            report += ["", table_phases(r)]
    report += ["", f"Benchmark took {time.perf_counter() - started:.0f} s."]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
