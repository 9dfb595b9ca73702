"""Lean XCom (issue 10): each task pushes one copy of its result; a run grows by one XCom row per space."""

from __future__ import annotations

from collections import Counter

import pytest

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, local_conf, run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]


def xcom_rows(dag_run) -> list[tuple[str, str, int, int]]:
    """(task_id, key, map_index, bytes) of every XCom row of a run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return [(r.task_id, r.key, r.map_index, len(str(r.value))) for r in rows]


def shared_run(emulator, spaces: int, prefix: str):
    """A first run of a fresh deployment (its own prefix, so its own fleet) into ``spaces`` spaces."""
    emulator.control.reset(make_scenario(spaces, [LOCAL_POOL]))
    dag_run, states = run_dag("share_octopus_workers", local_conf(name_prefix=prefix))
    assert str(dag_run.state) == "success", states
    return xcom_rows(dag_run)


def test_xcom_grows_by_one_row_per_space(local_cloud, emulator, capsys):
    small, large = shared_run(emulator, 50, "small"), shared_run(emulator, 100, "large")
    per_task = Counter((task, key) for task, key, _, _ in large)
    # one row per space of share_to_space, and one per task otherwise: no inferred multiple_outputs
    assert per_task[("share_to_space", "space_result")] == 100  # 99 copies + the initial space (pruning)
    assert all(n == 1 for (task, _), n in per_task.items() if task != "share_to_space"), per_task
    assert len({(task, index) for task, _, index, _ in large if task == "share_to_space"}) == 100
    assert len(large) - len(small) == 50
    share_bytes = [size for task, _, _, size in large if task == "share_to_space"]
    with capsys.disabled():
        print(
            f"\nXCom at 100 spaces: {len(large)} rows, {sum(s for *_, s in large)} bytes; at 50: {len(small)} rows;"
            f" share_to_space rows {min(share_bytes)}-{max(share_bytes)} bytes"
        )
    # the wait pushes the fleet only (no raw records): small whatever the pool holds
    wait = [size for task, _, _, size in large if task == "wait_for_workers"]
    assert wait and max(wait) < 2000
