"""The inherited ``HttpHook.run()`` path: it works against Octopus, but never carries the API key elsewhere.

A redirect is what would leak the key: ``requests`` strips ``Authorization`` on a cross-host redirect, but not
the ``X-Octopus-ApiKey`` header. The emulator does not redirect (Octopus does not), so a tiny local server
stands in for a misconfigured proxy that does, and a second one records whatever reaches the target.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from octopus.exceptions import OctopusAuthenticationError, OctopusError
from octopus.hooks import OctopusHook
from octopus.pacing import TokenBucket


@contextmanager
def local_server(handler_cls: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    server.seen = []  # (method, path, headers) of every request
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 {} to anything and records what it received (the key must never arrive here)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def redirecting_to(target: str, status: int = 302) -> type[BaseHTTPRequestHandler]:
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.server.seen.append((self.command, self.path, dict(self.headers)))
            self.send_response(status)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    return Redirect


@pytest.fixture
def sink():
    with local_server(Recorder) as server:
        yield server


class TestRunThroughTheHook:
    def test_run_reaches_octopus_with_the_key_and_counts_the_request(self, emulator, octopus_conn):
        hook = OctopusHook()
        response = hook.run("/api/users/me")
        assert response.status_code == 200
        assert response.json()["Username"]
        assert hook.request_count == 1
        (logged,) = [r for r in emulator.control.requests() if r["path"] == "/api/users/me"]
        assert logged["status"] == 200  # authenticated: the key went to the connection's own server

    def test_run_raises_the_typed_error_of_a_failure(self, emulator, octopus_conn):
        octopus_conn(password="API-WRONGWRONGWRONG")
        with pytest.raises(OctopusAuthenticationError, match=r"GET /api/users/me: HTTP 401"):
            OctopusHook().run("/api/users/me")

    def test_run_is_paced_like_the_hook_s_own_requests(self, emulator, octopus_conn):
        sleeps: list[float] = []
        bucket = TokenBucket(60, burst=1, clock=lambda: 0.0, sleep=sleeps.append)  # time stands still
        hook = OctopusHook(pacing=bucket)
        for _ in range(3):
            hook.run("/api")
        assert sleeps == pytest.approx([1.0, 2.0])  # one token a second: the 2nd and 3rd request waited


class TestRunNeverFollowsRedirects:
    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_a_redirect_is_refused_and_the_key_never_reaches_its_target(self, octopus_conn, sink, status):
        with local_server(redirecting_to(url_of(sink), status)) as proxy:
            octopus_conn(host=url_of(proxy), password="API-SECRETSECRETSECRET1")
            hook = OctopusHook()
            with pytest.raises(OctopusError) as caught:
                hook.run("/api/spaces/all")
            message = str(caught.value)
            assert f"HTTP {status}" in message
            assert f"to {url_of(sink)}/api/spaces/all" in message  # names the target, so the host can be fixed
            assert "redirects are not followed" in message
            assert "API-SECRETSECRETSECRET1" not in message
            assert len(proxy.seen) == 1  # the connection's (misconfigured) server did get the request ...
        assert sink.seen == []  # ... but nothing, and so no key, went where it pointed

    def test_allow_redirects_from_the_caller_or_the_extra_changes_nothing(self, octopus_conn, sink):
        with local_server(redirecting_to(url_of(sink))) as proxy:
            octopus_conn(host=url_of(proxy), allow_redirects=True)
            with pytest.raises(OctopusError, match="redirects are not followed"):
                OctopusHook().run("/api", extra_options={"allow_redirects": True})
        assert sink.seen == []

    def test_a_request_to_another_server_is_refused_before_sending(self, emulator, octopus_conn, sink):
        # HttpHook.run() only targets the base URL (or, with srv_lookup, SRV targets): the guard in
        # run_and_check() is what stands between any other URL and the session that carries the key.
        hook = OctopusHook()
        session = hook.get_conn()
        prepared = session.prepare_request(requests.Request("GET", f"{url_of(sink)}/api"))
        assert prepared.headers["X-Octopus-ApiKey"]  # the session would send it
        with pytest.raises(OctopusError, match=r"refusing to send the API key to http://127\.0\.0\.1:\d+"):
            hook.run_and_check(session, prepared, {})
        assert sink.seen == []
        assert hook.request_count == 0

    def test_the_hook_s_own_requests_refuse_redirects_too(self, octopus_conn, sink):
        with local_server(redirecting_to(url_of(sink))) as proxy:
            octopus_conn(host=url_of(proxy))
            with pytest.raises(OctopusError, match=r"HTTP 302 .*redirects are not followed"):
                OctopusHook().list_spaces()
        assert sink.seen == []
