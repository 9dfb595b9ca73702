"""OctopusWorkersRegisteredSensor against the emulator: the exact fleet from the inventory, recorded in the ledger."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout, TaskDeferred

from octopus import ledger
from octopus.sensors import OctopusWorkersRegisteredSensor
from octopus.triggers import OctopusWorkersRegisteredTrigger
from octopus_emulator.scenario import make_scenario, make_worker

POOL = "Local Worker Pool TF"
FLEET_PLAN = {
    "cloud": "local",
    "prefix": "t",
    "pool_name": POOL,
    "instance_count": 2,
    "name_prefix": "t-local",
    "initial_space": {"id": "Spaces-1", "name": "Space 001", "pool_id": None},
}
CONTEXT = {"dag": SimpleNamespace(dag_id="share_octopus_workers"), "run_id": "manual__1"}


def inventory(*names, ids=None):
    ids = ids or [f"id-{n}" for n in names]
    return {"cloud": "local", "outputs": {"instances": [{"name": n, "id": i} for n, i in zip(names, ids, strict=True)]}}


@pytest.fixture
def seeded(emulator, monkeypatch):
    """One space whose pool holds a live fleet worker, a stale record and a look-alike; returns the fleet plan."""
    workers = [
        make_worker("t-local-1", pools=[POOL], HealthStatus="Healthy"),
        make_worker("t-local-2", pools=[POOL], HealthStatus="Unavailable"),
        make_worker("t-local-99", pools=[POOL], HealthStatus="Healthy"),
    ]
    emulator.control.reset(make_scenario(1, [POOL], workers={1: workers}))
    conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
    pool_id = next(p["Id"] for p in emulator.control.state()["pools"] if p["Name"] == POOL)
    return {**FLEET_PLAN, "initial_space": {**FLEET_PLAN["initial_space"], "pool_id": pool_id}}


def seeded_key(_plan):
    """The API key of the connection the ``seeded`` fixture configures: what seals the evidence."""
    return json.loads(os.environ["AIRFLOW_CONN_OCTOPUS_DEFAULT"])["password"]


def sensor(plan, store=None, **kwargs):
    kwargs.setdefault("terraform_output", inventory("t-local-1", "t-local-2"))
    return OctopusWorkersRegisteredSensor(
        task_id="wait_for_workers", fleet_plan=plan, ledger_store=store or ledger.MemoryStore(), **kwargs
    )


class TestSensor:
    def test_poke_not_done_until_every_inventory_instance_is_live(self, seeded):
        task = sensor(seeded)
        assert task.poke(CONTEXT).is_done is False
        assert task._last_seen["waiting"] == ["t-local-2"]

    def test_look_alike_outside_the_inventory_is_suspicious_and_never_in_the_fleet(self, seeded):
        task = sensor({**seeded, "instance_count": 1}, terraform_output=inventory("t-local-1"))
        result = task.poke(CONTEXT)
        assert result.is_done is True
        assert [w["name"] for w in result.xcom_value["workers"]] == ["t-local-1"]
        assert [s["name"] for s in task._last_seen["suspicious"]] == ["t-local-2", "t-local-99"]

    def test_done_records_the_fleet_as_a_new_generation_owned_from_now_on(self, seeded):
        store = ledger.MemoryStore()
        result = sensor({**seeded, "instance_count": 1}, store, terraform_output=inventory("t-local-1")).poke(CONTEXT)
        fleet = result.xcom_value
        (worker,) = fleet["workers"]
        assert set(worker) == {"name", "thumbprint", "uri"} and worker["uri"].startswith("poll://")
        assert fleet["generation"] == 1 and fleet["space_id"] == "Spaces-1" and fleet["cloud"] == "local"
        doc = ledger.load(store, "t", "local")
        evidence = ledger.verified(doc, ledger.Signer(seeded_key(seeded)))
        assert [(o["name"], o["thumbprint"]) for o in evidence["owned"]] == [("t-local-1", worker["thumbprint"])]
        assert evidence["fleet"]["workers"][0]["instance_id"] == "id-t-local-1"
        assert doc["spaces"] == {"Spaces-1": {"name": "Space 001", "pool_id": seeded["initial_space"]["pool_id"]}}
        assert "owned" not in fleet  # the shares read the evidence from the sealed ledger, never from XCom

    def test_zero_instances_is_an_empty_fleet_at_once(self, seeded):
        task = sensor({**seeded, "instance_count": 0}, terraform_output=inventory())
        result = task.poke(CONTEXT)
        assert result.is_done is True and result.xcom_value["workers"] == []
        assert "0 of 0" in task._timeout_message(task._last_seen)

    def test_replaced_instance_waits_for_its_new_registration(self, seeded):
        store = ledger.MemoryStore()
        plan = {**seeded, "instance_count": 1}
        first = sensor(plan, store, terraform_output=inventory("t-local-1", ids=["vm-a"])).poke(CONTEXT)
        assert first.is_done is True
        # The instance was replaced (new id) but its old record, same thumbprint, is still Healthy.
        again = sensor(plan, store, terraform_output=inventory("t-local-1", ids=["vm-b"]))
        assert again.poke({**CONTEXT, "run_id": "manual__2"}).is_done is False
        assert "replaced instance" in again._last_seen["ignored"][0]["why"]

    def test_no_inventory_is_a_clear_failure(self, seeded):
        with pytest.raises(AirflowFailException, match="no 'instances'"):
            sensor(seeded, terraform_output={"cloud": "local", "outputs": {}}).poke(CONTEXT)

    def test_dry_run_does_not_wait_and_records_nothing(self, seeded):
        store = ledger.MemoryStore()
        result = sensor(seeded, store, dry_run="True", terraform_output=None).poke(CONTEXT)
        assert result.is_done is True and result.xcom_value["dry_run"] is True
        assert store.docs == {}

    def test_deferrable_defers_with_the_fleet_spec(self, seeded):
        task = sensor(seeded, deferrable="True", registration_timeout="60", poll_interval="5")
        with pytest.raises(TaskDeferred) as deferred:
            task.execute(CONTEXT)
        handed = deferred.value.trigger
        assert isinstance(handed, OctopusWorkersRegisteredTrigger)
        assert handed.fleet_spec["instances"] == inventory("t-local-1", "t-local-2")["outputs"]["instances"]
        assert handed.poll_interval == 5 and deferred.value.method_name == "execute_complete"
        # What the triggerer stores and rebuilds: plain JSON, the fleet_spec and nothing beside it.
        classpath, kwargs = handed.serialize()
        assert classpath == "octopus.triggers.OctopusWorkersRegisteredTrigger"
        assert set(kwargs) == {"octopus_conn_id", "space_id", "pool_id", "fleet_spec", "poll_interval", "deadline"}
        stored = json.loads(json.dumps(kwargs))
        assert OctopusWorkersRegisteredTrigger(**stored).serialize() == (classpath, stored)

    def test_execute_complete_success_reads_again_before_recording(self, seeded, emulator):
        task = sensor({**seeded, "instance_count": 1}, terraform_output=inventory("t-local-1"))
        before = emulator.control.counters()["total"]
        fleet = task.execute_complete(CONTEXT, {"status": "success", "seen": {}})
        assert [w["name"] for w in fleet["workers"]] == ["t-local-1"]
        assert emulator.control.counters()["total"] == before + 1

    def test_execute_complete_timeout_lists_what_it_saw(self, seeded):
        task = sensor(seeded)
        task.timeout = 60
        seen = {"workers": [{"name": "t-local-1", "thumbprint": "A" * 40, "uri": "poll://x/"}], "ignored": []}
        with pytest.raises(AirflowSensorTimeout, match=r"(?s)1 of 2 workers.*t-local-1"):
            task.execute_complete(CONTEXT, {"status": "timeout", "seen": seen})

    def test_execute_complete_error_is_raised(self, seeded):
        with pytest.raises(AirflowException, match="boom"):
            sensor(seeded).execute_complete(CONTEXT, {"status": "error", "message": "boom"})

    @pytest.mark.parametrize(("waited", "interval"), [(None, 1.0), (3.0, 3.0), (120.0, 30.0)])
    def test_reschedules_after_one_two_four_seconds_then_every_poll_interval(self, seeded, waited, interval):
        from datetime import timedelta

        from airflow.sdk import timezone
        from airflow.sdk.exceptions import AirflowRescheduleException

        class Ti:  # the first reschedule date the task instance reads from Airflow
            @staticmethod
            def get_first_reschedule_date(context):
                return None if waited is None else timezone.utcnow() - timedelta(seconds=waited)

        task = sensor(seeded, registration_timeout="600", poll_interval="30")
        before = timezone.utcnow()
        with pytest.raises(AirflowRescheduleException) as rescheduled:
            task.execute({**CONTEXT, "ti": Ti()})
        after = timezone.utcnow()
        assert before + timedelta(seconds=interval) <= rescheduled.value.reschedule_date
        assert rescheduled.value.reschedule_date <= after + timedelta(seconds=interval + 0.5)

    def test_bad_timeout_is_a_clear_error(self, seeded):
        with pytest.raises(AirflowException, match="registration_timeout must be a number"):
            sensor(seeded, registration_timeout="soon").execute(CONTEXT)


def test_trigger_deadline_in_the_past_times_out():
    trigger = OctopusWorkersRegisteredTrigger(
        octopus_conn_id="octopus_default",
        space_id="Spaces-1",
        pool_id="WorkerPools-1",
        fleet_spec={"expected_count": 1, "name_prefix": "t-local", "instances": [], "previous": []},
        deadline=time.time() - 1,
    )
    assert trigger.serialize()[1]["fleet_spec"]["expected_count"] == 1


# ---- issue 19: a rebuild without a gap (outdated instances) and visible draining
def outdated_output(names, outdated):
    result = inventory(*names)
    result["outputs"]["outdated_instances"] = list(outdated)
    return result


class TestRebuild:
    def test_the_wait_counts_outdated_instances_beside_instance_count(self, seeded):
        """They still run and stay shared until drained: the fleet recorded holds them on top of instance_count."""
        out = outdated_output(["t-local-1"], ["t-local-1"])
        result = sensor({**seeded, "instance_count": 0}, terraform_output=out).poke(CONTEXT)
        assert [w["name"] for w in result.xcom_value["workers"]] == ["t-local-1"]

    def test_nothing_outdated_returns_at_once_without_a_request(self, seeded, emulator):
        from octopus.sensors import OctopusRemovedInstancesDrainedSensor

        emulator.control.clear_requests()
        task = OctopusRemovedInstancesDrainedSensor(
            task_id="drain_outdated", fleet_plan=seeded, terraform_output=outdated_output(["t-local-1"], []),
            ledger_store=ledger.MemoryStore(),
        )
        context = dict(CONTEXT)
        result = task.poke(context)
        assert result.is_done and result.xcom_value["instances"] == [] and result.xcom_value["records"] == []
        assert emulator.control.requests() == []
        assert context["drain_label"] == "local: nothing outdated"

    def test_only_outdated_instances_of_the_last_sealed_fleet_are_drained_and_their_records_deleted(
        self, seeded, emulator
    ):
        from octopus.sensors import OctopusRemovedInstancesDrainedSensor

        store = ledger.MemoryStore()
        plan = {**seeded, "instance_count": 1}
        sensor(plan, store, terraform_output=inventory("t-local-1")).poke(CONTEXT)  # seals the fleet [t-local-1]
        task = OctopusRemovedInstancesDrainedSensor(
            task_id="drain_outdated", fleet_plan=plan, ledger_store=store, settle=0,
            terraform_output=outdated_output(["t-local-1", "t-local-99"], ["t-local-1", "t-local-99"]),
        )
        context = dict(CONTEXT)
        result = task.poke(context)
        assert result.is_done and result.xcom_value["instances"] == ["t-local-1"]  # t-local-99 was never sealed
        assert result.xcom_value["kind"] == "outdated" and result.xcom_value["workers"] == [
            {"worker": "t-local-1", "waited_seconds": 0.0, "tasks": []}]
        names = sorted(w["Name"] for w in emulator.control.state()["workers"])
        assert names == ["t-local-2", "t-local-99"]  # its record deleted; the look-alike left alone
        assert context["drain_label"].startswith("local: drained 1 outdated in ")


def test_the_drain_log_says_per_worker_how_long_and_for_which_steps():
    from datetime import datetime, timedelta, timezone

    from octopus import draining

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    hold = {"space_id": "Spaces-1", "worker_id": "Workers-1", "worker": "w-1", "task": "ServerTasks-7",
            "taken_at": "", "stale": False}
    log = draining.note_holds(None, [hold], t0, ["w-1", "w-2"])
    log = draining.note_holds(log, [{**hold, "task": "ServerTasks-9"}], t0 + timedelta(seconds=30), ["w-1", "w-2"])
    log = draining.note_holds(log, [], t0 + timedelta(seconds=45), ["w-1", "w-2"])
    log = draining.note_holds(log, [], t0 + timedelta(seconds=60), ["w-1", "w-2"])  # still free: the end stays
    assert draining.waited_per_worker(log, ["w-1", "w-2"], t0 + timedelta(seconds=90)) == [
        {"worker": "w-1", "waited_seconds": 45.0, "tasks": ["ServerTasks-7", "ServerTasks-9"]},
        {"worker": "w-2", "waited_seconds": 0.0, "tasks": []},
    ]
    assert draining.drain_label("aws", "leaving", "busy", count=2, tasks=["ServerTasks-12", "ServerTasks-13",
                                                                           "ServerTasks-14"]) == (
        "aws: draining 2 (ServerTasks-12, ServerTasks-13, …)")
    assert draining.drain_label("aws", "leaving", "nothing") == "aws: nothing leaves"
