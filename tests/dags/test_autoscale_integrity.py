"""DAG integrity of ``autoscale_octopus_workers``: it imports cleanly, runs every 5 minutes one run at a time, wires
tick -> share_runs -> trigger_share, and its params give a valid scale policy and access policy."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    assert "dags/autoscale_octopus_workers.py" not in str(dagbag.import_errors), dagbag.import_errors
    return dagbag.dags["autoscale_octopus_workers"]


def defaults(dag) -> dict:
    return {name: param.value for name, param in dag.params.items()}


def test_schedule_catchup_and_one_run_at_a_time(dag):
    assert type(dag.timetable).__name__ == "CronTriggerTimetable" and "*/5 * * * *" in repr(dag.timetable)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.is_paused_upon_creation is True  # it changes production fleets: unpaused deliberately
    assert defaults(dag)["min_size"] >= 1  # never an empty pool by default (steps fail, they do not wait)
    assert "owns the count" in dag.doc_md and "octopus_workers.<prefix>.<cloud>.scaler" in dag.doc_md


def test_tasks_and_edges(dag):
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    upstream = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
    assert upstream == {"tick": [], "share_runs": ["tick"], "trigger_share": ["share_runs"]}
    trigger = dag.get_task("trigger_share")
    assert isinstance(trigger, MappedOperator) and trigger.operator_class is TriggerDagRunOperator
    kwargs = trigger.partial_kwargs
    assert kwargs["trigger_dag_id"] == "share_octopus_workers"
    assert kwargs["skip_when_already_exists"] is True  # a resumed trigger never starts a second run
    assert kwargs["logical_date"] is None
    tick = dag.get_task("tick")
    assert [o.name for o in tick.outlets] == ["octopus-shared-workers-size"]
    assert tick.retries == 0  # the next tick, 5 minutes later, is the retry


def test_the_share_dag_it_triggers_exists(dagbag):
    assert "share_octopus_workers" in dagbag.dags


def test_every_knob_of_the_rule_is_a_param_and_the_defaults_parse(dag):
    from octopus import autoscale, scaler

    knobs = set(autoscale.ScalePolicy().to_param()) - {"stale_after_seconds"}
    assert knobs <= set(dag.params), knobs - set(dag.params)
    params = defaults(dag)
    policy = scaler.scale_policy(params)
    assert policy == autoscale.parse_scale_policy({k: params[k] for k in knobs})
    access = scaler.space_policy(params)
    assert access.mode == "all" and access.deny == ()
    assert {"clouds", "name_prefix", "allowed_spaces", "denied_spaces", "dry_run", "share_conf"} <= set(dag.params)


def test_windows_and_spaces_from_the_form_reach_the_policies(dag):
    from octopus import access_policy, scaler

    params = {
        **defaults(dag),
        "windows": [{"name": "office", "days": ["mon-fri"], "start": "08:00", "end": "18:00", "min_size": 2}],
        "allowed_spaces": ["Team *"],
        "denied_spaces": ["Team Sandbox"],
    }
    policy = scaler.scale_policy(params)
    assert [w.name for w in policy.windows] == ["office"] and policy.windows[0].min_size == 2
    spaces = scaler.space_policy(params)
    assert access_policy.allows(spaces, {"Id": "Spaces-2", "Name": "Team A"})
    assert not access_policy.allows(spaces, {"Id": "Spaces-3", "Name": "Team Sandbox"})
    assert not access_policy.allows(spaces, {"Id": "Spaces-4", "Name": "Other"})


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"windows": [{"days": ["mon"], "start": "8", "end": "18:00"}]}, "start"),
        ({"denied_spaces": [""]}, "deny"),
    ],
)
def test_bad_params_fail_the_tick_naming_the_knob(dag, bad, named):
    from airflow.sdk.exceptions import AirflowFailException

    from octopus import scaler

    class Env:
        hook = store = run_state = None
        me: dict = {}
        stale_after_seconds = 900.0
        share_conf: dict = {}

    with pytest.raises(AirflowFailException, match=named):
        scaler.tick_task({"params": {**defaults(dag), "clouds": ["local"], **bad}}, conn_id="x", env=Env())
