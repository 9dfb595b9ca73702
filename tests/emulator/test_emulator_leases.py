"""Worker task leases and simulated steps (shared reference: demand-scaling.md §0, §2), over real HTTP.

No test sleeps and hopes: steps end through the control API, or the test polls a condition with a deadline.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import requests

from octopus_emulator.scenario import make_scenario, make_worker

DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
COLLECTION_FIELDS = ["ItemType", "TotalResults", "ItemsPerPage", "NumberOfPages", "LastPageNumber", "Items", "Links"]
LEASE_FIELDS = ["Id", "Name", "WorkerId", "WorkerPoolId", "ServerTaskId", "SpaceId", "TakenAt", "Exclusive"]
POOL = "WorkerPools-2"  # "Airflow Pool" of Space 001 in make_scenario (WorkerPools-1 is its default pool)
POOL_2 = "WorkerPools-4"  # "Airflow Pool" of Space 002


def healthy(name, **fields):
    return make_worker(name, HealthStatus="Healthy", **fields)


def scenario(*workers, n_spaces=1, **options):
    return make_scenario(n_spaces, "Airflow Pool", workers={i: list(workers) for i in range(1, n_spaces + 1)},
                         **options)


def wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


class Tentacle:
    """A raw-socket polling tentacle on the comms channel."""

    def __init__(self, port, subscription, thumbprint):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rwb")
        self.file.write(json.dumps({"subscription": subscription, "thumbprint": thumbprint}).encode() + b"\n")
        self.file.flush()
        assert json.loads(self.file.readline()) == {"ok": True}

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.fixture
def api(emulator):
    s = emulator.session()

    class Api:
        control = emulator.control

        def get(self, path, **kw):
            return s.get(emulator.url + path, timeout=10, **kw)

        def put(self, path, body):
            return s.put(emulator.url + path, json=body, timeout=10)

        def delete(self, path):
            return s.delete(emulator.url + path, timeout=10)

        def leases(self, space="Spaces-1", **params):
            resp = self.get(f"/api/{space}/workertaskleases", params=params)
            assert resp.status_code == 200, resp.text
            return resp.json()

        def set_disabled(self, wid, disabled, space="Spaces-1"):
            rec = self.get(f"/api/{space}/workers/{wid}").json()
            rec["IsDisabled"] = disabled
            assert self.put(f"/api/{space}/workers/{wid}", rec).status_code == 200

    return Api()


# ------------------------------------------------------------------------------------------ leasing
def test_steps_lease_the_healthy_worker_with_fewest_leases_non_exclusively(api):
    api.control.reset(scenario(healthy("w1"), healthy("w2")))
    tasks = [api.control.start_task(POOL) for _ in range(3)]
    assert [t["worker_name"] for t in tasks] == ["w1", "w2", "w1"]  # fewest leases, ties by name
    assert all(t["state"] == "Executing" and t["outcome"] == "running" and t["lease_held"] for t in tasks)
    api.control.complete_task(tasks[1]["id"])
    assert api.control.start_task("Airflow Pool", space="Space 001")["worker_name"] == "w2"  # names work too
    page = api.leases()
    assert [lease["WorkerId"] for lease in page["Items"]] == ["Workers-1", "Workers-1", "Workers-2"]
    lease = page["Items"][0]
    assert list(lease) == LEASE_FIELDS
    assert lease["Name"] == "w1" and lease["WorkerPoolId"] == POOL and lease["SpaceId"] == "Spaces-1"
    assert lease["ServerTaskId"] == tasks[0]["id"] and lease["Exclusive"] is False and DATE_RE.match(lease["TakenAt"])
    assert lease["Id"] == tasks[0]["lease_id"]
    counters = api.control.step_counters()
    assert counters["started"] == 4 and counters["succeeded"] == 1 and counters["running"] == 3
    assert counters["leases"] == 3 and counters["failed_no_worker"] == 0 and counters["killed"] == 0


def test_a_step_ends_after_its_duration_and_releases_its_lease(api):
    api.control.reset(scenario(healthy("w1")))
    task = api.control.start_task(POOL, 0.2)
    assert task["duration_seconds"] == 0.2 and task["lease_held"] and task["state"] == "Executing"
    done = api.control.wait_for_task(task["id"])
    assert done["state"] == "Success" and done["outcome"] == "succeeded" and done["lease_held"] is False
    assert api.leases()["TotalResults"] == 0
    server_task = api.get(f"/api/Spaces-1/tasks/{task['id']}").json()
    assert server_task["IsCompleted"] is True and server_task["FinishedSuccessfully"] is True
    counters = api.control.wait_no_running_tasks()
    assert counters["started"] == counters["succeeded"] == 1 and counters["leases"] == 0


def test_exclusive_leases(api):
    api.control.reset(scenario(healthy("w1"), healthy("w2")))
    upgrade = api.control.start_task(POOL, exclusive=True, name="Upgrade")
    assert upgrade["worker_name"] == "w1" and api.leases()["Items"][0]["Exclusive"] is True
    assert [api.control.start_task(POOL)["worker_name"] for _ in range(2)] == ["w2", "w2"]
    blocked = api.control.start_task(POOL, exclusive=True)  # every worker is busy: no wait, it fails
    assert blocked["outcome"] == "failed_no_worker"


# ------------------------------------------------------------------------------------------ REST shapes
def test_workertaskleases_paging_and_route_forms(api):
    api.control.reset(scenario(healthy("w1"), healthy("w2"), n_spaces=2))
    ids = [api.control.start_task(POOL)["lease_id"] for _ in range(5)]
    api.control.start_task(POOL_2, space="Spaces-2")
    first = api.leases(take=2)
    assert list(first) == COLLECTION_FIELDS
    assert first["ItemType"] == "WorkerTaskLease" and first["TotalResults"] == 5 and first["ItemsPerPage"] == 2
    assert first["NumberOfPages"] == 3 and first["LastPageNumber"] == 2
    assert [i["Id"] for i in first["Items"]] == ids[:2]
    links = first["Links"]
    assert links["Self"] == "/api/Spaces-1/workertaskleases?skip=0&take=2"
    assert links["Template"] == "/api/Spaces-1/workertaskleases{?skip,take}"
    assert links["Page.Next"] == "/api/Spaces-1/workertaskleases?skip=2&take=2"
    assert links["Page.Last"] == "/api/Spaces-1/workertaskleases?skip=4&take=2"
    assert links["Page.All"].endswith("take=2147483647")
    second = api.get(links["Page.Next"]).json()
    assert [i["Id"] for i in second["Items"]] == ids[2:4]
    last = api.leases(skip=4, take=2)
    assert [i["Id"] for i in last["Items"]] == ids[4:] and "Page.Next" not in last["Links"]
    assert api.leases()["ItemsPerPage"] == 30  # default take
    for path in ("/api/spaces/Spaces-1/workertaskleases", "/api/workertaskleases"):  # the default space is Spaces-1
        assert [i["Id"] for i in api.get(path).json()["Items"]] == ids
    other = api.leases("Spaces-2")["Items"]
    assert len(other) == 1 and other[0]["SpaceId"] == "Spaces-2" and other[0]["WorkerPoolId"] == POOL_2
    assert api.get("/api/Spaces-1/workertaskleases", params={"take": "x"}).status_code == 400
    assert api.get("/api/Spaces-9/workertaskleases").status_code == 404
    routes = api.control.counters()["by_route"]
    assert routes["GET /api/{space}/workertaskleases"] >= 8


def test_empty_lease_collection(api):
    page = api.leases()
    assert page["TotalResults"] == 0 and page["Items"] == [] and page["NumberOfPages"] == 0
    assert page["LastPageNumber"] == 0


def test_server_task_resource_and_route_forms(api):
    api.control.reset(scenario(healthy("w1"), n_spaces=2))
    task = api.control.start_task(POOL, description="Deploy Web 1.0 to Production", project_id="Projects-1")
    resp = api.get(f"/api/Spaces-1/tasks/{task['id']}")
    assert resp.status_code == 200
    st = resp.json()
    for key in ("Id", "State", "IsCompleted", "StartTime", "CompletedTime", "QueueTime", "SpaceId", "Name",
                "Description", "LastUpdatedTime", "HasBeenPickedUpByProcessor", "ErrorMessage", "FinishedSuccessfully",
                "ProjectId", "Links"):
        assert key in st
    assert st["Id"] == task["id"] and st["State"] == "Executing" and st["IsCompleted"] is False
    assert st["SpaceId"] == "Spaces-1" and st["Name"] == "Deploy" and st["ProjectId"] == "Projects-1"
    assert st["Description"] == "Deploy Web 1.0 to Production" and st["CompletedTime"] is None
    assert DATE_RE.match(st["QueueTime"]) and DATE_RE.match(st["StartTime"])
    for path in (f"/api/spaces/Spaces-1/tasks/{task['id']}", f"/api/tasks/{task['id']}",
                 f"/api/tasks/{task['id'].lower()}"):
        assert api.get(path).json()["Id"] == task["id"], path
    assert api.get(f"/api/Spaces-2/tasks/{task['id']}").status_code == 404  # another space's task
    assert api.get("/api/tasks/ServerTasks-999").status_code == 404
    api.control.complete_task(task["id"], "Canceled")
    st = api.get(f"/api/tasks/{task['id']}").json()
    assert st["State"] == "Canceled" and st["IsCompleted"] is True and DATE_RE.match(st["CompletedTime"])
    assert st["FinishedSuccessfully"] is False and "canceled" in st["ErrorMessage"]
    assert api.get("/api").json()["Links"]["Tasks"].startswith("/api/tasks{/id}{?skip")


def test_task_list_filters_paging_and_counts(api):
    api.control.reset(scenario(healthy("w1"), n_spaces=2))
    t1 = api.control.start_task(POOL)
    t2 = api.control.start_task(POOL)
    t3 = api.control.start_task(POOL)
    api.control.complete_task(t1["id"])
    api.control.complete_task(t2["id"], "Failed")
    t4 = api.control.start_task(POOL_2, space="Spaces-2")
    page = api.get("/api/Spaces-1/tasks").json()
    assert page["ItemType"] == "Task" and list(page)[:7] == COLLECTION_FIELDS
    assert [t["Id"] for t in page["Items"]] == [t3["id"], t2["id"], t1["id"]]  # newest first
    assert page["TotalCounts"]["Executing"] == 1 and page["TotalCounts"]["Success"] == 1
    assert page["TotalCounts"]["Failed"] == 1
    running = api.get("/api/Spaces-1/tasks", params={"running": "true"}).json()
    assert [t["Id"] for t in running["Items"]] == [t3["id"]] and "running=true" in running["Links"]["Self"]
    assert [t["Id"] for t in api.get("/api/Spaces-1/tasks?running=false").json()["Items"]] == [t2["id"], t1["id"]]
    states = api.get("/api/Spaces-1/tasks", params={"states": "Success,Failed"}).json()
    assert [t["Id"] for t in states["Items"]] == [t2["id"], t1["id"]]
    assert [t["Id"] for t in api.get("/api/Spaces-1/tasks?active=true").json()["Items"]] == [t3["id"]]
    assert api.get("/api/Spaces-1/tasks?name=deploy&ids=" + t1["id"]).json()["TotalResults"] == 1
    paged = api.get("/api/Spaces-1/tasks", params={"skip": 1, "take": 1}).json()
    assert [t["Id"] for t in paged["Items"]] == [t2["id"]] and paged["NumberOfPages"] == 3
    assert paged["Links"]["Page.Next"] == "/api/Spaces-1/tasks?skip=2&take=1"
    assert api.get("/api/Spaces-1/tasks?states=Sleeping").status_code == 400
    assert api.get("/api/Spaces-1/tasks?running=maybe").status_code == 400
    everything = api.get("/api/tasks").json()
    assert [t["Id"] for t in everything["Items"]] == [t4["id"], t3["id"], t2["id"], t1["id"]]
    only_two = api.get("/api/tasks", params={"spaces": "Spaces-2", "running": "true"}).json()
    assert [t["Id"] for t in only_two["Items"]] == [t4["id"]]
    assert api.get("/api/tasks?spaces=all").json()["TotalResults"] == 4
    api.control.set_faults({"forbidden_spaces": ["Spaces-2"]})
    assert api.get("/api/tasks").json()["TotalResults"] == 3  # only what the key may see
    assert api.get(f"/api/tasks/{t4['id']}").status_code == 403


# ------------------------------------------------------------------------------------------ no worker: fail at once
def test_a_step_fails_at_once_when_the_pool_has_no_healthy_enabled_worker(api):
    api.control.reset(scenario(make_worker("down", HealthStatus="Unavailable"), make_worker("new"),
                               healthy("off", IsDisabled=True)))
    task = api.control.start_task(POOL, 30)  # Unavailable; Unknown (then Unavailable); Healthy but disabled
    assert task["state"] == "Failed" and task["is_completed"] is True and task["outcome"] == "failed_no_worker"
    assert "Airflow Pool" in task["reason"] and task["worker_id"] is None and task["lease_id"] is None
    st = api.get(f"/api/Spaces-1/tasks/{task['id']}").json()
    assert st["State"] == "Failed" and st["IsCompleted"] is True and "no healthy, enabled worker" in st["ErrorMessage"]
    empty = api.control.start_task("Default Worker Pool")
    assert empty["outcome"] == "failed_no_worker"
    assert api.leases()["TotalResults"] == 0
    counters = api.control.step_counters()
    assert counters["started"] == 2 and counters["failed_no_worker"] == 2 and counters["running"] == 0


# ------------------------------------------------------------------------------------------ delete while leased
def test_delete_is_refused_while_the_worker_holds_a_lease(api):
    api.control.reset(scenario(healthy("w1")))
    task = api.control.start_task(POOL)
    resp = api.delete("/api/Spaces-1/workers/Workers-1")
    assert resp.status_code == 400
    body = resp.json()
    assert "currently in use" in body["ErrorMessage"] and task["id"] in body["ErrorMessage"]
    assert body["Errors"] and "currently in use" in body["Errors"][0]
    assert api.get("/api/Spaces-1/workers/Workers-1").status_code == 200  # nothing deleted
    assert api.control.task(task["id"])["state"] == "Executing"
    api.control.complete_task(task["id"])
    assert api.delete("/api/Spaces-1/workers/Workers-1").status_code == 200


def test_a_shared_worker_is_busy_while_any_of_its_records_holds_a_lease(api):
    api.control.reset(scenario(healthy("shared"), n_spaces=2))  # one endpoint, a record in each space
    task = api.control.start_task(POOL_2, space="Spaces-2")
    assert task["worker_id"] == "Workers-2"
    view = api.control.leases()
    assert view["busy_endpoints"] == [{"endpoint": make_worker("shared")["Uri"],
                                       "thumbprint": make_worker("shared")["Thumbprint"],
                                       "leases": 1, "worker_ids": ["Workers-2"]}]
    assert api.leases("Spaces-1")["TotalResults"] == 0 and api.leases("Spaces-2")["TotalResults"] == 1
    assert api.delete("/api/Spaces-1/workers/Workers-1").status_code == 200  # that record holds no lease
    assert api.control.task(task["id"])["state"] == "Executing"  # the machine still runs the step
    assert api.delete("/api/Spaces-2/workers/Workers-2").status_code == 400


# ------------------------------------------------------------------------------------------ killed steps
def test_a_step_is_killed_when_its_tentacle_disappears(api, emulator):
    shared = make_worker("vm")
    api.control.reset(scenario(make_worker("vm"), healthy("zz-other"), n_spaces=2))  # vm: Workers-1 and -3
    tentacle = Tentacle(emulator.comms_port, shared["Uri"], shared["Thumbprint"])
    try:
        wait_for(lambda: all(api.get(f"/api/{s}/workers/{w}").json()["HealthStatus"] == "Healthy"
                             for s, w in (("Spaces-1", "Workers-1"), ("Spaces-2", "Workers-3"))))
        on_vm = [api.control.start_task(POOL), api.control.start_task(POOL_2, space="Spaces-2")]
        on_other = api.control.start_task(POOL)
        assert [t["worker_name"] for t in on_vm] == ["vm", "vm"] and on_other["worker_name"] == "zz-other"
    finally:
        tentacle.close()
    for task in on_vm:
        done = api.control.wait_for_task(task["id"])
        assert done["state"] == "Failed" and done["outcome"] == "killed" and "unavailable" in done["reason"]
        assert done["lease_held"] is False
    assert api.control.task(on_other["id"])["state"] == "Executing"
    counters = api.control.step_counters()
    assert counters["killed"] == 2 and counters["running"] == 1 and counters["leases"] == 1


def test_a_step_is_killed_when_a_health_check_finds_its_worker_unavailable(api):
    api.control.reset(scenario(healthy("seeded")))  # seeded Healthy, no tentacle connected
    task = api.control.start_task(POOL)
    assert api.control.health_check() == {"Workers-1": "Unavailable"}
    done = api.control.task(task["id"])
    assert done["outcome"] == "killed" and api.get(f"/api/tasks/{task['id']}").json()["State"] == "Failed"


def test_a_step_is_killed_when_its_worker_is_deleted_without_the_guard(api):
    api.control.reset(scenario(healthy("w1"), refuse_delete_while_leased=False))
    assert api.control.lease_settings()["refuse_delete_while_leased"] is False
    task = api.control.start_task(POOL)
    assert api.delete("/api/Spaces-1/workers/Workers-1").status_code == 200
    done = api.control.task(task["id"])
    assert done["state"] == "Failed" and done["outcome"] == "killed" and "deleted" in done["reason"]
    assert api.leases()["TotalResults"] == 0 and api.control.step_counters()["killed"] == 1
    api.control.set_lease_settings(refuse_delete_while_leased=True)
    assert api.control.lease_settings()["refuse_delete_while_leased"] is True


# ------------------------------------------------------------------------------------------ disabled workers
def test_disabled_worker_gets_no_new_leases_by_default(api):
    api.control.reset(scenario(healthy("w1"), healthy("w2")))
    assert api.control.lease_settings() == {"disabled_worker_leases": "no_new_leases",
                                            "refuse_delete_while_leased": True}
    running = api.control.start_task(POOL)
    assert running["worker_name"] == "w1"
    api.set_disabled("Workers-1", True)
    assert [api.control.start_task(POOL)["worker_name"] for _ in range(3)] == ["w2", "w2", "w2"]
    assert api.control.task(running["id"])["state"] == "Executing"  # running leases finish
    api.set_disabled("Workers-2", True)
    assert api.control.start_task(POOL)["outcome"] == "failed_no_worker"
    api.control.complete_task(running["id"])
    assert [lease["WorkerId"] for lease in api.leases()["Items"]] == ["Workers-2"] * 3


def test_disabled_worker_still_leased_mode(api):
    api.control.reset(scenario(healthy("w1"), healthy("w2")))
    assert api.control.set_lease_settings(disabled_worker_leases="still_leased")["disabled_worker_leases"] == (
        "still_leased")
    api.set_disabled("Workers-1", True)
    assert [api.control.start_task(POOL)["worker_name"] for _ in range(3)] == ["w1", "w2", "w1"]
    api.set_disabled("Workers-2", True)
    assert api.control.start_task(POOL)["worker_name"] == "w2"  # disabled, still leased
    unhealthy = make_worker("sick", HealthStatus="Unavailable", IsDisabled=True)
    api.control.reset(scenario(unhealthy, disabled_worker_leases="still_leased"))  # the scenario option
    assert api.control.lease_settings()["disabled_worker_leases"] == "still_leased"
    assert api.control.start_task(POOL)["outcome"] == "failed_no_worker"  # health still counts
    api.control.reset(scenario(healthy("off", IsDisabled=True), disabled_worker_leases="still_leased"))
    assert api.control.start_task(POOL)["worker_name"] == "off"
    api.control.reset(None)  # a reset goes back to the default
    assert api.control.lease_settings()["disabled_worker_leases"] == "no_new_leases"


# ------------------------------------------------------------------------------------------ stale leases
def test_a_stale_lease_blocks_delete_until_a_server_restart(api):
    api.control.reset(scenario(healthy("w1"), healthy("w2")))
    injected = api.control.inject_stale_lease("w1", state="Canceled", age_seconds=3600)
    task, lease = injected["task"], injected["lease"]
    assert task["is_completed"] is True and task["state"] == "Canceled" and task["injected"] is True
    listed = api.leases()["Items"]
    assert listed == [lease] and lease["WorkerId"] == "Workers-1" and lease["WorkerPoolId"] == POOL
    st = api.get(f"/api/Spaces-1/tasks/{lease['ServerTaskId']}").json()
    assert st["IsCompleted"] is True and st["State"] == "Canceled"
    assert st["StartTime"] == lease["TakenAt"] == st["CompletedTime"]  # taken an hour ago
    resp = api.delete("/api/Spaces-1/workers/Workers-1")
    assert resp.status_code == 400 and "currently in use" in resp.json()["ErrorMessage"]
    # a task completed while its lease stays behind is stale too
    left = api.control.start_task(POOL)
    api.control.complete_task(left["id"], "Failed", keep_lease=True)
    counters = api.control.step_counters()
    assert counters["stale_leases"] == 2 and counters["stale_injected"] == 1 and counters["failed"] == 1
    running = api.control.start_task(POOL)
    assert sorted(api.control.server_restart()) == sorted([lease["Id"], left["lease_id"]])
    assert [i["ServerTaskId"] for i in api.leases()["Items"]] == [running["id"]]  # running leases stay
    assert api.control.step_counters()["stale_cleared"] == 2
    deletable = "Workers-1" if running["worker_id"] != "Workers-1" else "Workers-2"
    assert api.delete(f"/api/Spaces-1/workers/{deletable}").status_code == 200
    assert api.control.server_restart() == []


def test_a_stale_lease_is_not_killed_by_an_unavailable_worker(api):
    api.control.reset(scenario(healthy("w1")))
    lease = api.control.inject_stale_lease("Workers-1", state="Failed")["lease"]
    api.control.health_check()  # seeded Healthy without tentacle: Unavailable
    assert [i["Id"] for i in api.leases()["Items"]] == [lease["Id"]]
    assert api.control.step_counters()["killed"] == 0


# ------------------------------------------------------------------------------------------ control API
def test_control_api_validation(api, emulator):
    api.control.reset(scenario(healthy("w1")))
    base = emulator.url + "/_emulator"
    bad = [
        ("post", "/tasks", {"pool": "nope"}, 404),
        ("post", "/tasks", {}, 400),
        ("post", "/tasks", {"pool": POOL, "duration_seconds": -1}, 400),
        ("post", "/tasks", {"pool": POOL, "duration_seconds": True}, 400),
        ("post", "/tasks", {"pool": POOL, "typo": 1}, 400),
        ("post", "/tasks", {"pool": POOL, "space": "Spaces-9"}, 404),
        ("post", "/tasks/ServerTasks-99/complete", {}, 404),
        ("post", "/leases/stale", {"worker": "ghost"}, 404),
        ("post", "/leases/stale", {"worker": "w1", "state": "Success"}, 400),
        ("put", "/leases/settings", {"disabled_worker_leases": "sometimes"}, 400),
        ("put", "/leases/settings", {"typo": True}, 400),
    ]
    for method, path, body, status in bad:
        resp = getattr(requests, method)(base + path, json=body, timeout=10)
        assert resp.status_code == status, (path, body, resp.text)
        assert resp.json()["ErrorMessage"]
    task = api.control.start_task(POOL)
    api.control.complete_task(task["id"])
    again = requests.post(f"{base}/tasks/{task['id']}/complete", json={}, timeout=10)
    assert again.status_code == 409
    assert requests.post(base + "/reset", json={"disabled_worker_leases": "maybe"}, timeout=10).status_code == 400
    assert api.control.counters()["total"] == 0  # control calls are not counted as /api requests


def test_state_dump_shows_live_leases_and_a_reset_clears_them(api):
    api.control.reset(scenario(healthy("w1")))
    task = api.control.start_task(POOL)
    live = api.control.state()["leases"]
    assert live["settings"]["disabled_worker_leases"] == "no_new_leases"
    assert live["counters"]["running"] == 1 and [lease["ServerTaskId"] for lease in live["leases"]] == [task["id"]]
    assert [t["id"] for t in api.control.tasks(running=True)] == [task["id"]]
    assert api.control.tasks(running=False) == []
    api.control.reset(scenario(healthy("w1")))
    assert api.control.tasks() == [] and api.leases()["TotalResults"] == 0
    assert api.control.step_counters()["started"] == 0
