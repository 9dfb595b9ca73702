"""tasks.run_state: the lease's view of another run, as the Task SDK reports it."""

from __future__ import annotations

import pytest
from airflow.sdk.api.datamodels._generated import DagRunState
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from octopus import ledger, tasks


@pytest.mark.parametrize("state", list(DagRunState))
def test_the_sdk_enum_becomes_its_plain_value(monkeypatch, state):
    monkeypatch.setattr(RuntimeTaskInstance, "get_dagrun_state", staticmethod(lambda dag_id, run_id: state))
    assert tasks.run_state("share_octopus_workers", "manual__1") == state.value


def test_a_running_holder_keeps_its_lease(monkeypatch):
    monkeypatch.setattr(
        RuntimeTaskInstance, "get_dagrun_state", staticmethod(lambda dag_id, run_id: DagRunState.RUNNING)
    )
    store = ledger.MemoryStore()
    holder = {"dag_id": "share_octopus_workers", "run_id": "scheduled__1"}
    assert ledger.claim(store, "t", ["local"], holder, tasks.run_state) is None
    met = ledger.claim(
        store, "t", ["local"], {"dag_id": "share_octopus_workers", "run_id": "backfill__2"}, tasks.run_state
    )
    assert met and "scheduled__1" in met


def test_a_run_the_sdk_cannot_find_holds_nothing(monkeypatch):
    def missing(dag_id, run_id):
        raise RuntimeError("404")

    monkeypatch.setattr(RuntimeTaskInstance, "get_dagrun_state", staticmethod(missing))
    assert tasks.run_state("share_octopus_workers", "gone") is None
