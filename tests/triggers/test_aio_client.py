"""AsyncOctopusClient's own transport: httpx behind a path prefix, redirects, refused connections, argument checks.

The API's behaviours (paging, errors, retries, pacing) are the core's and run through both transports in
tests/hooks/test_api_transports.py; this file keeps what only the async transport itself does."""

from __future__ import annotations

import logging
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from octopus.aio import AsyncOctopusClient
from octopus.exceptions import OctopusError
from octopus_emulator.scenario import make_scenario, make_worker

POOL = "Airflow Pool"


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
