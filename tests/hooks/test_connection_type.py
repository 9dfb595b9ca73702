"""``octopus_default`` as type ``octopus`` (the registered connection type) and as type ``http`` (existing users)."""

from __future__ import annotations

import socket

import pytest

from octopus.hooks import OctopusHook


@pytest.mark.parametrize("conn_type", ["octopus", "http"])
class TestBothConnectionTypes:
    def test_the_hook_works_the_same(self, emulator, octopus_conn, conn_type):
        octopus_conn(conn_type=conn_type)
        hook = OctopusHook()
        assert [space["Id"] for space in hook.list_spaces()]
        assert hook.server_url == emulator.url

    def test_test_connection_names_version_and_server(self, emulator, octopus_conn, conn_type):
        octopus_conn(conn_type=conn_type)
        version = OctopusHook().get_conn().get(f"{emulator.url}/api").json()["Version"]
        ok, message = OctopusHook().test_connection()
        assert (ok, message) == (True, f"Connected to Octopus Deploy {version} at {emulator.url}")

    def test_test_connection_checks_the_key_not_just_the_server(self, emulator, octopus_conn, conn_type):
        # GET /api answers without a key; users/me does not: a wrong key must fail the test.
        octopus_conn(conn_type=conn_type, password="API-WRONGWRONGWRONG")
        ok, message = OctopusHook().test_connection()
        assert not ok
        assert "GET /api/users/me: HTTP 401" in message
        assert "API-WRONGWRONGWRONG" not in message

    def test_test_connection_explains_an_unreachable_server(self, octopus_conn, conn_type, unused_port):
        octopus_conn(conn_type=conn_type, host=f"http://127.0.0.1:{unused_port}", max_attempts=1)
        ok, message = OctopusHook().test_connection()
        assert not ok
        assert f"could not reach http://127.0.0.1:{unused_port}" in message


class TestFormShapedExtras:
    """The connection form saves every field, an empty one as null: null means the hook's default."""

    def test_empty_fields_mean_the_defaults(self, emulator, octopus_conn):
        octopus_conn(
            conn_type="octopus",
            verify=None,
            timeout=None,
            page_size=None,
            max_requests_per_minute=None,
            max_attempts=None,
            max_retry_seconds=None,
        )
        hook = OctopusHook()
        session = hook.get_conn()
        assert session.verify is True
        assert hook.pacing is None
        assert hook.api.settings.page_size == 1000 and hook.api.settings.max_attempts == 6
        for name in ("verify", "timeout", "page_size", "max_requests_per_minute", "max_attempts"):
            assert name not in session.headers  # own extras are never sent as headers, null or not
        assert hook.list_spaces()

    def test_filled_fields_are_typed_values(self, emulator, octopus_conn):
        octopus_conn(conn_type="octopus", verify=False, timeout=12.5, page_size=7, max_requests_per_minute=90)
        hook = OctopusHook()
        assert hook.get_conn().verify is False
        assert hook.api.settings.timeout == 12.5 and hook.api.settings.page_size == 7
        assert hook.pacing.rate_per_minute == 90


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
