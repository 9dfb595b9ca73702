"""DAG integrity: the files import cleanly, wire the documented tasks, and validate their params."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def share_dag(dagbag):
    return dagbag.dags["share_octopus_workers"]


@pytest.fixture(scope="module")
def retire_dag(dagbag):
    return dagbag.dags["retire_octopus_workers"]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"share_octopus_workers", "retire_octopus_workers", "autoscale_octopus_workers"}


def test_share_tasks_and_edges(share_dag):
    upstream = {t.task_id: sorted(t.upstream_task_ids) for t in share_dag.tasks}
    assert upstream == {
        "claim_deployment": [],
        "get_spaces": ["claim_deployment"],
        "drain_removed": ["get_spaces"],  # instances a lower count removes are drained before Terraform runs
        "terraform_apply": ["drain_removed", "get_spaces"],
        "wait_for_workers": ["get_spaces", "terraform_apply"],
        "spaces_to_share": ["get_spaces"],
        "share_to_space": ["spaces_to_share", "wait_for_workers"],
        # a rebuild without a gap: outdated instances are drained only once every space has the current ones
        "drain_outdated": ["get_spaces", "share_to_space", "terraform_apply", "wait_for_workers"],
        "remove_outdated": ["drain_outdated", "get_spaces"],
        # the spaces the shares were mapped over reach the summary by wiring: every index counts
        "summarize": ["get_spaces", "remove_outdated", "share_to_space", "spaces_to_share", "wait_for_workers"],
    }
    group = share_dag.get_task("terraform_apply").task_group
    for task_id in ("drain_removed", "drain_outdated", "remove_outdated"):  # per cloud, labelled in the grid
        assert share_dag.get_task(task_id).task_group is group, task_id
        assert "fleet_plan['cloud']" in share_dag.get_task(task_id).map_index_template
    assert "drain_label" in share_dag.get_task("drain_outdated").map_index_template


def test_claim_deployment_heads_both_dags_and_waits_without_a_slot(share_dag, retire_dag):
    from octopus.sensors import DeploymentLeaseSensor

    for dag in (share_dag, retire_dag):
        claim = dag.get_task("claim_deployment")
        assert isinstance(claim, DeploymentLeaseSensor) and claim.mode == "reschedule", dag.dag_id
        assert sorted(claim.upstream_task_ids) == [] and sorted(claim.downstream_task_ids) == ["get_spaces"]
        assert dag.get_task("get_spaces").upstream_task_ids == {"claim_deployment"}


def test_share_mapping(share_dag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(share_dag.get_task("share_to_space"), MappedOperator)
    group = share_dag.get_task("terraform_apply").task_group
    assert group.group_id == "fleet" and type(group).__name__ == "MappedTaskGroup"
    assert share_dag.get_task("wait_for_workers").task_group is group
    assert share_dag.get_task("wait_for_workers").mode == "reschedule"


def test_share_schedule_and_retries(share_dag):
    assert share_dag.schedule == "@daily"
    assert share_dag.catchup is False
    assert share_dag.max_active_runs == 1
    assert share_dag.dagrun_timeout is not None
    assert share_dag.default_args["retries"] >= 2
    assert share_dag.doc_md and "Re-running only failed spaces" in share_dag.doc_md
    assert share_dag.tags


def test_retire_tasks_and_edges(retire_dag):
    upstream = {t.task_id: sorted(t.upstream_task_ids) for t in retire_dag.tasks}
    # drain first: every record disabled, no step holding any, before anything is deleted or destroyed
    assert upstream["disable_records"] == ["drain_spaces", "get_fleets"]
    assert upstream["wait_for_drain"] == ["disable_records"]
    assert upstream["retire_copies"] == ["copy_spaces", "get_fleets", "wait_for_drain"]
    assert upstream["retire_initial"] == ["get_fleets", "initial_spaces", "retire_copies", "wait_for_drain"]
    assert upstream["terraform_destroy"] == ["get_spaces", "retire_initial"]
    assert upstream["summarize"] == ["get_spaces", "terraform_destroy"]
    assert retire_dag.schedule is None


def params_error(dag, conf):
    import copy

    from airflow.sdk.definitions.param import ParamsDict

    try:
        # A deep copy: ParamsDict(dag.params) shares the Param objects, and update() sets their values in place,
        # which would leak e.g. target_spaces=["Team A"] into every later DAG run of this test session.
        params = ParamsDict(copy.deepcopy(dag.params))
        params.update(conf)
        params.validate()
    except Exception as exc:  # ParamValidationError
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        ({"clouds": ["oci"]}, "oci"),
        ({"clouds": []}, "clouds"),
        ({"instance_count": {"aws": -1}}, "instance_count"),
        ({"instance_count": {"aws": "two"}}, "instance_count"),
        ({"instance_count": {"oci": 1}}, "instance_count"),
        ({"worker_pool_name": "Fixed Pool"}, "worker_pool_name"),
        ({"registration_timeout_minutes": 0}, "registration_timeout_minutes"),
        ({"wait_mode": "poke"}, "wait_mode"),
        ({"dry_run": "yes"}, "dry_run"),
    ],
)
def test_share_params_reject_bad_input(share_dag, conf, fragment):
    error = params_error(share_dag, conf)
    assert error is not None and fragment in error


def test_share_params_accept_local_run(share_dag):
    conf = {"clouds": ["local"], "instance_count": {"local": 2}, "target_spaces": ["Team A"], "dry_run": True}
    assert params_error(share_dag, conf) is None
    assert share_dag.params["target_spaces"] == [], "validating a conf must not change the DAG's defaults"


def test_share_params_accept_an_explicit_initial_space(share_dag):
    assert params_error(share_dag, {"clouds": ["local"], "initial_space": "Space 002"}) is None


def test_parsing_opens_no_network_connection(monkeypatch):
    import socket

    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    def refuse(self, *args):
        raise AssertionError(f"DAG parsing opened a connection to {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert len(bag.dag_ids) == 3
