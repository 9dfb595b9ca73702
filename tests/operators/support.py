"""What a Terraform task needs from Airflow when a test runs the operator by itself: its context and its lease."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from octopus import ledger
from octopus.operators import deployment_prefix
from octopus.tasks import this_run


def task_context(task_id: str = "terraform_apply", run_id: str = "manual__2026-12-06") -> dict[str, Any]:
    return {
        "dag": SimpleNamespace(dag_id="share_octopus_workers"),
        "run_id": run_id,
        "ti": SimpleNamespace(task_id=task_id, map_index=0),
    }


def leased_store(
    fleet_plan: dict[str, Any], context: dict[str, Any], *, fleet_known: bool = True
) -> ledger.MemoryStore:
    """A ledger store in which the context's run holds the deployment (and, with ``fleet_known``, a fleet)."""
    store = ledger.MemoryStore()
    prefix, cloud = deployment_prefix(fleet_plan), fleet_plan["cloud"]
    assert ledger.claim(store, prefix, [cloud], this_run(context), lambda *_: "running") is None
    if fleet_known:
        doc = ledger.load(store, prefix, cloud)
        ledger.save(store, {**doc, "fleet": {"generation": 1, "workers": []}})
    return store
