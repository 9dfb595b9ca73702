"""A space-sharing scenario on the emulator, and the space visits and fleet the DAG's upstream tasks would pass.

The visits and the fleet come from the package's own sync code against the emulator (``operations.discover``,
the wait's read of the initial pool and ``registration_status``), as ``get_spaces``, ``wait_for_workers`` and
``spaces_to_share`` build them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from octopus.hooks import OctopusHook
from octopus.operations import discover
from octopus.sharing import fleet_from, registration_status, spaces_to_visit
from octopus_emulator.scenario import make_scenario, make_worker, polling_endpoint

POOL = "Local Worker Pool TF"
PREFIX = "t"
FAST_RETRIES = {"retry_initial_wait": 0.01, "retry_max_wait": 0.05, "max_attempts": 3, "timeout": 30}
OLD = "t-local-old"  # a copy of an earlier fleet, ours by the ledger


def mixed_scenario(n_spaces: int = 6) -> dict[str, Any]:
    """Space 001 holds the fleet (2 workers); the others hold every case a share meets.

    002: a correct copy of t-local-1 and our stale copy ``t-local-old`` (pruned); 003: our stale copy (busy when
    the test says so) and a foreign laptop; 004: a disabled copy of t-local-2 (fixed); the rest: nothing.
    """
    fleet = [make_worker(f"t-local-{i}", [POOL], HealthStatus="Healthy") for i in (1, 2)]
    return make_scenario(
        n_spaces,
        [POOL],
        workers={
            1: fleet,
            2: [make_worker("t-local-1", [POOL]), make_worker(OLD, [POOL])],
            3: [make_worker(OLD, [POOL]), make_worker("laptop", [POOL], HealthStatus="Unavailable")],
            4: [make_worker("t-local-2", [POOL], IsDisabled=True)],
        },
    )


def connect(emulator, monkeypatch, conn_id: str = "octopus_default", **extra: Any) -> None:
    conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key, "extra": {**FAST_RETRIES, **extra}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def upstream(generation: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What ``spaces_to_share`` and ``wait_for_workers`` pass the share: the visits and the local fleet."""
    with OctopusHook() as hook:
        plan = discover(
            hook,
            clouds=["local"],
            instance_count={"local": 2},
            pool_name_template="{cloud} Worker Pool TF",
            target_spaces=None,
            name_prefix=PREFIX,
        )[0]
        initial = plan["initial_space"]
        records = hook.list_workers(initial["id"], worker_pool_id=initial["pool_id"])
    spec = {
        "expected_count": 2,
        "name_prefix": PREFIX,
        "previous": [],
        "instances": [{"name": n, "id": n} for n in ("t-local-1", "t-local-2")],
    }
    workers = fleet_from(registration_status(records, spec)["seen"])
    old_thumbprint = polling_endpoint(OLD)[1]
    fleet = {
        "cloud": "local",
        "prefix": PREFIX,
        "space_id": initial["id"],
        "space_name": initial["name"],
        "pool_id": initial["pool_id"],
        "pool_name": plan["pool_name"],
        "generation": generation,
        "workers": workers,
        "owned": [{"name": w["name"], "thumbprint": w["thumbprint"]} for w in workers]
        + [{"name": OLD, "thumbprint": old_thumbprint}],
        "dry_run": False,
    }
    return spaces_to_visit([plan], include_initial=True), fleet


def workers_state(emulator) -> list[tuple]:
    """Every worker record as (space, name, thumbprint, uri, pools, disabled): what a share leaves behind."""
    return sorted(
        (w["SpaceId"], w["Name"], w["Thumbprint"], w["Uri"], tuple(sorted(w["WorkerPoolIds"])), w["IsDisabled"])
        for w in emulator.control.state()["workers"]
    )


@pytest.fixture
def octopus(emulator, monkeypatch):
    """The emulator reset to :func:`mixed_scenario`, ``octopus_default`` pointing at it."""
    emulator.control.clear_faults()
    emulator.control.reset(mixed_scenario())
    connect(emulator, monkeypatch)
    emulator.control.clear_requests()
    return emulator
