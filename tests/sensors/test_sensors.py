"""OctopusWorkersRegisteredSensor and OctopusWorkersRegisteredTrigger against the emulator."""

from __future__ import annotations

import json
import time

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred

from octopus.sensors import OctopusWorkersRegisteredSensor, expected_names_from
from octopus.triggers import OctopusWorkersRegisteredTrigger
from octopus_emulator.scenario import make_scenario, make_worker

POOL = "Local Worker Pool TF"
FLEET_PLAN = {
    "cloud": "local",
    "pool_name": POOL,
    "instance_count": 2,
    "name_prefix": "t-local",
    "initial_space": {"id": "Spaces-1", "name": "Space 001", "pool_id": None},
}


@pytest.fixture
def seeded(emulator, monkeypatch):
    """One space whose pool holds one live fleet worker and one stale record; returns the fleet plan."""
    workers = [
        make_worker("t-local-1", pools=[POOL], HealthStatus="Healthy"),
        make_worker("t-local-2", pools=[POOL], HealthStatus="Unavailable"),
    ]
    emulator.control.reset(make_scenario(1, [POOL], workers={1: workers}))
    conn = {"conn_type": "http", "host": emulator.url, "password": emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))
    pool_id = next(p["Id"] for p in emulator.control.state()["pools"] if p["Name"] == POOL)
    return {**FLEET_PLAN, "initial_space": {**FLEET_PLAN["initial_space"], "pool_id": pool_id}}


def trigger(plan, **kwargs):
    kwargs = {"expected_count": 2, "deadline": time.time() + 30, **kwargs}
    return OctopusWorkersRegisteredTrigger(
        octopus_conn_id="octopus_default",
        space_id="Spaces-1",
        pool_id=plan["initial_space"]["pool_id"],
        name_prefix="t-local",
        **kwargs,
    )


def sensor(plan, **kwargs):
    return OctopusWorkersRegisteredSensor(task_id="wait_for_workers", fleet_plan=plan, **kwargs)


class TestTrigger:
    def test_serialize_carries_no_secret(self):
        trigger = OctopusWorkersRegisteredTrigger(
            octopus_conn_id="octopus_default",
            space_id="Spaces-1",
            pool_id="WorkerPools-2",
            expected_count=2,
            name_prefix="t-local",
            deadline=123.0,
        )
        classpath, kwargs = trigger.serialize()
        assert classpath == "octopus.triggers.OctopusWorkersRegisteredTrigger"
        assert set(kwargs) == {
            "octopus_conn_id",
            "space_id",
            "pool_id",
            "expected_count",
            "name_prefix",
            "expected_names",
            "poll_interval",
            "deadline",
        }
        assert OctopusWorkersRegisteredTrigger(**kwargs).serialize() == (classpath, kwargs)

    async def test_fires_success_when_enough_live_workers(self, seeded):
        event = await trigger(seeded, expected_count=1).run().__anext__()
        assert event.payload["status"] == "success"
        assert [w["name"] for w in event.payload["seen"]["workers"]] == ["t-local-1"]

    async def test_fires_timeout_listing_what_it_saw(self, seeded):
        event = await trigger(seeded, deadline=time.time() - 1).run().__anext__()
        assert event.payload["status"] == "timeout"
        assert "1 of 2 workers" in event.payload["message"]
        assert "t-local-2" in event.payload["message"] and "Unavailable" in event.payload["message"]

    async def test_fires_error_when_octopus_refuses(self, seeded, emulator, monkeypatch):
        bad = {"conn_type": "http", "host": emulator.url, "password": "API-WRONGWRONGWRONG0000000"}
        monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(bad))
        event = await trigger(seeded).run().__anext__()
        assert event.payload["status"] == "error" and "401" in event.payload["message"]


class TestSensor:
    def test_poke_not_done_until_instance_count_live_workers(self, seeded):
        result = sensor(seeded).poke({})
        assert result.is_done is False
        assert [w["name"] for w in result.xcom_value["workers"]] == ["t-local-1"]

    def test_poke_done_returns_the_fleet(self, seeded):
        result = sensor({**seeded, "instance_count": 1}).poke({})
        assert result.is_done is True
        (worker,) = result.xcom_value["workers"]
        assert set(worker) == {"name", "thumbprint", "uri"} and worker["uri"].startswith("poll://")
        assert result.xcom_value["space_id"] == "Spaces-1" and result.xcom_value["cloud"] == "local"

    def test_dry_run_does_not_wait(self, seeded):
        result = sensor(seeded, dry_run="True").poke({})
        assert result.is_done is True and result.xcom_value["dry_run"] is True

    def test_deferrable_defers_to_trigger_when_not_ready(self, seeded):
        task = sensor(seeded, deferrable="True", registration_timeout="60", poll_interval="5")
        with pytest.raises(TaskDeferred) as deferred:
            task.execute({})
        handed = deferred.value.trigger
        assert isinstance(handed, OctopusWorkersRegisteredTrigger)
        assert handed.expected_count == 2 and handed.poll_interval == 5
        assert deferred.value.method_name == "execute_complete"

    def test_deferrable_returns_at_once_when_ready(self, seeded):
        task = sensor({**seeded, "instance_count": 1}, deferrable=True, registration_timeout=60, poll_interval=5)
        assert [w["name"] for w in task.execute({})["workers"]] == ["t-local-1"]

    def test_execute_complete_timeout_lists_what_it_saw(self, seeded):
        task = sensor(seeded)
        task.timeout = 60
        seen = {"workers": [{"name": "t-local-1", "thumbprint": "A" * 40, "uri": "poll://x/"}], "ignored": []}
        with pytest.raises(AirflowSensorTimeout, match=r"(?s)1 of 2 workers.*t-local-1"):
            task.execute_complete({}, {"status": "timeout", "seen": seen})

    def test_execute_complete_error_is_raised(self, seeded):
        with pytest.raises(AirflowException, match="boom"):
            sensor(seeded).execute_complete({}, {"status": "error", "message": "boom"})

    def test_bad_timeout_is_a_clear_error(self, seeded):
        with pytest.raises(AirflowException, match="registration_timeout must be a number"):
            sensor(seeded, registration_timeout="soon").execute({})


def test_expected_names_from_terraform_output():
    output = json.dumps({"cloud": "local", "outputs": {"worker_names": ["t-local-1", "t-local-2"]}})
    assert expected_names_from(output) == ["t-local-1", "t-local-2"]
    assert expected_names_from(None) == []
    assert expected_names_from(json.dumps({"outputs": {}})) == []
