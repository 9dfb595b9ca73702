"""Fault injection over real HTTP: every kind, determinism, counters."""

from __future__ import annotations

import time

import pytest
import requests

from octopus_emulator.scenario import make_scenario, make_worker


def get(emulator, path="/api/spaces", session=None, **kw):
    s = session or requests
    return s.get(emulator.url + path, headers=emulator.headers(), timeout=10, **kw)


def test_latency(emulator):
    emulator.control.set_faults({"latency_ms": 150})
    start = time.monotonic()
    assert get(emulator).status_code == 200
    assert time.monotonic() - start >= 0.15
    assert emulator.control.counters()["faults"]["latency"] == 1


def test_error_rate_is_deterministic_for_a_seed(emulator):
    def run():
        emulator.control.set_faults({"error_rate": 0.5, "seed": 42})
        return [get(emulator).status_code for _ in range(40)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 503}
    emulator.control.set_faults({"error_rate": 1.0, "error_status": 500})
    resp = get(emulator)
    assert resp.status_code == 500 and "ErrorMessage" in resp.json()
    counters = emulator.control.counters()
    assert counters["faults"]["error_rate"] == first.count(503) * 2 + 1
    assert counters["by_status"]["503"] == first.count(503) * 2


def test_drop_rate_resets_the_connection(emulator):
    emulator.control.set_faults({"drop_rate": 1.0})
    with pytest.raises(requests.ConnectionError):
        get(emulator)
    emulator.control.set_faults({"drop_rate": 0.5, "seed": 7})
    outcomes = []
    session = requests.Session()
    for _ in range(20):
        try:
            outcomes.append(get(emulator, session=session).status_code)
        except requests.ConnectionError:
            outcomes.append("dropped")
    assert "dropped" in outcomes and 200 in outcomes
    counters = emulator.control.counters()
    assert counters["faults"]["drop"] == 1 + outcomes.count("dropped")
    assert counters["by_status"]["dropped"] == counters["faults"]["drop"]
    assert emulator.control.requests()[-1]["route"] == "GET /api/spaces"


def test_fail_next_matching_method_and_path_with_retry_after(emulator):
    emulator.control.set_faults({"fail_next": [
        {"count": 2, "status": 503, "method": "GET", "path_regex": "/workers$", "retry_after": 3}]})
    assert get(emulator).status_code == 200  # does not match
    for _ in range(2):
        resp = get(emulator, "/api/Spaces-1/workers")
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "3" and "ErrorMessage" in resp.json()
    assert get(emulator, "/api/Spaces-1/workers").status_code == 200
    assert emulator.control.faults()["fail_next"] == []
    assert emulator.control.counters()["faults"]["fail_next"] == 2


def test_fail_next_html_proxy_page_and_drop(emulator):
    emulator.control.set_faults({"fail_next": [{"count": 1, "status": 502, "html": True}, {"count": 1, "drop": True}]})
    resp = get(emulator)
    assert resp.status_code == 502 and resp.headers["content-type"].startswith("text/html")
    assert "nginx" in resp.text and "502 Bad Gateway" in resp.text
    with pytest.raises(requests.ConnectionError):
        get(emulator)
    assert get(emulator).status_code == 200


def test_scheduled_fail_next_picks_the_same_requests_whatever_the_interleaving(emulator):
    emulator.control.reset(make_scenario(4, "Pool"))
    paths = [f"/api/Spaces-{i}/workers" for i in range(1, 5)]

    def run(order):
        emulator.control.set_faults({"seed": 3, "fail_next": [{"rate": 0.3, "status": 503}]})
        outcomes = {path: [] for path in paths}
        for path in order:
            outcomes[path].append(get(emulator, path).status_code)
        return outcomes

    in_turn = run([p for _ in range(10) for p in paths])  # interleaved, like concurrent clients
    one_by_one = run([p for p in reversed(paths) for _ in range(10)])
    assert in_turn == one_by_one
    statuses = [s for seq in in_turn.values() for s in seq]
    assert {200, 503} == set(statuses)
    assert emulator.control.faults()["fail_next"] == [{"rate": 0.3, "status": 503}]  # never consumed
    emulator.control.set_faults({"seed": 4, "fail_next": [{"rate": 0.3, "status": 503}]})
    assert [get(emulator, paths[0]).status_code for _ in range(10)] != in_turn[paths[0]]  # the seed decides


def test_scheduled_fail_next_repeats_then_always_lets_the_retry_through(emulator):
    emulator.control.set_faults({"fail_next": [{"rate": 1.0, "status": 429, "retry_after": 1, "repeat": 3}]})
    responses = [get(emulator) for _ in range(8)]
    assert [r.status_code for r in responses] == [429, 429, 429, 200, 429, 429, 429, 200]
    assert responses[0].headers["Retry-After"] == "1"
    assert get(emulator, "/api/Spaces-1/workers").status_code == 429  # each method and path has its own schedule

    emulator.control.set_faults({"fail_next": [{"rate": 1.0, "drop": True, "method": "GET"}]})
    session, outcomes = requests.Session(), []
    for _ in range(4):
        try:
            outcomes.append(get(emulator, session=session).status_code)
        except requests.ConnectionError:
            outcomes.append("dropped")
    assert outcomes == ["dropped", 200, "dropped", 200]
    resp = requests.post(emulator.url + "/api/Spaces-1/workers", json={}, headers=emulator.headers(), timeout=10)
    assert resp.status_code == 400  # method filter: the POST reaches the application
    assert emulator.control.counters()["faults"]["drop"] == 2


def test_forbidden_and_readonly_spaces(emulator):
    emulator.control.reset(make_scenario(3, "Pool"))
    emulator.control.set_faults({"forbidden_spaces": ["Spaces-2"], "readonly_spaces": ["Spaces-3"]})
    resp = get(emulator, "/api/Spaces-2/workers")
    assert resp.status_code == 403
    assert resp.json() == {"ErrorMessage": "You do not have permission to perform this action. Please contact your "
                                           "Octopus administrator. Missing permission: WorkerView"}
    body = {"Name": "w", "WorkerPoolIds": ["WorkerPools-6"],
            "Endpoint": {"CommunicationStyle": "TentacleActive", "Thumbprint": "AB" * 20, "Uri": "poll://abc/"}}
    resp = requests.post(emulator.url + "/api/Spaces-3/workers", json=body, headers=emulator.headers(), timeout=10)
    assert resp.status_code == 403 and resp.json()["ErrorMessage"].endswith("Missing permission: WorkerEdit")
    assert get(emulator, "/api/Spaces-3/workers").status_code == 200
    assert get(emulator, "/api/Spaces-1/workers").status_code == 200
    assert get(emulator, "/api/spaces").json()["TotalResults"] == 3  # still listed
    assert emulator.control.counters()["faults"]["forbidden"] == 2


def test_rate_limit_token_bucket_per_key(emulator):
    emulator.control.set_faults({"rate_limit": {"per_minute": 60, "burst": 3}})
    statuses = [get(emulator).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = get(emulator)
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1 and "ErrorMessage" in resp.json()
    # a different identity (no key: the client address) has its own bucket; it gets 401, not 429
    assert requests.get(emulator.url + "/api/spaces", timeout=10).status_code == 401
    assert emulator.control.counters()["faults"]["rate_limit"] == 2


def test_rate_limit_refills(emulator):
    emulator.control.set_faults({"rate_limit": {"per_minute": 600, "burst": 1}})  # 10 tokens/s
    assert get(emulator).status_code == 200
    resp = get(emulator)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    time.sleep(0.15)
    assert get(emulator).status_code == 200


def test_starting_server(emulator):
    emulator.control.set_faults({"starting": True})
    for path in ("/api", "/api/spaces", "/api/Spaces-1/workers"):
        resp = requests.get(emulator.url + path, headers=emulator.headers(), timeout=10)
        assert resp.status_code == 503 and "ErrorMessage" in resp.json()
    emulator.control.clear_faults()
    assert requests.get(emulator.url + "/api", timeout=10).status_code == 200
    assert emulator.control.counters()["faults"]["starting"] == 3


def test_busy_worker_delete_refused(emulator):
    emulator.control.reset(make_scenario(1, "Pool", workers={1: [make_worker("busy")]}))
    emulator.control.set_faults({"busy_workers": ["Workers-1"]})
    resp = requests.delete(emulator.url + "/api/Spaces-1/workers/Workers-1", headers=emulator.headers(), timeout=10)
    assert resp.status_code == 400
    assert resp.json()["ErrorMessage"] == "There was a problem with your request."
    assert "busy" in resp.json()["Errors"][0]
    emulator.control.clear_faults()
    assert requests.delete(emulator.url + "/api/Spaces-1/workers/Workers-1",
                           headers=emulator.headers(), timeout=10).status_code == 200


def test_faults_do_not_touch_the_control_api(emulator):
    emulator.control.set_faults({"starting": True, "error_rate": 1.0, "drop_rate": 1.0})
    assert emulator.control.state()["spaces"]
    assert emulator.control.counters()["total"] == 0


def test_bad_fault_configs_rejected(emulator):
    for cfg in ({"nope": 1}, {"drop_rate": 2}, {"fail_next": [{"status": 200}]}, {"rate_limit": {"burst": 1}},
                {"fail_next": [{"path_regex": "("}]}, {"fail_next": [{"rate": 2}]},
                {"fail_next": [{"rate": 0.1, "count": 2}]}, {"fail_next": [{"repeat": 2}]},
                {"fail_next": [{"rate": 0.1, "repeat": 0}]}, {"fail_next": {"rate": 0.1}}):
        resp = requests.put(emulator.url + "/_emulator/faults", json=cfg, timeout=10)
        assert resp.status_code == 400 and "ErrorMessage" in resp.json(), cfg
