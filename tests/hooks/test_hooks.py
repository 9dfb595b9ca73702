"""OctopusHook against the Octopus emulator over real HTTP: paging, workers CRUD, errors, retries, secrets."""

from __future__ import annotations

import json
import logging
import math
import socket

import pytest
import requests

from octopus.exceptions import (
    OctopusAuthenticationError,
    OctopusError,
    OctopusNotFoundError,
    OctopusPermissionError,
    OctopusRateLimitError,
    OctopusServerError,
    OctopusUnavailableError,
    OctopusValidationError,
)
from octopus.hooks import OctopusHook
from octopus.pacing import TokenBucket
from octopus_emulator.scenario import make_scenario, make_worker

POOL = "Airflow Pool"


def api_log(emulator) -> list[dict]:
    """The emulator's request log (API requests only; control requests are not logged)."""
    return emulator.control.requests()


def workers_scenario(n: int, **options) -> dict:
    return make_scenario(1, POOL, workers={1: [make_worker(f"w{i:04d}") for i in range(n)]}, **options)


def pool_id(hook: OctopusHook, space_id: str = "Spaces-1", name: str = POOL) -> str:
    return next(p["Id"] for p in hook.list_worker_pools(space_id) if p["Name"] == name)


def new_worker(name: str, pool: str) -> dict:
    seeded = make_worker(name)
    return {
        "Name": name,
        "IsDisabled": False,
        "WorkerPoolIds": [pool],
        "Endpoint": {
            "CommunicationStyle": "TentacleActive",
            "Uri": seeded["Uri"],
            "Thumbprint": seeded["Thumbprint"],
        },
    }


class TestOctopusHookPaging:
    @pytest.mark.parametrize("n", [0, 1, 29, 30, 31, 95, 1000])
    def test_list_workers_returns_every_page(self, emulator, octopus_conn, n):
        emulator.control.reset(workers_scenario(n))
        octopus_conn(page_size=30)
        hook = OctopusHook()
        workers = hook.list_workers("Spaces-1")
        assert [w["Name"] for w in workers] == [f"w{i:04d}" for i in range(n)]
        assert hook.request_count == max(1, math.ceil(n / 30))

    def test_page_requests_follow_page_next(self, emulator, octopus_conn):
        emulator.control.reset(workers_scenario(95))
        octopus_conn(page_size=30)
        OctopusHook().list_workers("Spaces-1")
        skips = [dict(_query_pairs(entry)).get("skip", "0") for entry in api_log(emulator)]
        assert skips == ["0", "30", "60", "90"]

    def test_default_page_size_reads_1000_workers_in_one_request(self, emulator, octopus_conn):
        emulator.control.reset(workers_scenario(1000))
        hook = OctopusHook()
        assert len(hook.list_workers("Spaces-1")) == 1000
        assert hook.request_count == 1

    def test_list_spaces_reads_1000_spaces_in_one_request(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1000, POOL))
        hook = OctopusHook()
        spaces = hook.list_spaces()
        assert len(spaces) == 1000
        assert spaces[0]["Id"] == "Spaces-1"
        assert hook.request_count == 1

    def test_list_worker_pools_in_sort_order(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, ["Second", "Third"]))
        names = [p["Name"] for p in OctopusHook().list_worker_pools("Spaces-1")]
        assert names == ["Default Worker Pool", "Second", "Third"]

    def test_filters_are_sent_in_one_request(self, emulator, octopus_conn):
        emulator.control.reset(workers_scenario(3))
        hook = OctopusHook()
        pool = pool_id(hook)
        target = make_worker("w0001")
        emulator.control.clear_requests()
        workers = hook.list_workers(
            "Spaces-1", worker_pool_id=pool, thumbprint=target["Thumbprint"], comm_styles="TentacleActive"
        )
        assert [w["Name"] for w in workers] == ["w0001"]
        query = dict(_query_pairs(api_log(emulator)[0]))
        assert query["workerPoolIds"] == pool
        assert query["thumbprint"] == target["Thumbprint"]
        assert query["commStyles"] == "TentacleActive"

    def test_comm_styles_list_is_comma_separated(self, emulator, octopus_conn):
        emulator.control.reset(workers_scenario(2))
        hook = OctopusHook()
        assert len(hook.list_workers("Spaces-1", comm_styles=["TentacleActive", "TentaclePassive"])) == 2
        assert dict(_query_pairs(api_log(emulator)[0]))["commStyles"] == "TentacleActive,TentaclePassive"

    def test_path_prefix_is_kept_on_every_page(self, emulator, octopus_conn):
        """A server behind ``https://host/octopus``: requests and followed links keep the prefix."""
        emulator.control.reset(workers_scenario(65))
        octopus_conn(host=emulator.url + "/octopus", page_size=30)
        seen: list[str] = []
        hook = OctopusHook(adapter=_StripPrefixAdapter("/octopus", seen))
        assert len(hook.list_workers("Spaces-1")) == 65
        assert len(seen) == 3
        assert all("/octopus/api/Spaces-1/workers" in url for url in seen)

    def test_links_that_already_carry_the_prefix_are_not_doubled(self, emulator, octopus_conn):
        """Some servers or proxies emit links with the virtual directory: follow them as they are."""
        emulator.control.reset(workers_scenario(65))
        octopus_conn(host=emulator.url + "/octopus", page_size=30)
        seen: list[str] = []
        hook = OctopusHook(adapter=_StripPrefixAdapter("/octopus", seen, prefix_links=True))
        assert len(hook.list_workers("Spaces-1")) == 65
        assert len(seen) == 3
        assert all("/octopus/api/Spaces-1/workers" in url and "/octopus/octopus" not in url for url in seen)

    def test_link_to_another_server_is_refused(self, emulator, octopus_conn):
        emulator.control.reset(workers_scenario(31))
        octopus_conn(page_size=30)
        hook = OctopusHook(adapter=_StripPrefixAdapter("", [], link_origin="https://elsewhere.example.com"))
        with pytest.raises(OctopusError, match="refusing to follow a link to another server"):
            hook.list_workers("Spaces-1")
        assert hook.request_count == 1


class TestOctopusHookWorkers:
    def test_create_worker_returns_the_stored_worker(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(2, POOL))
        hook = OctopusHook()
        created = hook.create_worker("Spaces-2", new_worker("w1", pool_id(hook, "Spaces-2")))
        assert created["Id"].startswith("Workers-")
        assert created["SpaceId"] == "Spaces-2"

    def test_create_worker_without_policy_gets_the_default_policy(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, POOL))
        hook = OctopusHook()
        created = hook.create_worker("Spaces-1", new_worker("w1", pool_id(hook)))
        assert created["MachinePolicyId"] == hook.get_default_machine_policy("Spaces-1")["Id"]

    def test_get_default_machine_policy(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, POOL))
        policy = OctopusHook().get_default_machine_policy("Spaces-1")
        assert policy["Name"] == "Default Machine Policy"
        assert policy["IsDefault"] is True

    def test_update_worker_changes_its_pools(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, [POOL, "Other"]))
        hook = OctopusHook()
        created = hook.create_worker("Spaces-1", new_worker("w1", pool_id(hook)))
        other = pool_id(hook, name="Other")
        updated = hook.update_worker("Spaces-1", {**created, "WorkerPoolIds": [other]})
        assert updated["WorkerPoolIds"] == [other]
        assert hook.get_worker("Spaces-1", created["Id"])["WorkerPoolIds"] == [other]

    def test_delete_worker_removes_it(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, POOL))
        hook = OctopusHook()
        created = hook.create_worker("Spaces-1", new_worker("w1", pool_id(hook)))
        hook.delete_worker("Spaces-1", created["Id"])
        with pytest.raises(OctopusNotFoundError):
            hook.get_worker("Spaces-1", created["Id"])

    def test_delete_missing_worker_raises_not_found(self, emulator, octopus_conn):
        with pytest.raises(OctopusNotFoundError):
            OctopusHook().delete_worker("Spaces-1", "Workers-999")

    def test_delete_missing_worker_with_missing_ok(self, emulator, octopus_conn):
        OctopusHook().delete_worker("Spaces-1", "Workers-999", missing_ok=True)

    def test_delete_answered_404_on_a_retry_counts_as_done(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 1, "status": 503, "method": "DELETE"}]})
        hook = OctopusHook()
        hook.delete_worker("Spaces-1", "Workers-999")
        assert [(e["method"], e["status"]) for e in api_log(emulator)] == [("DELETE", 503), ("DELETE", 404)]

    def test_space_id_mismatch_is_refused_before_sending(self, emulator, octopus_conn):
        hook = OctopusHook()
        with pytest.raises(ValueError, match="SpaceId"):
            hook.create_worker("Spaces-1", {**new_worker("w1", "WorkerPools-1"), "SpaceId": "Spaces-2"})
        assert hook.request_count == 0

    @pytest.mark.parametrize("space_id", ["Spaces-x", "spaces-1", "", None, "Spaces-1/../x"])
    def test_invalid_space_id_is_refused_before_sending(self, emulator, octopus_conn, space_id):
        hook = OctopusHook()
        with pytest.raises(ValueError, match="space_id must look like 'Spaces-1'"):
            hook.list_workers(space_id)
        assert hook.request_count == 0

    def test_does_not_modify_the_callers_worker(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, POOL))
        hook = OctopusHook()
        worker = new_worker("w1", pool_id(hook))
        hook.create_worker("Spaces-1", worker)
        assert "SpaceId" not in worker


class TestOctopusHookErrors:
    def test_invalid_key_fails_at_once_without_retry(self, emulator, octopus_conn):
        octopus_conn(password="API-WRONGWRONGWRONG")
        hook = OctopusHook()
        with pytest.raises(OctopusAuthenticationError) as info:
            hook.list_spaces()
        assert info.value.status == 401
        assert "check the API key" in str(info.value)
        assert len(api_log(emulator)) == 1

    def test_forbidden_space_raises_permission_error(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(2, POOL))
        emulator.control.set_faults({"forbidden_spaces": ["Spaces-2"]})
        with pytest.raises(OctopusPermissionError) as info:
            OctopusHook().list_worker_pools("Spaces-2")
        assert info.value.status == 403
        assert "permission" in info.value.error_message.lower()
        assert len(api_log(emulator)) == 1

    def test_unknown_space_raises_not_found_with_octopus_message(self, emulator, octopus_conn):
        with pytest.raises(OctopusNotFoundError) as info:
            OctopusHook().list_worker_pools("Spaces-999")
        assert "GET /api/Spaces-999/workerpools/all" in str(info.value)
        assert "404" in str(info.value)
        assert info.value.error_message and info.value.error_message in str(info.value)

    def test_duplicate_name_raises_validation_error_with_errors(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, POOL))
        hook = OctopusHook()
        pool = pool_id(hook)
        hook.create_worker("Spaces-1", new_worker("w1", pool))
        duplicate = new_worker("w1", pool)
        duplicate["Endpoint"] = new_worker("w2", pool)["Endpoint"]
        with pytest.raises(OctopusValidationError) as info:
            hook.create_worker("Spaces-1", duplicate)
        assert info.value.status == 400
        assert info.value.errors
        assert info.value.errors[0] in str(info.value)

    def test_validation_error_is_not_retried(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, POOL))
        hook = OctopusHook()
        emulator.control.clear_requests()
        with pytest.raises(OctopusValidationError):
            hook.create_worker("Spaces-1", {"Name": ""})
        assert [e["method"] for e in api_log(emulator)] == ["POST"]

    def test_html_502_from_a_proxy_is_described(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 10, "status": 502, "html": True}]})
        with pytest.raises(OctopusServerError) as info:
            OctopusHook().list_spaces()
        text = str(info.value)
        assert "HTTP 502" in text
        assert "non-JSON body (text/html" in text
        assert "<" not in text.split("non-JSON body")[1]

    def test_persistent_5xx_gives_up_after_max_attempts(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 10, "status": 500}]})
        octopus_conn(max_attempts=3)
        hook = OctopusHook()
        with pytest.raises(OctopusServerError) as info:
            hook.list_spaces()
        assert info.value.attempts == 3
        assert "gave up after 3 attempts" in str(info.value)
        assert len(api_log(emulator)) == 3
        assert hook.request_count == 3

    def test_transient_503_is_retried_until_success(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 2, "status": 503}]})
        hook = OctopusHook()
        assert hook.list_spaces()
        assert [e["status"] for e in api_log(emulator)] == [503, 503, 200]
        assert [event.attempt for event in hook.retry_events] == [1, 2]

    def test_post_is_retried_after_5xx(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(1, POOL))
        hook = OctopusHook()
        pool = pool_id(hook)
        emulator.control.set_faults({"fail_next": [{"count": 1, "status": 503, "method": "POST"}]})
        emulator.control.clear_requests()
        assert hook.create_worker("Spaces-1", new_worker("w1", pool))["Id"]
        assert [(e["method"], e["status"]) for e in api_log(emulator)] == [("POST", 503), ("POST", 201)]

    def test_retry_after_is_honoured(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 1, "status": 429, "retry_after": 1}]})
        hook = OctopusHook()
        hook.list_spaces()
        (event,) = hook.retry_events
        assert event.retry_after == 1
        assert event.wait_seconds >= 1
        assert [e["status"] for e in api_log(emulator)] == [429, 200]

    def test_retry_after_beyond_the_budget_gives_up_at_once(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 1, "status": 429, "retry_after": 300}]})
        octopus_conn(max_retry_seconds=5)
        with pytest.raises(OctopusRateLimitError) as info:
            OctopusHook().list_spaces()
        assert info.value.retry_after == 300
        assert len(api_log(emulator)) == 1

    def test_429s_do_not_use_up_the_attempts(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 3, "status": 429, "retry_after": 0}]})
        octopus_conn(max_attempts=2)
        assert OctopusHook().list_spaces()
        assert [e["status"] for e in api_log(emulator)] == [429, 429, 429, 200]

    def test_other_failures_still_stop_at_max_attempts_between_429s(self, emulator, octopus_conn):
        faults = [{"count": 1, "status": 429, "retry_after": 0}, {"count": 5, "status": 503}]
        emulator.control.set_faults({"fail_next": faults})
        octopus_conn(max_attempts=2)
        with pytest.raises(OctopusServerError):
            OctopusHook().list_spaces()
        assert [e["status"] for e in api_log(emulator)] == [429, 503, 503]

    def test_dropped_connections_raise_unavailable(self, emulator, octopus_conn):
        emulator.control.set_faults({"drop_rate": 1.0})
        octopus_conn(max_attempts=2)
        with pytest.raises(OctopusUnavailableError) as info:
            OctopusHook().list_spaces()
        assert info.value.attempts == 2

    def test_refused_connection_is_retried_then_unavailable(self, octopus_conn):
        octopus_conn(host=f"http://127.0.0.1:{_closed_port()}", max_attempts=3)
        hook = OctopusHook()
        with pytest.raises(OctopusUnavailableError, match="could not reach"):
            hook.list_spaces()
        assert hook.request_count == 3

    def test_starting_server_503_then_ready(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 1, "status": 503, "path_regex": "^/api/spaces"}]})
        assert OctopusHook().list_spaces()


class TestOctopusHookSecrets:
    KEY_FAULTS = [
        {"fail_next": [{"count": 10, "status": 502, "html": True}]},
        {"fail_next": [{"count": 10, "status": 500}]},
        {"fail_next": [{"count": 1, "status": 429, "retry_after": 0}]},
        {"drop_rate": 1.0},
    ]

    @pytest.mark.parametrize("faults", KEY_FAULTS)
    def test_key_never_in_logs_or_errors(self, emulator, octopus_conn, caplog, faults):
        emulator.control.set_faults(faults)
        caplog.set_level(logging.DEBUG)
        hook = OctopusHook()
        try:
            result = hook.list_spaces()
        except OctopusError as error:
            result = error
            assert emulator.api_key not in repr(error.args)
        assert emulator.api_key not in str(result)
        assert emulator.api_key not in caplog.text
        assert caplog.records  # something was logged, so the check above means something

    def test_wrong_key_never_in_logs_or_errors(self, emulator, octopus_conn, caplog):
        wrong = "API-SHOULDNOTAPPEAR0001"
        octopus_conn(password=wrong)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(OctopusAuthenticationError) as info:
            OctopusHook().list_spaces()
        assert wrong not in str(info.value)
        assert wrong not in caplog.text

    def test_server_url_has_no_key(self, emulator, octopus_conn):
        assert emulator.api_key not in OctopusHook().server_url


class TestOctopusHookSession:
    def test_one_tcp_connection_for_many_requests(self, emulator, octopus_conn):
        emulator.control.reset(make_scenario(20, POOL))
        hook = OctopusHook()
        for space in hook.list_spaces():
            hook.list_worker_pools(space["Id"])
        assert hook.request_count == 21
        assert tcp_connections_opened(hook.get_conn(), emulator.url) == 1

    def test_request_count_matches_server_log(self, emulator, octopus_conn):
        emulator.control.reset(workers_scenario(70))
        emulator.control.set_faults({"fail_next": [{"count": 1, "status": 503}]})
        octopus_conn(page_size=30)
        hook = OctopusHook()
        hook.list_workers("Spaces-1")
        assert hook.request_count == len(api_log(emulator)) == 4

    def test_pacing_waits_once_the_burst_is_spent(self, emulator, octopus_conn):
        clock = FrozenClock()
        hook = OctopusHook(pacing=TokenBucket(60, burst=10, clock=clock, sleep=clock.sleep))
        for _ in range(12):
            hook.list_spaces()
        assert clock.sleeps == pytest.approx([1.0, 2.0])

    def test_pacing_takes_a_token_for_every_retry(self, emulator, octopus_conn):
        emulator.control.set_faults({"fail_next": [{"count": 2, "status": 503}]})
        clock = FrozenClock()
        hook = OctopusHook(pacing=TokenBucket(60, burst=1, clock=clock, sleep=clock.sleep))
        hook.list_spaces()
        assert clock.sleeps == pytest.approx([1.0, 2.0])

    def test_pacing_from_the_connection_extra(self, emulator, octopus_conn):
        octopus_conn(max_requests_per_minute=180)
        hook = OctopusHook()
        hook.list_spaces()
        assert hook.pacing.rate_per_minute == 180

    def test_test_connection_reports_the_version(self, emulator, octopus_conn):
        ok, message = OctopusHook().test_connection()
        assert ok
        assert message.startswith("Connected to Octopus Deploy ")

    def test_test_connection_reports_a_bad_key(self, emulator, octopus_conn):
        octopus_conn(password="API-WRONGWRONGWRONG")
        ok, message = OctopusHook().test_connection()
        assert not ok
        assert "401" in message


class FrozenClock:
    """A clock that never moves; records the sleeps asked of it instead of sleeping."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def tcp_connections_opened(session: requests.Session, url: str) -> int:
    """Connections urllib3 opened for this session's pools (each pool counts the sockets it created)."""
    manager = session.get_adapter(url).poolmanager
    return sum(manager.pools[key].num_connections for key in manager.pools.keys())  # noqa: SIM118 (no __iter__)


def _query_pairs(entry: dict) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    query = entry.get("query") or ""
    if isinstance(query, dict):
        return [(k, v if isinstance(v, str) else ",".join(v)) for k, v in query.items()]
    return parse_qsl(query.lstrip("?"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _StripPrefixAdapter(requests.adapters.HTTPAdapter):
    """Plays a reverse proxy in front of a server under ``prefix``: strips the prefix, records the URLs.

    ``prefix_links`` makes it rewrite ``Page.Next`` links to carry the prefix; ``link_origin`` makes them
    absolute URLs on that origin.
    """

    def __init__(self, prefix: str, seen: list[str], *, prefix_links: bool = False, link_origin: str = "") -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = seen
        self.prefix_links = prefix_links
        self.link_origin = link_origin

    def send(self, request, *args, **kwargs):
        self.seen.append(request.url)
        request.url = request.url.replace(self.prefix + "/api/", "/api/", 1)
        response = super().send(request, *args, **kwargs)
        if self.prefix_links or self.link_origin:
            body = response.json()
            links = body.get("Links", {}) if isinstance(body, dict) else {}
            if "Page.Next" in links:
                head = self.link_origin + (self.prefix if self.prefix_links else "")
                links["Page.Next"] = head + links["Page.Next"]
                response._content = json.dumps(body).encode()
        return response
