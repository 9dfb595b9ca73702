"""Conformance of the emulated REST API with docs (shared reference: octopus-api.md), over real HTTP."""

from __future__ import annotations

import re

import pytest
import requests

from octopus_emulator.scenario import make_scenario, make_worker, polling_endpoint

UNAUTHORIZED = {"ErrorMessage": "You must be logged in to perform this action. Please provide a valid API key or "
                                "log in again."}
NOT_FOUND = {"ErrorMessage": "The resource you requested was not found."}
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
COLLECTION_FIELDS = ["ItemType", "TotalResults", "ItemsPerPage", "NumberOfPages", "LastPageNumber", "Items", "Links"]


@pytest.fixture
def api(emulator):
    s = emulator.session()
    base = emulator.url

    class Api:
        url = base
        session = s

        def get(self, path, **kw):
            return s.get(base + path, **kw)

        def post(self, path, body, **kw):
            return s.post(base + path, json=body, **kw)

        def put(self, path, body, **kw):
            return s.put(base + path, json=body, **kw)

        def delete(self, path, **kw):
            return s.delete(base + path, **kw)

    return Api()


def polling_body(name, pools, seed=None, **extra):
    uri, thumb = polling_endpoint(seed or name)
    body = {"Name": name, "IsDisabled": False, "WorkerPoolIds": pools,
            "Endpoint": {"CommunicationStyle": "TentacleActive", "Thumbprint": thumb, "Uri": uri}}
    body.update(extra)
    return body


# ------------------------------------------------------------------------------------------ auth
def test_auth_header_query_and_bearer(emulator):
    url = emulator.url + "/api/spaces"
    assert requests.get(url, headers={"X-Octopus-ApiKey": emulator.api_key}, timeout=10).status_code == 200
    assert requests.get(url, params={"apikey": emulator.api_key}, timeout=10).status_code == 200
    assert requests.get(url, params={"ApiKey": emulator.api_key}, timeout=10).status_code == 200
    assert requests.get(url, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=10).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-Octopus-ApiKey": "API-WRONG"}, {"Authorization": "Bearer nope"}])
def test_missing_or_invalid_key_is_401_with_octopus_body(emulator, headers):
    resp = requests.get(emulator.url + "/api/Spaces-1/workers", headers=headers, timeout=10)
    assert resp.status_code == 401
    assert resp.json() == UNAUTHORIZED
    assert resp.headers["content-type"].startswith("application/json")


def test_query_api_key_is_redacted_in_the_request_log(emulator):
    requests.get(emulator.url + "/api/spaces", params={"apikey": emulator.api_key}, timeout=10)
    entry = emulator.control.requests()[-1]
    assert emulator.api_key not in entry["query"] and "apikey=***" in entry["query"]


# ------------------------------------------------------------------------------------------ root, spaces, users
def test_root_document(api):
    resp = api.get("/api")
    root = resp.json()
    assert resp.status_code == 200
    assert root["Application"] == "Octopus Deploy" and root["ApiVersion"] == "3.0.0"
    assert int(root["Version"].split(".")[0]) >= 3
    assert root["InstallationId"]
    links = root["Links"]
    for name in ("Spaces", "SpaceHome", "CurrentUser", "CertificateConfiguration", "Workers", "WorkerPools",
                 "MachinePolicies"):
        assert name in links
    assert links["Workers"].startswith("/api/Spaces-1/workers{")
    assert links["SpaceHome"] == "/api/{spaceId}"


def test_root_is_anonymous_but_nothing_else(emulator):
    assert requests.get(emulator.url + "/api", timeout=10).status_code == 200
    assert requests.get(emulator.url + "/api/Spaces-1", timeout=10).status_code == 401


def test_space_home_links_bound_to_the_space(api, emulator):
    emulator.control.reset(make_scenario(2, "Pool A"))
    home = api.get("/api/Spaces-2").json()
    assert home["Id"] == "Spaces-2"
    assert home["Links"]["Workers"].startswith("/api/Spaces-2/workers{/id}{?skip,take,name,ids,partialName")
    assert home["Links"]["WorkerPools"].startswith("/api/Spaces-2/workerpools")


def test_space_resource_shape(api):
    space = api.get("/api/spaces/Spaces-1").json()
    assert list(space) == ["Id", "Name", "Slug", "Description", "IsDefault", "IsPrivate", "PrivateSpaceOwner",
                           "TaskQueueStopped", "SpaceManagersTeams", "SpaceManagersTeamMembers", "Icon",
                           "ExtensionSettings", "LastModifiedOn", "Links"]
    assert space["SpaceManagersTeams"] == ["teams-spacemanagers-Spaces-1"]
    assert space["Links"]["SpaceHome"] == "/api/Spaces-1" and space["Links"]["Self"] == "/api/spaces/Spaces-1"
    assert DATE_RE.match(space["LastModifiedOn"])
    assert "SpaceId" not in space


def test_spaces_sorted_by_name_all_is_bare_array_and_ids_filter(api, emulator):
    emulator.control.reset({"spaces": [{"Name": "zeta", "IsDefault": True}, {"Name": "Alpha"}, {"Name": "beta"}]})
    names = [s["Name"] for s in api.get("/api/spaces").json()["Items"]]
    assert names == ["Alpha", "beta", "zeta"]
    everything = api.get("/api/spaces/all").json()
    assert isinstance(everything, list) and [s["Name"] for s in everything] == names
    picked = api.get("/api/spaces", params={"ids": "Spaces-1,Spaces-3"}).json()
    assert [s["Id"] for s in picked["Items"]] == ["Spaces-3", "Spaces-1"]
    assert "ids=Spaces-1,Spaces-3" in picked["Links"]["Self"]
    assert [s["Name"] for s in api.get("/api/spaces", params={"partialName": "ET"}).json()["Items"]] == [
        "beta", "zeta"]
    assert [s["Name"] for s in api.get("/api/spaces", params={"name": "ALPHA"}).json()["Items"]] == ["Alpha"]


def test_users_me_and_user_spaces(api, emulator):
    emulator.control.reset(make_scenario(3, "Pool"))
    me = api.get("/api/users/me").json()
    assert me["Id"] == "Users-1" and me["Links"]["Spaces"] == "/api/users/Users-1/spaces"
    spaces = api.get(me["Links"]["Spaces"]).json()
    assert isinstance(spaces, list) and [s["Name"] for s in spaces] == ["Space 001", "Space 002", "Space 003"]
    assert [s["IsDefault"] for s in spaces] == [True, False, False]
    assert api.get("/api/users/Users-99/spaces").status_code == 404


def test_certificate_global(api):
    cert = api.get("/api/configuration/certificates/certificate-global").json()
    assert re.fullmatch(r"[0-9A-F]{40}", cert["Thumbprint"])


# ------------------------------------------------------------------------------------------ 404 / 405 / errors
def test_unknown_space_resource_route_and_method(api):
    resp = api.get("/api/Spaces-99/workers")
    assert resp.status_code == 404
    assert resp.json() == {"ErrorMessage": "The requested space Spaces-99 does not exist"}
    assert api.get("/api/spaces/Spaces-99/workerpools").json() == {
        "ErrorMessage": "The requested space Spaces-99 does not exist"}
    assert api.get("/api/Spaces-99").status_code == 404
    resp = api.get("/api/Spaces-1/workers/Workers-12345")
    assert resp.status_code == 404 and resp.json() == NOT_FOUND
    assert api.get("/api/spaces/Spaces-42").json() == NOT_FOUND
    for path in ("/api/Spaces-1/nonsense", "/api/nonsense/deeper/path", "/nothing-here"):
        resp = api.get(path)
        assert resp.status_code == 404 and resp.json() == NOT_FOUND, path
    resp = api.session.patch(api.url + "/api/Spaces-1/workers", json={})
    assert resp.status_code == 405 and "ErrorMessage" in resp.json()
    resp = api.delete("/api/spaces")
    assert resp.status_code == 405 and "ErrorMessage" in resp.json()
    resp = api.session.post(api.url + "/_emulator/state")
    assert resp.status_code == 405 and "ErrorMessage" in resp.json() and "detail" not in resp.json()


def test_bad_paging_parameters_are_400_json(api):
    for params in ({"skip": "abc"}, {"take": "-1"}, {"take": "99999999999"}, {"isDisabled": "maybe"},
                   {"healthStatuses": "Sleepy"}, {"commStyles": "Carrier Pigeon"}):
        resp = api.get("/api/Spaces-1/workers", params=params)
        assert resp.status_code == 400, params
        assert resp.json()["ErrorMessage"] == "There was a problem with your request."


def test_control_api_validation_errors_are_json(emulator):
    resp = requests.put(emulator.url + "/_emulator/faults", json={"error_rate": 7}, timeout=10)
    assert resp.status_code == 400 and "ErrorMessage" in resp.json()
    resp = requests.post(emulator.url + "/_emulator/reset", json={"spaces": [{"Nmae": "typo"}]}, timeout=10)
    assert resp.status_code == 400 and "ErrorMessage" in resp.json()
    resp = requests.post(emulator.url + "/_emulator/reset", data="{not json", timeout=10)
    assert resp.status_code == 400 and "ErrorMessage" in resp.json()


# ------------------------------------------------------------------------------------------ paging
@pytest.mark.parametrize("n,has_next,pages", [(0, False, 0), (1, False, 1), (29, False, 1), (30, False, 1),
                                              (31, True, 2), (95, True, 4), (1000, True, 34)])
def test_paging_links_and_counts(api, emulator, n, has_next, pages):
    emulator.control.reset({"spaces": [{"Name": f"S{i:04d}"} for i in range(n)]})
    body = api.get("/api/spaces").json()
    assert list(body) == COLLECTION_FIELDS
    assert body["ItemType"] == "Space" and body["TotalResults"] == n and body["ItemsPerPage"] == 30
    assert body["NumberOfPages"] == pages and body["LastPageNumber"] == max(pages - 1, 0)
    assert len(body["Items"]) == min(n, 30)
    expected = ["Self", "Template", "Page.All"] + (["Page.Next"] if has_next else []) + ["Page.Current",
                                                                                        "Page.Last"]
    assert list(body["Links"]) == expected
    assert body["Links"]["Page.All"] == "/api/spaces?skip=0&take=2147483647"
    assert body["Links"]["Page.Last"] == f"/api/spaces?skip={max(pages - 1, 0) * 30}&take=30"
    if has_next:
        assert body["Links"]["Page.Next"] == "/api/spaces?skip=30&take=30"
    # following Page.Next visits every item exactly once
    seen, link = [], "/api/spaces"
    while link:
        page = api.get(link).json()
        seen += [s["Id"] for s in page["Items"]]
        link = page["Links"].get("Page.Next")
    assert len(seen) == len(set(seen)) == n


def test_worker_collection_links_keep_filters(api, emulator):
    workers = [make_worker(f"w{i:02d}") for i in range(40)]
    emulator.control.reset(make_scenario(1, "Pool", workers={1: workers}))
    body = api.get("/api/Spaces-1/workers", params={"partialName": "w", "take": 10, "skip": 10,
                                                    "workerPoolIds": "WorkerPools-2"}).json()
    assert body["TotalResults"] == 40 and [w["Name"] for w in body["Items"]][:2] == ["w10", "w11"]
    links = body["Links"]
    assert links["Self"] == "/api/Spaces-1/workers?skip=10&partialName=w&workerPoolIds=WorkerPools-2&take=10"
    assert links["Page.Next"] == "/api/Spaces-1/workers?skip=20&partialName=w&workerPoolIds=WorkerPools-2&take=10"
    assert links["Page.Last"].startswith("/api/Spaces-1/workers?skip=30&")
    assert links["Template"] == ("/api/Spaces-1/workers{?skip,take,name,ids,partialName,isDisabled,healthStatuses,"
                                 "commStyles,workerPoolIds,thumbprint,shellNames}")


def test_take_zero_and_skip_past_end(api):
    body = api.get("/api/spaces", params={"take": 0}).json()
    assert body["Items"] == [] and body["TotalResults"] == 1 and "Page.Next" not in body["Links"]
    body = api.get("/api/spaces", params={"skip": 5}).json()
    assert body["Items"] == [] and body["TotalResults"] == 1


# ------------------------------------------------------------------------------------------ route forms
def test_three_route_forms_reach_the_same_space(api, emulator):
    emulator.control.reset(make_scenario(2, "Pool", workers={1: [make_worker("only-in-1")]}))
    by_id = api.get("/api/Spaces-1/workers").json()
    by_spaces = api.get("/api/spaces/Spaces-1/workers").json()
    legacy = api.get("/api/workers").json()
    assert [w["Id"] for w in by_id["Items"]] == [w["Id"] for w in by_spaces["Items"]] == [
        w["Id"] for w in legacy["Items"]] == ["Workers-1"]
    assert api.get("/api/Spaces-2/workers").json()["TotalResults"] == 0
    # the log knows the space, the counters fold the forms into one route key
    log = emulator.control.requests()
    assert [e["space_id"] for e in log[-4:]] == ["Spaces-1", "Spaces-1", "Spaces-1", "Spaces-2"]
    counters = emulator.control.counters()
    assert counters["by_route"]["GET /api/{space}/workers"] >= 4


def test_ids_are_case_insensitive(api):
    assert api.get("/api/spaces-1/workerpools").status_code == 200
    assert api.get("/api/Spaces-1/machinepolicies/machinepolicies-1").json()["Id"] == "MachinePolicies-1"


def test_legacy_routes_without_default_space(api, emulator):
    emulator.control.reset(make_scenario(2, "Pool", default_space=None))
    assert "Workers" not in api.get("/api").json()["Links"]
    resp = api.get("/api/workers")
    assert resp.status_code == 404 and "ErrorMessage" in resp.json()


# ------------------------------------------------------------------------------------------ pools, policies
def test_pools_sorted_by_sort_order_dynamic_pool_shape(api, emulator):
    emulator.control.reset({"spaces": [{"Name": "S", "pools": [
        {"Name": "Zed", "SortOrder": 1}, {"Name": "Alpha", "SortOrder": 5},
        {"Name": "Hosted Ubuntu", "WorkerPoolType": "DynamicWorkerPool", "SortOrder": 3}]}]})
    pools = api.get("/api/Spaces-1/workerpools").json()
    assert pools["ItemType"] == "WorkerPool"
    assert [p["Name"] for p in pools["Items"]] == ["Default Worker Pool", "Zed", "Hosted Ubuntu", "Alpha"]
    static = pools["Items"][1]
    assert list(static) == ["Id", "Name", "Slug", "Description", "IsDefault", "SortOrder", "SpaceId",
                            "WorkerPoolType", "CanAddWorkers", "LastModifiedOn", "LastModifiedBy", "Links"]
    assert static["WorkerPoolType"] == "StaticWorkerPool" and static["CanAddWorkers"] is True
    assert static["Links"]["Workers"] == f"/api/Spaces-1/workerpools/{static['Id']}/workers{{?skip,take}}"
    dynamic = pools["Items"][2]
    assert dynamic["WorkerPoolType"] == "DynamicWorkerPool" and dynamic["CanAddWorkers"] is False
    assert "WorkerType" in dynamic
    assert isinstance(api.get("/api/Spaces-1/workerpools/all").json(), list)
    assert [p["Name"] for p in api.get("/api/Spaces-1/workerpools", params={"name": "alpha"}).json()["Items"]] == [
        "Alpha"]
    assert [p["Name"] for p in api.get("/api/Spaces-1/workerpools",
                                       params={"partialName": "pool"}).json()["Items"]] == ["Default Worker Pool"]


def test_pool_crud_and_pool_workers(api, emulator):
    resp = api.post("/api/Spaces-1/workerpools", {"Name": "New Pool"})
    assert resp.status_code == 201
    pool = resp.json()
    assert pool["SpaceId"] == "Spaces-1" and pool["Slug"] == "new-pool" and pool["SortOrder"] == 1
    dup = api.post("/api/Spaces-1/workerpools", {"Name": "new pool"})
    assert dup.status_code == 400 and dup.json()["Errors"]
    pool["Description"] = "changed"
    resp = api.put(f"/api/Spaces-1/workerpools/{pool['Id']}", pool)
    assert resp.status_code == 200 and resp.json()["Description"] == "changed"
    assert api.post("/api/Spaces-1/workers", polling_body("w1", [pool["Id"]])).status_code == 201
    members = api.get(f"/api/Spaces-1/workerpools/{pool['Id']}/workers").json()
    assert members["ItemType"] == "Worker" and [w["Name"] for w in members["Items"]] == ["w1"]
    assert api.delete(f"/api/Spaces-1/workerpools/{pool['Id']}").status_code == 400  # still has a worker [I]
    assert api.delete("/api/Spaces-1/workerpools/WorkerPools-1").status_code == 400  # the default pool [I]


def test_machine_policies(api, emulator):
    emulator.control.reset({"spaces": [{"Name": "S", "policies": [{"Name": "Another"}]}]})
    body = api.get("/api/Spaces-1/machinepolicies").json()
    assert body["ItemType"] == "MachinePolicy"
    assert [p["Name"] for p in body["Items"]] == ["Another", "Default Machine Policy"]
    default = api.get("/api/Spaces-1/machinepolicies/MachinePolicies-1").json()
    assert default["IsDefault"] is True and default["SpaceId"] == "Spaces-1"
    assert default["Links"]["Self"] == "/api/Spaces-1/machinepolicies/MachinePolicies-1"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", default["PollingRequestQueueTimeout"])
    # no `name` filter on machine policies: the parameter is ignored like on the real server
    assert api.get("/api/Spaces-1/machinepolicies", params={"name": "Another"}).json()["TotalResults"] == 2
    assert api.get("/api/Spaces-1/machinepolicies", params={"partialName": "default"}).json()["TotalResults"] == 1
    assert isinstance(api.get("/api/Spaces-1/machinepolicies/all").json(), list)
    assert "Id" not in api.get("/api/Spaces-1/machinepolicies/template").json()


def test_global_id_numbering(api, emulator):
    emulator.control.reset(make_scenario(3, "Pool"))
    assert [p["Id"] for p in api.get("/api/Spaces-3/machinepolicies").json()["Items"]] == ["MachinePolicies-3"]
    assert [p["Id"] for p in api.get("/api/Spaces-2/workerpools").json()["Items"]] == ["WorkerPools-3",
                                                                                        "WorkerPools-4"]
    a = api.post("/api/Spaces-2/workers", polling_body("w", ["WorkerPools-4"])).json()
    b = api.post("/api/Spaces-3/workers", polling_body("w", ["WorkerPools-6"])).json()
    assert (a["Id"], b["Id"]) == ("Workers-1", "Workers-2")


# ------------------------------------------------------------------------------------------ workers
WORKER_FIELDS = ["Id", "Name", "Slug", "SpaceId", "WorkerPoolIds", "Thumbprint", "Uri", "IsDisabled",
                 "MachinePolicyId", "Status", "HealthStatus", "HasLatestCalamari", "StatusSummary", "IsInProcess",
                 "SkipInitialHealthCheck", "Endpoint", "OperatingSystem", "OperatingSystemVersion", "ShellName",
                 "ShellVersion", "Architecture", "LastModifiedOn", "LastModifiedBy", "Links"]


def test_post_worker_201_full_resource(api):
    body = polling_body("airflow-w1", ["WorkerPools-1"])
    resp = api.post("/api/Spaces-1/workers", body)
    assert resp.status_code == 201
    w = resp.json()
    assert list(w) == WORKER_FIELDS
    assert w["Id"] == "Workers-1" and w["SpaceId"] == "Spaces-1"
    assert w["MachinePolicyId"] == "MachinePolicies-1"  # default policy when omitted
    assert w["Thumbprint"] == body["Endpoint"]["Thumbprint"] and w["Uri"] == body["Endpoint"]["Uri"]
    assert w["HealthStatus"] == "Unknown"
    assert w["StatusSummary"] == "This machine was recently added. Please perform a health check."
    assert w["Endpoint"]["CommunicationStyle"] == "TentacleActive"
    assert set(w["Endpoint"]["TentacleVersionDetails"]) == {"UpgradeLocked", "Version", "UpgradeSuggested",
                                                            "UpgradeRequired", "UpgradeAvailable"}
    assert w["Links"] == {"Self": "/api/Spaces-1/workers/Workers-1",
                          "Connection": "/api/Spaces-1/workers/Workers-1/connection"}
    assert DATE_RE.match(w["LastModifiedOn"])
    assert api.get("/api/Spaces-1/workers/Workers-1").json() == w


def test_server_managed_and_unknown_fields_are_ignored(api):
    body = polling_body("w", ["WorkerPools-1"], HealthStatus="Healthy", HasLatestCalamari=True, IsInProcess=True,
                        StatusSummary="all good", Status="Online", Whatever={"x": 1}, Id="Workers-77")
    w = api.post("/api/Spaces-1/workers", body).json()
    assert w["HealthStatus"] == "Unknown" and w["HasLatestCalamari"] is False and w["IsInProcess"] is False
    assert w["StatusSummary"].startswith("This machine was recently added") and "Whatever" not in w
    assert w["Id"] == "Workers-1"


@pytest.mark.parametrize("mutate,fragment", [
    (lambda b: b.pop("Name"), "name field is required"),
    (lambda b: b.update(Name="  "), "name field is required"),
    (lambda b: b.pop("Endpoint"), "Endpoint"),
    (lambda b: b["Endpoint"].pop("CommunicationStyle"), "CommunicationStyle"),
    (lambda b: b["Endpoint"].update(CommunicationStyle="Teleport"), "CommunicationStyle"),
    (lambda b: b["Endpoint"].update(CommunicationStyle="AzureWebApp"), "AzureWebApp"),
    (lambda b: b["Endpoint"].pop("Thumbprint"), "Please provide a thumbprint for this machine."),
    (lambda b: b["Endpoint"].pop("Uri"), "URI"),
    (lambda b: b["Endpoint"].update(Uri="https://host:10933/"), "poll://"),
    (lambda b: b.update(WorkerPoolIds=[]), "worker pool"),
    (lambda b: b.pop("WorkerPoolIds"), "worker pool"),
    (lambda b: b.update(WorkerPoolIds=["WorkerPools-999"]), "WorkerPools-999"),
    (lambda b: b.update(WorkerPoolIds=["WorkerPools-4"]), "WorkerPools-4"),  # exists, but in Spaces-2
    (lambda b: b.update(WorkerPoolIds=["WorkerPools-3"]), "dynamic"),
    (lambda b: b.update(MachinePolicyId="MachinePolicies-99"), "MachinePolicies-99"),
    (lambda b: b.update(MachinePolicyId="MachinePolicies-2"), "MachinePolicies-2"),  # other space's policy
    (lambda b: b.update(SpaceId="Spaces-2"), "Spaces-2"),
    (lambda b: b.update(IsDisabled="no"), "IsDisabled"),
])
def test_post_worker_validation(api, emulator, mutate, fragment):
    emulator.control.reset({"spaces": [
        {"Name": "One", "pools": [{"Name": "Static"}, {"Name": "Dyn", "WorkerPoolType": "DynamicWorkerPool"}]},
        {"Name": "Two", "pools": [{"Name": "Static"}]}]})
    body = polling_body("w1", ["WorkerPools-2"])
    mutate(body)
    resp = api.post("/api/Spaces-1/workers", body)
    assert resp.status_code == 400
    err = resp.json()
    assert err["ErrorMessage"] == "There was a problem with your request."
    assert any(fragment.lower() in e.lower() for e in err["Errors"]), err
    assert api.get("/api/Spaces-1/workers").json()["TotalResults"] == 0


def test_non_json_and_empty_bodies(api):
    resp = api.session.post(api.url + "/api/Spaces-1/workers", data="{nope")
    assert resp.status_code == 400 and resp.json()["Errors"]
    resp = api.session.post(api.url + "/api/Spaces-1/workers", data="")
    assert resp.status_code == 400 and resp.json()["Errors"] == ["No request body was supplied"]
    assert api.post("/api/Spaces-1/workers", ["a", "list"]).status_code == 400


def test_duplicate_names_same_space_rejected_other_space_allowed(api, emulator):
    emulator.control.reset(make_scenario(2, "Pool"))
    assert api.post("/api/Spaces-1/workers", polling_body("Shared", ["WorkerPools-2"])).status_code == 201
    resp = api.post("/api/Spaces-1/workers", polling_body("shared", ["WorkerPools-2"], seed="other"))
    assert resp.status_code == 400 and "already exists" in resp.json()["Errors"][0]
    # same name AND the same polling endpoint in another space: the cross-space sharing workaround
    assert api.post("/api/Spaces-2/workers", polling_body("Shared", ["WorkerPools-4"])).status_code == 201


def test_same_endpoint_twice_in_one_space_rejected(api):
    assert api.post("/api/Spaces-1/workers", polling_body("a", ["WorkerPools-1"], seed="x")).status_code == 201
    resp = api.post("/api/Spaces-1/workers", polling_body("b", ["WorkerPools-1"], seed="x"))
    assert resp.status_code == 400


def test_strict_endpoints_forbids_cross_space_duplicates(api, emulator):
    emulator.control.reset(make_scenario(2, "Pool", strict_endpoints=True))
    assert api.post("/api/Spaces-1/workers", polling_body("w", ["WorkerPools-2"])).status_code == 201
    resp = api.post("/api/Spaces-2/workers", polling_body("w", ["WorkerPools-4"]))
    assert resp.status_code == 400 and "single space" in resp.json()["Errors"][0]


def test_put_and_delete_worker(api, emulator):
    emulator.control.reset(make_scenario(1, ["Pool A", "Pool B"]))
    w = api.post("/api/Spaces-1/workers", polling_body("w", ["WorkerPools-2"])).json()
    w["WorkerPoolIds"] = ["WorkerPools-2", "WorkerPools-3"]
    w["HealthStatus"] = "Healthy"  # ignored
    resp = api.put(f"/api/Spaces-1/workers/{w['Id']}", w)
    assert resp.status_code == 200
    assert resp.json()["WorkerPoolIds"] == ["WorkerPools-2", "WorkerPools-3"]
    assert resp.json()["HealthStatus"] == "Unknown"
    # PUT needs the Id of the route
    bad = dict(w, Id="Workers-99")
    assert api.put(f"/api/Spaces-1/workers/{w['Id']}", bad).status_code == 400
    assert api.put(f"/api/Spaces-1/workers/{w['Id']}", {k: v for k, v in w.items() if k != "Id"}).status_code == 400
    assert api.put("/api/Spaces-1/workers/Workers-99", dict(w, Id="Workers-99")).status_code == 404
    resp = api.delete(f"/api/Spaces-1/workers/{w['Id']}")
    assert resp.status_code == 200
    assert api.get(f"/api/Spaces-1/workers/{w['Id']}").status_code == 404
    assert api.delete(f"/api/Spaces-1/workers/{w['Id']}").status_code == 404
    # a worker is only reachable through its own space
    w2 = api.post("/api/Spaces-1/workers", polling_body("w2", ["WorkerPools-2"])).json()
    emulator.control.reset(make_scenario(2, "Pool"))
    assert api.get(f"/api/Spaces-2/workers/{w2['Id']}").status_code == 404


def test_worker_filters(api, emulator):
    workers = [
        make_worker("alpha-1", pools=["Pool A"], HealthStatus="Healthy"),
        make_worker("alpha-2", pools=["Pool B"], HealthStatus="Unavailable", IsDisabled=True),
        make_worker("beta-1", pools=["Pool A", "Pool B"], HealthStatus="Healthy"),
        {"Name": "listening", "CommunicationStyle": "TentaclePassive", "pools": ["Pool A"],
         "HealthStatus": "Unhealthy"},
    ]
    emulator.control.reset(make_scenario(1, ["Pool A", "Pool B"], workers={1: workers}))

    def names(**params):
        body = api.get("/api/Spaces-1/workers", params=params).json()
        return [w["Name"] for w in body["Items"]]

    assert names() == ["alpha-1", "alpha-2", "beta-1", "listening"]
    assert names(name="ALPHA-1") == ["alpha-1"]
    assert names(name="alpha") == []
    assert names(partialName="ALPHA") == ["alpha-1", "alpha-2"]
    assert names(ids="Workers-3,Workers-1") == ["alpha-1", "beta-1"]
    assert names(isDisabled="true") == ["alpha-2"]
    assert names(isDisabled="False") == ["alpha-1", "beta-1", "listening"]
    assert names(healthStatuses="Healthy,Unhealthy") == ["alpha-1", "beta-1", "listening"]
    assert names(commStyles="TentaclePassive") == ["listening"]
    assert names(commStyles="TentacleActive,TentaclePassive") == ["alpha-1", "alpha-2", "beta-1", "listening"]
    assert names(workerPoolIds="WorkerPools-3") == ["alpha-2", "beta-1"]
    assert names(workerPoolIds="WorkerPools-2,WorkerPools-3", partialName="beta") == ["beta-1"]
    thumb = make_worker("alpha-2")["Thumbprint"]
    assert names(thumbprint=thumb.lower()) == ["alpha-2"]
    everything = api.get("/api/Spaces-1/workers/all").json()
    assert isinstance(everything, list) and len(everything) == 4
    assert [w["Name"] for w in api.get("/api/Spaces-1/workers/all", params={"thumbprint": thumb}).json()] == [
        "alpha-2"]
    assert [w["Name"] for w in api.get("/api/Spaces-1/workers/all", params={"ids": "Workers-4"}).json()] == [
        "listening"]


def test_workers_sorted_by_name_case_insensitively(api, emulator):
    emulator.control.reset(make_scenario(1, "Pool", workers={1: [make_worker(n) for n in ("b", "C", "a", "B2")]}))
    assert [w["Name"] for w in api.get("/api/Spaces-1/workers").json()["Items"]] == ["a", "b", "B2", "C"]


def test_seeded_polling_worker_shape(api, emulator):
    emulator.control.reset(make_scenario(1, "Pool", workers={1: [make_worker("seeded", HealthStatus="Healthy")]}))
    w = api.get("/api/Spaces-1/workers/Workers-1").json()
    assert list(w) == WORKER_FIELDS
    assert w["HealthStatus"] == "Healthy" and w["Status"] == "Online"
    assert w["Uri"].startswith("poll://") and w["Endpoint"]["Uri"] == w["Uri"]
