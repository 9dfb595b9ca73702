"""Benchmark: list N spaces and each space's worker pools with injected server latency.

Compares :class:`octopus.hooks.OctopusHook` (one keep-alive session, ``/all`` endpoints) with naive clients that
open a new connection for every call, the way a script of ``requests.get(...)`` calls (or the seed runbook's
``Invoke-RestMethod`` loop) does. Runs against the Octopus emulator in a subprocess and prints a table; it
asserts nothing (speed goals are read from the table, not tested).

    .venv/bin/python bench/bench_hook_listing.py [--spaces 1000] [--latency-ms 20] [--threads 4] [--repeat 3]

Columns: HTTP requests (counted by the emulator), TCP connections opened by the client, wall time, and the
least time the same requests need under Octopus 2026.3's default rate limit (200 requests/minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="octopus-bench-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from octopus.hooks import OctopusHook  # noqa: E402 (imported before timing: Airflow's import takes seconds)
from octopus_emulator.scenario import make_scenario  # noqa: E402
from octopus_emulator.testing import EmulatorProcess  # noqa: E402

RATE_LIMIT_PER_MINUTE = 200


def hook_client(threads: int) -> Callable[[str, str], tuple[int, int]]:
    """The hook: spaces via /api/spaces/all, pools via /api/{space}/workerpools/all, one shared session."""

    def run(url: str, key: str) -> tuple[int, int]:
        os.environ["AIRFLOW_CONN_OCTOPUS_BENCH"] = json.dumps({"conn_type": "http", "host": url, "password": key})
        with OctopusHook("octopus_bench") as hook:
            spaces = hook.list_spaces()
            ids = [space["Id"] for space in spaces]
            if threads > 1:
                with ThreadPoolExecutor(threads) as pool:
                    pools = list(pool.map(hook.list_worker_pools, ids))
            else:
                pools = [hook.list_worker_pools(space_id) for space_id in ids]
            assert len(pools) == len(spaces)
            manager = hook.get_conn().get_adapter(url).poolmanager
            return len(spaces), sum(manager.pools[key].num_connections for key in manager.pools.keys())  # noqa: SIM118 (no __iter__)

    return run


def naive_client(paged_spaces: bool) -> Callable[[str, str], tuple[int, int]]:
    """A new connection per call (``requests.get``); spaces via /all or paged 30 at a time like the seed."""

    def run(url: str, key: str) -> tuple[int, int]:
        headers = {"X-Octopus-ApiKey": key}
        connections = 0

        def get(path: str, params: dict | None = None):
            nonlocal connections
            connections += 1
            response = requests.get(url + path, params=params, headers=headers, timeout=30)
            response.raise_for_status()
            return response.json()

        if paged_spaces:
            spaces, skip = [], 0
            while True:
                page = get("/api/spaces", {"skip": skip, "take": 30})
                spaces += page["Items"]
                skip += 30
                if len(page["Items"]) < 30:
                    break
        else:
            spaces = get("/api/spaces/all")
        for space in spaces:
            get(f"/api/{space['Id']}/workerpools/all")
        return len(spaces), connections

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", type=int, default=1000, help="number of spaces (default 1000)")
    parser.add_argument("--latency-ms", type=float, default=20, help="latency added to every API request")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows the median wall time")
    parser.add_argument("--threads", type=int, default=4, help="threads for the concurrent hook row (0: skip)")
    args = parser.parse_args()

    clients: list[tuple[str, Callable[[str, str], tuple[int, int]]]] = [
        ("OctopusHook (keep-alive, /all)", hook_client(1)),
        ("naive: new connection per call, /all", naive_client(paged_spaces=False)),
        ("naive: new connection per call, spaces paged by 30", naive_client(paged_spaces=True)),
    ]
    if args.threads > 1:
        clients.append((f"OctopusHook, {args.threads} threads sharing it", hook_client(args.threads)))

    results: dict[str, list[tuple[int, int, float]]] = {name: [] for name, _ in clients}
    with EmulatorProcess() as emulator:
        emulator.control.reset(make_scenario(args.spaces, "Airflow Pool"))
        emulator.control.set_faults({"latency_ms": args.latency_ms})
        requests.get(emulator.api_url, timeout=30).raise_for_status()  # warm the server up before timing
        for _ in range(args.repeat):  # rounds interleave the clients, so drift in machine load hits all alike
            for name, client in clients:
                emulator.control.clear_requests()
                started = time.perf_counter()
                n_spaces, connections = client(emulator.url, emulator.api_key)
                wall = time.perf_counter() - started
                assert n_spaces == args.spaces, (name, n_spaces)
                results[name].append((len(emulator.control.requests()), connections, wall))
    rows = []
    for name, runs in results.items():
        n_requests, connections, _ = runs[-1]
        wall = statistics.median(run[2] for run in runs)
        rows.append((name, n_requests, connections, wall, n_requests / RATE_LIMIT_PER_MINUTE * 60))

    print(
        f"\nList {args.spaces} spaces and each space's worker pools; {args.latency_ms:g} ms added per request; "
        f"median of {args.repeat} run(s)\n"
    )
    header = ("client", "requests", "TCP connections", "wall s", "min s at 200/min")
    widths = [max(len(header[0]), *(len(r[0]) for r in rows)), 8, 15, 8, 16]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for name, n_requests, connections, wall, floor in rows:
        cells = (name, str(n_requests), str(connections), f"{wall:.2f}", f"{floor:.0f}")
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
