"""AsyncOctopusClient follows OctopusHook's rules: each case runs on both against the emulator and compares."""

from __future__ import annotations

import logging
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from octopus.aio import AsyncOctopusClient
from octopus.exceptions import OctopusError
from octopus.hooks import OctopusHook
from octopus.pacing import TokenBucket
from octopus_emulator.scenario import make_scenario, make_worker

POOL = "Airflow Pool"


def statuses(emulator) -> list[int]:
    return [entry["status"] for entry in emulator.control.requests()]


def outcome(call):
    """(result or error type, rendered error, attempts) of one call."""
    try:
        return ("ok", call(), None)
    except OctopusError as error:
        return (type(error).__name__, str(error), error.attempts)


async def both(emulator, faults: dict | None, method: str, *args, **kwargs):
    """Run ``method`` on the sync hook and on the async client with the same faults; return both outcomes."""
    results = []
    for kind in ("sync", "async"):
        emulator.control.clear_requests()
        emulator.control.set_faults(faults or {})
        if kind == "sync":
            with OctopusHook() as hook:
                results.append((outcome(lambda: getattr(hook, method)(*args, **kwargs)), statuses(emulator)))
        else:
            async with AsyncOctopusClient() as client:
                try:
                    value = ("ok", await getattr(client, method)(*args, **kwargs), None)
                except OctopusError as error:
                    value = (type(error).__name__, str(error), error.attempts)
                results.append((value, statuses(emulator)))
    return results


CASES = {
    "paged list": (None, {"page_size": 7}, "list_workers", ("Spaces-1",), {"comm_styles": "TentacleActive"}),
    "persistent 500": ({"fail_next": [{"count": 10, "status": 500}]}, {"max_attempts": 3}, "list_spaces", (), {}),
    "transient 503": ({"fail_next": [{"count": 2, "status": 503}]}, {}, "list_spaces", (), {}),
    "html 502": ({"fail_next": [{"count": 10, "status": 502, "html": True}]}, {}, "list_spaces", (), {}),
    "429s are not attempts": (
        {"fail_next": [{"count": 3, "status": 429, "retry_after": 0}]},
        {"max_attempts": 2},
        "list_spaces",
        (),
        {},
    ),
    "Retry-After beyond the budget": (
        {"fail_next": [{"count": 1, "status": 429, "retry_after": 300}]},
        {"max_retry_seconds": 5},
        "list_spaces",
        (),
        {},
    ),
    "forbidden space": ({"forbidden_spaces": ["Spaces-2"]}, {}, "list_worker_pools", ("Spaces-2",), {}),
    "unknown space": (None, {}, "list_workers", ("Spaces-99",), {}),
    "default machine policy": (None, {}, "get_default_machine_policy", ("Spaces-1",), {}),
    "dropped connections": ({"drop_rate": 1.0}, {"max_attempts": 2}, "list_spaces", (), {}),
}


@pytest.mark.parametrize("case", CASES)
async def test_same_outcome_as_the_hook(emulator, octopus_conn, case):
    faults, extras, method, args, kwargs = CASES[case]
    emulator.control.reset(make_scenario(2, POOL, workers={1: [make_worker(f"w{i:02d}") for i in range(30)]}))
    octopus_conn(**extras)
    (sync_result, sync_log), (async_result, async_log) = await both(emulator, faults, method, *args, **kwargs)
    if case == "dropped connections":
        # The OS error text differs between requests and httpx; class, attempts and what was sent must not.
        assert (async_result[0], async_result[2]) == (sync_result[0], sync_result[2])
    else:
        assert async_result == sync_result
    assert async_log == sync_log


async def test_paging_reads_every_page(emulator, octopus_conn):
    emulator.control.reset(make_scenario(1, POOL, workers={1: [make_worker(f"w{i:02d}") for i in range(30)]}))
    octopus_conn(page_size=7)
    async with AsyncOctopusClient() as client:
        workers = await client.list_workers("Spaces-1")
    assert len(workers) == 30 and client.request_count == len(emulator.control.requests()) == 5
    assert client.closed


async def test_path_prefix_and_key_header(emulator, octopus_conn, caplog):
    """A ``/octopus`` prefix is kept on every page; the key travels only in its header and is never logged."""
    emulator.control.reset(make_scenario(1, POOL, workers={1: [make_worker(f"w{i:02d}") for i in range(10)]}))
    caplog.set_level(logging.DEBUG)
    with _proxy_stripping("/octopus", emulator.url) as (proxy_url, seen):
        octopus_conn(host=proxy_url + "/octopus/", page_size=4)
        async with AsyncOctopusClient() as client:
            assert len(await client.list_workers("Spaces-1")) == 10
    assert len(seen) == 3 and all(path.startswith("/octopus/api/Spaces-1/workers") for path, _ in seen)
    assert all(headers.get("X-Octopus-ApiKey") == emulator.api_key for _, headers in seen)
    assert all(emulator.api_key not in path for path, _ in seen)
    assert caplog.records and emulator.api_key not in caplog.text


async def test_redirect_is_refused_and_never_followed(octopus_conn):
    hits: list[str] = []
    with _server(_redirect_handler("http://127.0.0.1:9/elsewhere", hits)) as url:
        octopus_conn(host=url)
        async with AsyncOctopusClient() as client:
            with pytest.raises(OctopusError, match=r"HTTP 302 .*to http://127.0.0.1:9/elsewhere.*not followed"):
                await client.list_spaces()
    assert hits == ["/api/spaces/all"]


async def test_pacing_awaits_the_hooks_token_bucket(emulator, octopus_conn):
    clock = _FrozenClock()
    async with AsyncOctopusClient(pacing=TokenBucket(600, burst=10, clock=clock, sleep=clock.sleep)) as client:
        for _ in range(12):
            await client.list_spaces()
        assert client.pacing.waited_seconds == pytest.approx(0.3)  # 0.1 s then 0.2 s, awaited, never slept


async def test_refused_connection_retried_then_unavailable(octopus_conn):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    octopus_conn(host=f"http://127.0.0.1:{port}", max_attempts=3)
    async with AsyncOctopusClient() as client:
        with pytest.raises(OctopusError, match="could not reach") as info:
            await client.list_spaces()
    assert type(info.value).__name__ == "OctopusUnavailableError" and info.value.attempts == 3


async def test_bad_arguments_fail_before_sending():
    with pytest.raises(OctopusError, match="page_size must be an integer > 0"):
        AsyncOctopusClient(page_size=0)
    client = AsyncOctopusClient()
    with pytest.raises(ValueError, match="space_id must look like 'Spaces-1'"):
        await client.list_workers("Default")
    assert client.request_count == 0


# ---------------------------------------------------------------------------- tiny local servers


class _FrozenClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # never called by the async client
        raise AssertionError("the async client must not sleep in the token bucket")


@contextmanager
def _server(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _redirect_handler(target: str, hits: list[str]):
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Redirect


@contextmanager
def _proxy_stripping(prefix: str, upstream: str):
    """A reverse proxy serving the emulator under ``prefix`` (like a virtual directory); records what it got."""
    import requests

    seen: list[tuple[str, dict]] = []
    session = requests.Session()

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, dict(self.headers)))
            path = self.path[len(prefix) :] if self.path.startswith(prefix + "/") else self.path
            answer = session.get(upstream + path, headers={k: v for k, v in self.headers.items() if k != "Host"})
            body = answer.content
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with _server(Proxy) as url:
        yield url, seen
    session.close()
