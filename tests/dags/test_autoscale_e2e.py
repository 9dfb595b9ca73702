"""``autoscale_octopus_workers`` end to end: the real DAG under ``dag.test()`` against the emulator's lease model and
the local Terraform cloud (issue 20).

Each tick is one run of the scaler DAG. When a tick triggers ``share_octopus_workers`` (its ``trigger_share``
task creates that run, queued, with the conf the tick recorded), the test plays the scheduler's part: it runs the
share DAG with that run's conf under ``dag.test()`` and gives the triggered run the state that run ended in, so
the next tick sees what it would see under a scheduler. Simulated deployment steps run throughout: no test ends
with a step killed or failed for want of a worker.
"""

from __future__ import annotations

import pytest

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, ledgers, local_conf, run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]

SPACES = ("Space 001", "Space 002", "Space 003")
#: Test-speed knobs: no idle period, cooldown or reversal delay, so a scale-in is decided on the first idle tick.
TICK = {
    "clouds": ["local"],
    "name_prefix": "t",
    "min_size": 1,
    "max_size": 3,
    "idle_minutes": 0,
    "scale_in_cooldown_minutes": 0,
    "reversal_minutes": 0,
    "leases_per_worker": 2,
    "share_conf": {"poll_interval_seconds": 1, "registration_timeout_minutes": 2},
}


def tick(**overrides):
    dag_run, states = run_dag("autoscale_octopus_workers", {**TICK, **overrides})
    assert str(dag_run.state) == "success", states
    return dag_run, states


def tick_line(dag_run):
    from tests.dags.harness import xcom_value

    return xcom_value(dag_run, "tick")["clouds"]["local"]


def triggered_share_runs():
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "share_octopus_workers").all()
        return {r.run_id: (dict(r.conf or {}), str(r.state)) for r in runs if r.run_id.startswith("autoscale__")}


def play_scheduler(run_id):
    """Run the triggered share run's conf through ``dag.test()`` and give the triggered run its outcome."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    conf, state = triggered_share_runs()[run_id]
    assert state == "queued", state
    share_run, states = run_dag("share_octopus_workers", conf)
    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == "share_octopus_workers", DagRun.run_id == run_id).one()
        run.state = share_run.state
    return share_run, states


def size_events():
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(AssetEvent, AssetModel).join(AssetModel, AssetEvent.asset_id == AssetModel.id).all()
        return [(m.uri, dict(e.extra or {})) for e, m in rows if m.uri.endswith("/shared-workers/t/size")]


def ours(control):
    return sorted((w["SpaceId"], w["Name"], w["IsDisabled"]) for w in control.state()["workers"])


def assert_no_step_harmed(control):
    counters = control.step_counters()
    assert counters["killed"] == 0, counters
    assert counters["failed_no_worker"] == 0, counters


@pytest.fixture(autouse=True)
def no_earlier_scaler_runs(airflow_db):
    """Every test starts with no share run triggered by a scaler and no size event (they live in the database)."""
    from airflow.models.asset import AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagRun).filter(
            DagRun.dag_id == "share_octopus_workers", DagRun.run_id.like("autoscale__%")
        ).delete(synchronize_session=False)
        session.query(AssetEvent).delete(synchronize_session=False)


@pytest.fixture
def fleet(local_cloud, emulator):
    """A fleet of ``n`` local workers shared into three spaces (no other worker in the pools)."""

    def build(n):
        emulator.control.reset(make_scenario(3, [LOCAL_POOL]))
        dag_run, states = run_dag("share_octopus_workers", local_conf(instance_count={"local": n}))
        assert str(dag_run.state) == "success", states
        return emulator.control

    return build


def test_a_burst_scales_out_from_the_floor_through_the_share_pipeline(fleet):
    control = fleet(1)
    steps = [control.start_task(LOCAL_POOL, None, space=space) for space in SPACES for _ in range(2)]
    assert {s["worker_name"] for s in steps} == {"t-local-1"}  # 6 leases on the one worker; 2 per worker wanted

    dag_run, states = tick()
    line = tick_line(dag_run)
    assert line["action"] == "scale_out" and line["target"] == 3, line
    assert states["trigger_share"] == {"local": "success"}
    ((run_id, (conf, _)),) = triggered_share_runs().items()
    assert conf == {
        "poll_interval_seconds": 1,
        "registration_timeout_minutes": 2,
        "clouds": ["local"],
        "name_prefix": "t",
        "instance_count": {"local": 3},
    }
    [(uri, extra)] = size_events()
    assert extra["to"] == 3 and extra["action"] == "scale_out" and "want 3 workers" in extra["reason"]

    dag_run, states = tick()  # the share run is queued: hold, trigger nothing more
    assert tick_line(dag_run)["action"] == "hold" and states["trigger_share"] == {"": "skipped"}
    share_run, states = play_scheduler(run_id)
    assert str(share_run.state) == "success", states
    names = {name for _, name, _ in ours(control)}
    assert names == {"t-local-1", "t-local-2", "t-local-3"}
    assert len(ours(control)) == 9

    dag_run, _ = tick()  # converged: 3 ready for a demand of 3
    line = tick_line(dag_run)
    assert line["action"] == "hold" and line["size"] == 3 and line["target"] == 3, line
    assert ledgers()["octopus_workers.t.local.scaler"]["pending"] is None
    for step in steps:
        assert control.task(step["id"])["state"] == "Executing"  # the burst ran on, untouched
        control.complete_task(step["id"])
    assert_no_step_harmed(control)


def test_an_idle_instance_is_drained_then_removed_exactly(fleet):
    control = fleet(2)
    busy = next(
        t
        for t in (control.start_task(LOCAL_POOL, None, space="Space 002") for _ in range(2))
        if t["worker_name"] == "t-local-2"
    )
    for task in control.tasks(running=True):
        if task["id"] != busy["id"]:
            control.complete_task(task["id"])

    # The tick that decides the scale-in dies between recording its victim and disabling it (Octopus refuses
    # every PUT): the next tick finishes the disable before it reads, so that read counts as the drain's first.
    control.set_faults({"fail_next": [{"count": 1000, "status": 503, "method": "PUT"}]})
    dag_run, states = run_dag("autoscale_octopus_workers", TICK)
    assert states["tick"] == {"": "failed"}
    control.clear_faults()
    drain = ledgers()["octopus_workers.t.local.scaler"]["drain"]
    assert drain["victim"]["name"] == "t-local-1"  # the idle one, not the newest
    assert [d for _, n, d in ours(control) if n == "t-local-1"] == [False, False, False]

    dag_run, states = tick()
    assert tick_line(dag_run)["action"] == "hold" and states["trigger_share"] == {"": "skipped"}
    assert [d for _, n, d in ours(control) if n == "t-local-1"] == [True, True, True]
    assert [d for _, n, d in ours(control) if n == "t-local-2"] == [False, False, False]
    dag_run, states = tick()
    line = tick_line(dag_run)
    assert line["action"] == "finish_drain" and line["target"] == 1, line
    ((run_id, (conf, _)),) = triggered_share_runs().items()
    assert conf["instance_count"] == {"local": 1}

    share_run, states = play_scheduler(run_id)
    assert str(share_run.state) == "success", states
    assert {n for _, n, _ in ours(control)} == {"t-local-2"}  # exactly the victim left
    assert control.task(busy["id"])["state"] == "Executing"

    dag_run, _ = tick()
    scaler = ledgers()["octopus_workers.t.local.scaler"]
    assert scaler["drain"] is None and scaler["leaving"] == [] and scaler["target"] == 1
    assert [e["to"] for _, e in size_events()] == [1]
    control.complete_task(busy["id"])
    assert_no_step_harmed(control)


def test_failing_reads_hold_and_change_nothing(fleet):
    control = fleet(2)
    control.clear_requests()
    control.set_faults({"fail_next": [{"count": 1000, "status": 503, "path_regex": "workertaskleases"}]})
    dag_run, states = tick()
    line = tick_line(dag_run)
    assert line["action"] == "hold" and "503" in line["reason"], line
    assert states["trigger_share"] == {"": "skipped"}
    assert [r for r in control.requests() if r["method"] in ("PUT", "POST", "DELETE")] == []
    assert ledgers()["octopus_workers.t.local.scaler"]["drain"] is None
    control.clear_faults()


def test_a_space_taken_out_of_the_policy_is_drained_there_never_under_a_step(fleet):
    control = fleet(1)
    step = control.start_task(LOCAL_POOL, None, space="Space 003")
    assert step["worker_name"] == "t-local-1"
    tick(denied_spaces=["Space 003"])
    assert ("Spaces-3", "t-local-1", True) in ours(control)  # disabled there, not deleted
    tick(denied_spaces=["Space 003"])
    tick(denied_spaces=["Space 003"])
    assert ("Spaces-3", "t-local-1", True) in ours(control)  # a step still holds it: still there
    assert control.task(step["id"])["state"] == "Executing"
    control.complete_task(step["id"])
    tick(denied_spaces=["Space 003"])
    tick(denied_spaces=["Space 003"])
    assert ours(control) == [("Spaces-1", "t-local-1", False), ("Spaces-2", "t-local-1", False)]
    tick(denied_spaces=["Space 003"])
    assert "Spaces-3" not in ledgers()["octopus_workers.t.local"]["spaces"]
    assert_no_step_harmed(control)
