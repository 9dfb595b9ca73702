"""OctopusHook connection parsing: bad configuration fails clearly before any request is sent."""

from __future__ import annotations

import json

import pytest

from octopus.exceptions import OctopusConfigurationError
from octopus.hooks import OctopusHook

KEY = "API-CONFIGTESTKEY0001"


def set_conn(monkeypatch, **fields):
    conn = {"conn_type": "http", "host": "https://octopus.example.com", "password": KEY, **fields}
    monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", json.dumps(conn))


def config_error(hook: OctopusHook) -> OctopusConfigurationError:
    with pytest.raises(OctopusConfigurationError) as info:
        hook.get_conn()
    assert hook.request_count == 0
    assert KEY not in str(info.value)
    return info.value


class TestOctopusHookConfiguration:
    def test_missing_connection_names_the_environment_variable(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW_CONN_OCTOPUS_DEFAULT", raising=False)
        error = config_error(OctopusHook())
        assert "AIRFLOW_CONN_OCTOPUS_DEFAULT" in str(error)

    def test_missing_host(self, monkeypatch):
        set_conn(monkeypatch, host="")
        assert "has no host" in str(config_error(OctopusHook()))

    def test_missing_api_key(self, monkeypatch):
        set_conn(monkeypatch, password="")
        assert "has no API key" in str(config_error(OctopusHook()))

    def test_api_key_with_a_space_is_rejected_without_echoing_it(self, monkeypatch):
        set_conn(monkeypatch, password="API-AB CD")
        error = config_error(OctopusHook())
        assert "API key" in str(error)
        assert "API-AB" not in str(error)

    @pytest.mark.parametrize("host", ["ftp://octopus.example.com", "file:///etc/passwd"])
    def test_unsupported_scheme_in_host(self, monkeypatch, host):
        set_conn(monkeypatch, host=host)
        assert "unsupported URL scheme" in str(config_error(OctopusHook()))

    def test_unsupported_scheme_in_schema(self, monkeypatch):
        set_conn(monkeypatch, host="octopus.example.com", schema="gopher")
        assert "unsupported URL scheme 'gopher'" in str(config_error(OctopusHook()))

    def test_credentials_in_host_are_rejected(self, monkeypatch):
        set_conn(monkeypatch, host=f"https://user:{KEY}@octopus.example.com")
        assert "must not contain credentials" in str(config_error(OctopusHook()))

    def test_query_in_host_is_rejected(self, monkeypatch):
        set_conn(monkeypatch, host=f"https://octopus.example.com/?apikey={KEY}")
        assert "query string" in str(config_error(OctopusHook()))

    def test_conflicting_port(self, monkeypatch):
        set_conn(monkeypatch, host="https://octopus.example.com:8443", port=9443)
        assert "conflicts" in str(config_error(OctopusHook()))

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            ({"page_size": "0"}, "page_size must be an integer > 0"),
            ({"page_size": "ten"}, "page_size must be an integer > 0"),
            ({"page_size": 2.5}, "page_size must be an integer > 0"),
            ({"max_requests_per_minute": "-1"}, "max_requests_per_minute must be a number > 0"),
            ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
            ({"timeout": "0"}, "timeout must be a number > 0"),
            ({"verify": "maybe"}, "'verify' must be true, false or the path of an existing CA bundle"),
        ],
    )
    def test_invalid_extra(self, monkeypatch, extra, message):
        set_conn(monkeypatch, extra=extra)
        assert message in str(config_error(OctopusHook()))

    def test_invalid_keyword_argument_fails_at_construction(self):
        with pytest.raises(OctopusConfigurationError, match="page_size must be an integer > 0"):
            OctopusHook(page_size=-3)


class TestOctopusHookConnectionParsing:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"host": "https://octopus.example.com"}, "https://octopus.example.com"),
            ({"host": "https://octopus.example.com/"}, "https://octopus.example.com"),
            ({"host": "https://example.com/octopus/"}, "https://example.com/octopus"),
            ({"host": "https://example.com/octopus/api"}, "https://example.com/octopus"),
            ({"host": "octopus.example.com"}, "https://octopus.example.com"),
            (
                {"host": "octopus.example.com", "schema": "http", "port": 8080},
                "http://octopus.example.com:8080",
            ),
            ({"host": "http://127.0.0.1/octo", "port": 8065}, "http://127.0.0.1:8065/octo"),
        ],
    )
    def test_server_url(self, monkeypatch, fields, expected):
        set_conn(monkeypatch, **fields)
        assert OctopusHook().server_url == expected

    def test_uri_form_connection(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_OCTOPUS_DEFAULT",
            f"http://:{KEY}@octopus.example.com:8443/https?verify=false&page_size=50&max_requests_per_minute=180",
        )
        hook = OctopusHook()
        session = hook.get_conn()
        assert hook.server_url == "https://octopus.example.com:8443"
        assert session.verify is False
        assert hook.pacing is not None and hook.pacing.rate_per_minute == 180

    def test_api_key_goes_in_header_without_basic_auth(self, monkeypatch):
        set_conn(monkeypatch)
        session = OctopusHook().get_conn()
        assert session.headers["X-Octopus-ApiKey"] == KEY
        assert session.auth is None

    def test_own_extras_are_not_sent_as_headers(self, monkeypatch):
        set_conn(
            monkeypatch,
            extra={"page_size": 10, "max_requests_per_minute": 100, "max_attempts": 3, "X-Trace": "yes"},
        )
        headers = OctopusHook().get_conn().headers
        assert "page_size" not in headers
        assert "max_requests_per_minute" not in headers
        assert "max_attempts" not in headers
        assert headers["X-Trace"] == "yes"

    def test_the_evidence_secret_seals_when_set_and_is_never_sent(self, monkeypatch):
        from octopus.ledger import Signer

        set_conn(monkeypatch, extra={"evidence_secret": "kept-apart-0123456789"})
        hook = OctopusHook()
        assert "evidence_secret" not in hook.get_conn().headers
        assert all("kept-apart" not in str(v) for v in hook.get_conn().headers.values())
        sealed = hook.evidence_signer().seal("owned", "t", "local", "A" * 40)
        assert sealed == Signer("kept-apart-0123456789").seal("owned", "t", "local", "A" * 40)
        assert sealed != Signer(KEY).seal("owned", "t", "local", "A" * 40)

    def test_without_an_evidence_secret_the_api_key_seals(self, monkeypatch):
        from octopus.ledger import Signer

        set_conn(monkeypatch)
        assert OctopusHook().evidence_signer().seal("x") == Signer(KEY).seal("x")

    def test_verify_defaults_to_true(self, monkeypatch):
        set_conn(monkeypatch)
        assert OctopusHook().get_conn().verify is True

    def test_verify_accepts_a_ca_bundle_path(self, monkeypatch, tmp_path):
        bundle = tmp_path / "ca.pem"
        bundle.write_text("-----BEGIN CERTIFICATE-----\n")
        set_conn(monkeypatch, extra={"verify": str(bundle)})
        assert OctopusHook().get_conn().verify == str(bundle)

    def test_one_session_per_hook(self, monkeypatch):
        set_conn(monkeypatch)
        hook = OctopusHook()
        assert hook.get_conn() is hook.get_conn()

    def test_no_pacing_unless_configured(self, monkeypatch):
        set_conn(monkeypatch)
        assert OctopusHook().pacing is None

    def test_keyword_argument_overrides_extra(self, monkeypatch):
        set_conn(monkeypatch, extra={"max_requests_per_minute": 100})
        assert OctopusHook(max_requests_per_minute=30).pacing.rate_per_minute == 30

    def test_other_connection_id(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_OCTOPUS_STAGING",
            json.dumps({"conn_type": "http", "host": "https://staging.example.com", "password": KEY}),
        )
        assert OctopusHook("octopus_staging").server_url == "https://staging.example.com"


class TestPoolSize:
    """``pool_size``: every thread sharing the hook keeps its connection (requests keeps only 10 per host)."""

    def test_the_session_keeps_pool_size_connections_with_tcp_keep_alive(self, monkeypatch):
        import socket

        set_conn(monkeypatch)
        adapter = OctopusHook(pool_size=16).get_conn().get_adapter("https://octopus.example.com/api")
        assert adapter._pool_maxsize == 16
        assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in adapter.socket_options  # HttpHook's default kept

    def test_without_tcp_keep_alive_a_plain_pooled_adapter(self, monkeypatch):
        set_conn(monkeypatch)
        adapter = OctopusHook(pool_size=4, tcp_keep_alive=False).get_conn().get_adapter("https://octopus.example.com")
        assert adapter._pool_maxsize == 4 and not hasattr(adapter, "socket_options")

    def test_default_is_requests_own_pool(self, monkeypatch):
        set_conn(monkeypatch)
        assert OctopusHook().get_conn().get_adapter("https://octopus.example.com")._pool_maxsize == 10

    @pytest.mark.parametrize("bad", [0, -1, True, 2.5])
    def test_bad_pool_size_fails_where_the_hook_is_built(self, bad):
        with pytest.raises(ValueError, match="pool_size must be an integer >= 1"):
            OctopusHook(pool_size=bad)
