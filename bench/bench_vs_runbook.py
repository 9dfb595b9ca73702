"""Benchmark: the seed post's runbook (faithful port) against this package, at scale, on the Octopus emulator.

Three clients do the same work: make every space that holds the pool "Local Worker Pool TF" hold the fleet that
registered itself in the first such space (the initial space):

1. ``port``: :mod:`bench.runbook_port`, the post's three API steps (paging by ``skip``, per-space look-ups, one
   POST per worker per space, a new connection per call, errors on POSTs swallowed);
2. ``package``: ``discover`` + a read of the initial pool (what ``wait_for_workers`` does) + ``share_space`` per
   space (remaining spaces, and the initial one because pruning is on, as in the DAG), through one
   :class:`~octopus.hooks.OctopusHook` shared by a thread pool of ``--space-parallelism`` spaces (like mapped
   tasks running side by side; each space's writes use ``share_space``'s own parallelism, 8);
3. ``dag``: ``share_octopus_workers`` with ``dag.test()`` (tasks run one at a time), building a real local fleet
   of simulated tentacles with Terraform.

Sections (each prints a markdown table; ``--sections`` picks some):

* ``count``: requests of a first run and of a steady-state re-run at 0 ms latency, for ``--sizes``, against the
  API minimum (see :func:`api_minimum`), and shares lost;
* ``latency``: wall time of first run and re-run with ``--latency-ms`` added to every request, ``--latency-size``;
* ``rate``: under the server's rate limit (``--rate-limit`` per minute, ``--rate-burst``; Octopus 2026.3's
  default is 200/200): requests, 429s, elapsed against requests ÷ limit, shares lost; the package is run
  without and with client-side pacing (connection extra ``max_requests_per_minute``);
* ``dag``: requests and wall time of the whole DAG, first run and re-run, for ``--dag-sizes``.

    .venv/bin/python bench/bench_vs_runbook.py                       # everything (about 12 minutes)
    .venv/bin/python bench/bench_vs_runbook.py --sections count --sizes 10x3,100x20

Nothing is asserted: the targets are judged from the tables (docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "plugins")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
_HOME = Path(os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="octopus-bench-airflow-")))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME}/airflow.db")
os.environ.setdefault("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(_HOME / "logs"))

import requests  # noqa: E402

from bench.runbook_port import RunbookPort  # noqa: E402
from octopus.exceptions import OctopusError  # noqa: E402
from octopus.hooks import OctopusHook  # noqa: E402 (imported before timing: Airflow's import takes seconds)
from octopus.operations import discover, parallel_map, share_space  # noqa: E402
from octopus.sharing import fleet_from, registration_status, spaces_to_visit  # noqa: E402
from octopus_emulator.local_cloud import stop_tentacles  # noqa: E402
from octopus_emulator.scenario import make_scenario, make_worker  # noqa: E402
from octopus_emulator.testing import EmulatorProcess  # noqa: E402

CLOUD = "local"
POOL_NAME = "Local Worker Pool TF"  # "{cloud} Worker Pool TF" for the local cloud, the post's naming
NAME_PREFIX = "bench"  # fleet workers are named bench-local-1, bench-local-2, ...
CONN_ENV = "AIRFLOW_CONN_OCTOPUS_DEFAULT"  # the DAG's connection; the package column uses it too
WRITE_PARALLELISM = 8  # share_space's default


# --------------------------------------------------------------------------- sizes, scenario, minimum


@dataclass(frozen=True)
class Size:
    """``spaces`` spaces, every one holding the pool; a fleet of ``workers`` in the first."""

    spaces: int
    workers: int

    @classmethod
    def parse(cls, text: str) -> Size:
        """``"100x20"`` → 100 spaces × 20 workers."""
        try:
            spaces, workers = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {text!r} must look like 100x20 (spaces x workers)") from None
        if spaces < 2 or workers < 1:
            raise argparse.ArgumentTypeError(f"size {text!r}: need at least 2 spaces and 1 worker")
        return cls(spaces, workers)

    def __str__(self) -> str:
        return f"{self.spaces} × {self.workers}"

    @property
    def shares(self) -> int:
        """Worker records the remaining spaces must end up holding."""
        return (self.spaces - 1) * self.workers


def parse_sizes(text: str) -> list[Size]:
    return [Size.parse(part) for part in text.split(",") if part.strip()]


def api_minimum(size: Size, *, rerun: bool) -> int:
    """Fewest requests that do the work safely (every space holds the pool, the fleet fits one page).

    Discovery: 1 list of spaces (``/spaces/all``) + 1 pools list per space. Then 1 read of the initial pool's
    members (the fleet), and 1 read of the initial space by the task that prunes it (every write rests on a
    read of its own task try: reusing the wait's read could revert a worker re-registered since). Per remaining
    space: 1 read of its workers (needed to be idempotent); on a first run
    also 1 machine-policy lookup and 1 POST per worker; on a steady-state re-run nothing more.
    """
    discovery = 1 + size.spaces
    per_space = 1 if rerun else 2 + size.workers
    return discovery + 1 + 1 + (size.spaces - 1) * per_space


def fleet_records(workers: int) -> list[dict[str, Any]]:
    """The registered fleet as scenario workers (polling, Healthy) of the initial space's pool."""
    return [
        make_worker(f"{NAME_PREFIX}-{CLOUD}-{i}", [POOL_NAME], HealthStatus="Healthy") for i in range(1, workers + 1)
    ]


def scenario(size: Size, *, with_fleet: bool = True) -> dict[str, Any]:
    """``size.spaces`` spaces with the pool; the fleet already registered in Space 001 unless ``with_fleet``."""
    workers = {1: fleet_records(size.workers)} if with_fleet else None
    return make_scenario(size.spaces, [POOL_NAME], workers=workers)


def shares_present(state: dict[str, Any], initial_space: str = "Spaces-1") -> tuple[int, int]:
    """From an emulator state dump: (fleet records in the remaining spaces' pools, fleet size).

    A share is a (remaining space, fleet thumbprint) pair held by a record in that space's pool; duplicates count
    once, so the number is comparable with :attr:`Size.shares`.
    """
    pools = {p["Id"]: p["SpaceId"] for p in state["pools"] if p["Name"] == POOL_NAME}
    fleet = {
        (w["Endpoint"].get("Thumbprint") or "").upper()
        for w in state["workers"]
        if w["SpaceId"] == initial_space and any(p in pools for p in w["WorkerPoolIds"])
    }
    held = {
        (w["SpaceId"], (w["Endpoint"].get("Thumbprint") or "").upper())
        for w in state["workers"]
        if w["SpaceId"] != initial_space and any(pools.get(p) == w["SpaceId"] for p in w["WorkerPoolIds"])
    }
    return sum(1 for _, tp in held if tp in fleet), len(fleet)


# --------------------------------------------------------------------------- the clients


@dataclass
class Outcome:
    """One client run: what it reports about itself (the emulator's counters are the authority on requests)."""

    requests: int  # as counted by the client
    failed: str = ""  # why the run stopped, or what it reported as failed
    retries: int = 0


def run_port(emulator: EmulatorProcess, size: Size) -> Outcome:
    """The post's runbook, steps 1, 3 and 4."""
    result = RunbookPort(emulator.url, emulator.api_key, POOL_NAME, size.workers).run()
    notes = []
    if result.aborted:
        step = result.aborted.split(" (", 1)[0]
        status = f"HTTP {result.aborted_status} to a GET" if result.aborted_status else result.aborted[:60]
        notes.append(f"runbook stopped in {step}: {status}")
    if result.post_errors:
        notes.append("POST errors swallowed: " + ", ".join(f"{n}× {s}" for s, n in sorted(result.post_errors.items())))
    return Outcome(result.requests, "; ".join(notes))


def set_connection(emulator: EmulatorProcess, extra: dict[str, Any] | None = None) -> None:
    """Point ``octopus_default`` at the emulator (env JSON, as a deployment would)."""
    conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key, "extra": extra or {}}
    os.environ[CONN_ENV] = json.dumps(conn)


def run_package(
    emulator: EmulatorProcess,
    size: Size,
    *,
    space_parallelism: int,
    rate_per_minute: float | None = None,
) -> Outcome:
    """discover → read the initial pool (the wait) → share_space per space on a thread pool, one shared hook."""
    from requests.adapters import HTTPAdapter

    set_connection(emulator, {"max_requests_per_minute": rate_per_minute} if rate_per_minute else {})
    # Room for every concurrent request on one keep-alive pool (urllib3 keeps 10 by default).
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=space_parallelism * WRITE_PARALLELISM)
    with OctopusHook(adapter=adapter) as hook:
        try:
            plan = discover(
                hook,
                clouds=[CLOUD],
                instance_count={CLOUD: size.workers},
                pool_name_template="{cloud} Worker Pool TF",
                target_spaces=None,
                name_prefix=NAME_PREFIX,
                parallelism=space_parallelism,
            )[0]
            initial = plan["initial_space"]
            records = hook.list_workers(initial["id"], worker_pool_id=initial["pool_id"])
            names = [f"{NAME_PREFIX}-{CLOUD}-{i}" for i in range(1, size.workers + 1)]
            spec = {
                "expected_count": size.workers,
                "name_prefix": plan["name_prefix"],
                "previous": [],
                "instances": [{"name": n, "id": n} for n in names],
            }  # the inventory Terraform would report
            seen = registration_status(records, spec)["seen"]
        except OctopusError as exc:
            return Outcome(hook.request_count, f"discovery failed: {str(exc)[:80]}", len(hook.retry_events))
        if len(seen["workers"]) < size.workers:
            return Outcome(hook.request_count, f"only {len(seen['workers'])} workers registered")
        workers = fleet_from(seen)
        fleet = {
            "cloud": CLOUD,
            "space_id": initial["id"],
            "pool_id": initial["pool_id"],
            "workers": workers,
            "owned": [{"name": w["name"], "thumbprint": w["thumbprint"]} for w in workers],  # the ledger's proof
        }

        def share(space: dict[str, Any]) -> int:
            try:
                result = share_space(hook, space, [fleet], prune=True, dry_run=False)
            except OctopusError:
                return 1
            return sum(1 for counts in result["clouds"].values() if counts.get("failed"))

        visits = spaces_to_visit([plan], include_initial=True)
        failed = sum(parallel_map(share, visits, space_parallelism))
        return Outcome(hook.request_count, f"{failed} space(s) failed" if failed else "", len(hook.retry_events))


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    client: str
    size: Size
    phase: str  # "first run" or "re-run"
    requests: int  # counted by the emulator (429 answers included)
    rejected_429: int
    wall: float
    shares: int  # fleet records held by the remaining spaces afterwards
    note: str = ""
    by_route: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.size.shares - self.shares


def measure(
    emulator: EmulatorProcess,
    client: str,
    run: Callable[[], Outcome],
    size: Size,
    phase: str,
    faults: dict[str, Any] | None = None,
) -> Measurement:
    """Run ``run`` once against the emulator's current state with ``faults`` (which also refills its rate bucket)."""
    control = emulator.control
    control.set_faults(faults or {})
    control.clear_requests()
    started = time.perf_counter()
    outcome = run()
    wall = time.perf_counter() - started
    control.clear_faults()
    counters = control.counters()
    held, _ = shares_present(control.state())
    return Measurement(
        client=client,
        size=size,
        phase=phase,
        requests=counters["total"],
        rejected_429=counters["by_status"].get("429", 0),
        wall=wall,
        shares=held,
        note=outcome.failed + (f"; {outcome.retries} retries" if outcome.retries else ""),
        by_route=counters["by_route"],
    )


def clients(emulator: EmulatorProcess, space_parallelism: int) -> dict[str, Callable[[Size], Callable[[], Outcome]]]:
    return {
        "port": lambda size: lambda: run_port(emulator, size),
        "package": lambda size: lambda: run_package(emulator, size, space_parallelism=space_parallelism),
    }


def first_and_rerun(
    emulator: EmulatorProcess,
    client: str,
    run: Callable[[], Outcome],
    size: Size,
    faults: dict[str, Any] | None = None,
) -> tuple[Measurement, Measurement]:
    """A first run from a fresh scenario, then a re-run on the state it left."""
    emulator.control.reset(scenario(size))
    first = measure(emulator, client, run, size, "first run", faults)
    again = measure(emulator, client, run, size, "re-run", faults)
    return first, again


# --------------------------------------------------------------------------- sections


def section_count(emulator: EmulatorProcess, sizes: Sequence[Size], space_parallelism: int) -> list[Measurement]:
    results = []
    for size in sizes:
        for name, make in clients(emulator, space_parallelism).items():
            results += first_and_rerun(emulator, name, make(size), size)
            print(f"  count {size} {name}: done", file=sys.stderr, flush=True)
    return results


def table_count(results: Sequence[Measurement]) -> str:
    rows = [
        "| spaces × workers | client | first run: requests | API minimum | ÷ minimum | re-run: requests | "
        "API minimum | re-run beyond discovery (target: = spaces) | shares lost (first / re-run) | "
        "wall s (first / re-run) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for first, again in zip(results[::2], results[1::2], strict=True):
        size = first.size
        min_first, min_again = api_minimum(size, rerun=False), api_minimum(size, rerun=True)
        beyond = again.requests - (1 + size.spaces)
        rows.append(
            f"| {size} | {first.client} | {first.requests} | {min_first} | {first.requests / min_first:.2f} | "
            f"{again.requests} | {min_again} | {beyond} | {first.lost} / {again.lost} | "
            f"{first.wall:.1f} / {again.wall:.1f} |"
        )
    return "\n".join(rows)


def section_latency(
    emulator: EmulatorProcess, size: Size, latency_ms: float, space_parallelism: int
) -> list[Measurement]:
    runs = {name: make(size) for name, make in clients(emulator, space_parallelism).items()}
    # Where the speed comes from: the same logic with one space at a time (its writes still go 8 at a time).
    runs["package, 1 space at a time"] = lambda: run_package(emulator, size, space_parallelism=1)
    results = []
    for name, run in runs.items():
        results += first_and_rerun(emulator, name, run, size, {"latency_ms": latency_ms})
        print(f"  latency {size} {name}: done", file=sys.stderr, flush=True)
    return results


def table_latency(results: Sequence[Measurement]) -> str:
    by = {(m.client, m.phase): m for m in results}
    rows = [
        "| client | phase | requests | wall s | port ÷ this (speed-up) | shares lost |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in results:
        port = by.get(("port", m.phase))
        speedup = f"{port.wall / m.wall:.1f}×" if port else "-"
        rows.append(f"| {m.client} | {m.phase} | {m.requests} | {m.wall:.1f} | {speedup} | {m.lost} |")
    return "\n".join(rows)


def section_rate(
    emulator: EmulatorProcess, size: Size, per_minute: float, burst: float, space_parallelism: int
) -> list[Measurement]:
    faults = {"rate_limit": {"per_minute": per_minute, "burst": burst}}
    runs: dict[str, Callable[[], Outcome]] = {
        "port": lambda: run_port(emulator, size),
        "package, no pacing (429 + Retry-After retries)": lambda: run_package(
            emulator, size, space_parallelism=space_parallelism
        ),
        f"package, paced at {per_minute:g}/min": lambda: run_package(
            emulator, size, space_parallelism=space_parallelism, rate_per_minute=per_minute
        ),
    }
    results = []
    for name, run in runs.items():
        emulator.control.reset(scenario(size))
        results.append(measure(emulator, name, run, size, "first run", faults))
        print(f"  rate {size} {name}: done", file=sys.stderr, flush=True)
    return results


def table_rate(results: Sequence[Measurement], per_minute: float) -> str:
    """Elapsed time against accepted requests ÷ limit (429 answers are not work done)."""
    rows = [
        "| client | requests sent | 429 answers | accepted | elapsed s | accepted ÷ limit, s | elapsed ÷ that | "
        "shares lost | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in results:
        accepted = m.requests - m.rejected_429
        floor = accepted / per_minute * 60
        rows.append(
            f"| {m.client} | {m.requests} | {m.rejected_429} | {accepted} | {m.wall:.1f} | {floor:.1f} | "
            f"{m.wall / floor:.2f} | {m.lost} of {m.size.shares} | {m.note or '-'} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- the whole DAG


@contextlib.contextmanager
def local_cloud(emulator: EmulatorProcess) -> Iterator[Path]:
    """The local Terraform cloud wired to the emulator (as tests/dags/conftest.py does); VMs stopped after."""
    work = Path(tempfile.mkdtemp(prefix="octopus-bench-cloud-"))
    runtime = work / "runtime"
    env = {
        "OCTOPUS_WORKERS_STATE_DIR": str(work / "tf-state"),
        "TF_VAR_runtime_dir": str(runtime),
        "TF_VAR_server_comms_port": str(emulator.comms_port),
        "TF_VAR_boot_delay_seconds": "0",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield runtime
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop_tentacles(runtime)


_DB_READY = False


def load_share_dag():
    """The share DAG with task retries off (``dag.test`` would wait out real retry delays)."""
    global _DB_READY
    from airflow.dag_processing.dagbag import DagBag

    if not _DB_READY:
        from airflow.utils.db import resetdb

        resetdb()
        _DB_READY = True
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags["share_octopus_workers"]
    for task in dag.tasks:
        if hasattr(task, "partial_kwargs"):
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    return dag


def dag_conf(size: Size) -> dict[str, Any]:
    return {
        "clouds": [CLOUD],
        "instance_count": {CLOUD: size.workers},
        "poll_interval_seconds": 1,
        "registration_timeout_minutes": 5,
        "name_prefix": NAME_PREFIX,
    }


def run_dag(size: Size) -> Outcome:
    dag = load_share_dag()
    dag_run = dag.test(run_conf=dag_conf(size))
    state = str(dag_run.state)
    return Outcome(0, "" if state == "success" else f"DAG run {state}")


def section_dag(emulator: EmulatorProcess, sizes: Sequence[Size], latency_ms: float = 0.0) -> list[Measurement]:
    results = []
    for size in sizes:
        emulator.control.reset(scenario(size, with_fleet=False))
        with local_cloud(emulator):
            set_connection(emulator, {"timeout": 30})
            for phase in ("first run", "re-run"):
                faults = {"latency_ms": latency_ms} if latency_ms else None
                measured = measure(emulator, "dag", lambda size=size: run_dag(size), size, phase, faults)
                measured.by_route["registration"] = tentacle_requests(emulator)
                results.append(measured)
        print(f"  dag {size}: done", file=sys.stderr, flush=True)
    return results


def tentacle_requests(emulator: EmulatorProcess) -> int:
    """Requests of the last run that came from tentacles registering (see :func:`is_registration`)."""
    return sum(1 for entry in emulator.control.requests() if is_registration(entry))


def is_registration(entry: dict[str, Any]) -> bool:
    """A request only ``register-worker`` makes: the root, users, certificate, the paged (not ``/all``) lists of
    pools and policies, workers by ``name``, and POSTs into the initial space (the DAG never POSTs there)."""
    path, query, method = entry["path"].lower(), (entry.get("query") or "").lower(), entry["method"]
    if path == "/api" or path.startswith(("/api/users/", "/api/configuration/")):
        return True
    if path.count("/") == 2 and path.startswith("/api/spaces-"):
        return True  # GET /api/{spaceId}: the space home document
    if method == "GET" and path.endswith(("/workerpools", "/machinepolicies")):
        return True
    if method == "GET" and path.endswith("/workers") and "name=" in query:
        return True
    return method == "POST" and path.endswith("/workers") and entry.get("space_id") == "Spaces-1"


def table_dag(results: Sequence[Measurement]) -> str:
    rows = [
        "| spaces × workers | phase | requests (all) | of which tentacles registering | DAG's own | API minimum | "
        "÷ minimum | wall s | shares lost | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in results:
        reg = m.by_route.get("registration", 0)
        own = m.requests - reg
        minimum = api_minimum(m.size, rerun=m.phase == "re-run")
        rows.append(
            f"| {m.size} | {m.phase} | {m.requests} | {reg} | {own} | {minimum} | {own / minimum:.2f} | "
            f"{m.wall:.1f} | {m.lost} | {m.note or '-'} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- main


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average at start {load[0]:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="count,latency,rate,dag", help="comma-separated subset to run")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10x3,10x20,100x3,100x20,500x3,500x20"))
    parser.add_argument("--latency-ms", type=float, default=100.0, help="added to every request (latency section)")
    parser.add_argument("--latency-size", type=Size.parse, default=Size(100, 20))
    parser.add_argument("--rate-limit", type=float, default=200.0, help="server limit, requests per minute")
    parser.add_argument("--rate-burst", type=float, default=200.0, help="server bucket size")
    parser.add_argument("--rate-size", type=Size.parse, default=Size(50, 3))
    parser.add_argument("--dag-sizes", type=parse_sizes, default=parse_sizes("10x3,100x3"))
    parser.add_argument("--space-parallelism", type=int, default=8, help="spaces shared at once (package)")
    parser.add_argument("--dag-latency-ms", type=float, default=0.0, help="added to every request (dag section)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--verbose", action="store_true", help="show the clients' warnings (every swallowed POST)")
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"count", "latency", "rate", "dag"}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}; choose from count, latency, rate, dag")

    if not args.verbose:  # the port warns once per failed POST, the hook once per retry: thousands of lines
        logging.getLogger().setLevel(logging.ERROR)
        for name in ("bench.runbook_port", "airflow.task.hooks", "octopus"):
            logging.getLogger(name).setLevel(logging.ERROR)
    report = [f"Machine: {machine()}", f"Command: bench/bench_vs_runbook.py {' '.join(argv or sys.argv[1:])}"]
    everything: list[Measurement] = []
    started = time.perf_counter()
    # Health checks would turn the copies (no tentacle behind them) Unavailable mid-run; keep them out of the way.
    with EmulatorProcess(health_check_delay=3600) as emulator:
        requests.get(emulator.api_url, timeout=30).raise_for_status()  # warm the server up
        if "count" in sections:
            results = section_count(emulator, args.sizes, args.space_parallelism)
            everything += results
            report += ["### Requests at 0 ms latency (first run from scratch, then a steady-state re-run)"]
            report += [table_count(results)]
        if "latency" in sections:
            results = section_latency(emulator, args.latency_size, args.latency_ms, args.space_parallelism)
            everything += results
            report += [f"### Wall time, {args.latency_size}, {args.latency_ms:g} ms added per request"]
            report += [table_latency(results)]
        if "rate" in sections:
            results = section_rate(emulator, args.rate_size, args.rate_limit, args.rate_burst, args.space_parallelism)
            everything += results
            report += [
                f"### Under a rate limit of {args.rate_limit:g}/min (burst {args.rate_burst:g}), "
                f"{args.rate_size}, first run",
                table_rate(results, args.rate_limit),
            ]
        if "dag" in sections:
            results = section_dag(emulator, args.dag_sizes, args.dag_latency_ms)
            everything += results
            report += [
                f"### The whole DAG (dag.test: tasks one at a time; {args.dag_latency_ms:g} ms added per request)",
                table_dag(results),
            ]
    report += [f"Total benchmark time: {time.perf_counter() - started:.0f} s"]
    text = "\n\n".join(report) + "\n"
    print("\n" + text, flush=True)  # after the runs: dag.test logs to stdout
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(
            json.dumps(
                [{**m.__dict__, "size": str(m.size), "lost": m.lost} for m in everything], indent=1, default=str
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
