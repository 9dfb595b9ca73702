"""The ``octopus`` connection form as the Airflow UI receives it, and the Test button's code path.

``HookMetaService.hook_meta_data()`` is what ``GET /ui/connections/hook_meta`` serves to the connection form;
``Connection.test_connection()`` is what ``POST /api/v2/connections/test`` runs in the API server.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
from airflow.models.connection import Connection

from octopus import hooks
from octopus.provider_info import CONNECTION_TYPE, EXTRA_FIELDS

#: The extras a user sets in the form, and the ones the hook reads (retry_initial_wait/retry_max_wait are tuning
#: knobs for tests and benchmarks, deliberately not in the form).
FORM_EXTRAS = {
    "verify",
    "timeout",
    "page_size",
    "max_requests_per_minute",
    "max_attempts",
    "max_retry_seconds",
    "evidence_secret",
}


@pytest.fixture(scope="module")
def meta():
    found = [m for m in HookMetaService.hook_meta_data() if m.connection_type == CONNECTION_TYPE]
    assert found, "Airflow does not know the octopus connection type: run scripts/setup.sh (pip install -e .)"
    return found[0]


class TestStandardFields:
    def test_login_schema_and_port_are_hidden(self, meta):
        fields = meta.standard_fields
        assert fields.login.hidden and fields.url_schema.hidden and fields.port.hidden

    def test_host_is_the_server_url_and_password_the_api_key(self, meta):
        fields = meta.standard_fields
        assert (fields.host.hidden, fields.host.title) == (False, "Server URL")
        assert fields.host.placeholder == "https://octopus.example.com"
        assert (fields.password.hidden, fields.password.title) == (False, "API key")
        assert fields.password.placeholder.startswith("API-")

    def test_names_the_hook(self, meta):
        assert meta.hook_name == "Octopus Deploy"
        assert meta.hook_class_name == "octopus.hooks.OctopusHook"


class TestExtraFields:
    def test_one_typed_field_per_extra_the_hook_reads(self, meta):
        assert set(meta.extra_fields) == FORM_EXTRAS
        assert set(hooks._OWN_EXTRAS) >= FORM_EXTRAS  # the hook consumes them (never sends them as headers)

    @pytest.mark.parametrize("name", sorted(FORM_EXTRAS))
    def test_every_field_is_optional_titled_and_explained(self, meta, name):
        field = meta.extra_fields[name]
        types = field["schema"]["type"]
        assert "null" in types  # no required star; empty means the hook's default
        assert field["schema"]["title"]
        assert field["description"]
        # The form does not freeze today's defaults into the connection; but the TLS switch shows "on".
        assert field["value"] is (True if name == "verify" else None)

    def test_types(self, meta):
        kinds = {name: [t for t in f["schema"]["type"] if t != "null"] for name, f in meta.extra_fields.items()}
        assert kinds == {
            "verify": ["boolean"],
            "timeout": ["number"],
            "page_size": ["integer"],
            "max_requests_per_minute": ["number"],
            "max_attempts": ["integer"],
            "max_retry_seconds": ["number"],
            "evidence_secret": ["string"],
        }

    def test_only_the_evidence_secret_is_a_secret(self, meta):
        secrets = {name for name, f in meta.extra_fields.items() if f["schema"].get("format") == "password"}
        assert secrets == {"evidence_secret"}

    @pytest.mark.parametrize(
        ("name", "value", "valid"),
        [
            ("timeout", 30, True),
            ("timeout", 0, False),
            ("timeout", "30", False),
            ("page_size", 0, False),
            ("page_size", 2.5, False),
            ("max_attempts", 1, True),
            ("max_requests_per_minute", 180, True),
            ("max_requests_per_minute", -1, False),
            ("max_retry_seconds", 0, True),
            ("verify", False, True),
            ("verify", "yes", False),
        ],
    )
    def test_field_schemas_accept_what_the_hook_accepts(self, name, value, valid):
        validator = jsonschema.Draft202012Validator(EXTRA_FIELDS[name]["schema"])
        assert validator.is_valid(value) is valid
        assert validator.is_valid(None)


@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")  # Airflow's own call
class TestTheTestButtonPath:
    def conn(self, emulator, password: str | None = "", **extra) -> Connection:
        # What the form posts: the fields under their own names in extra, the empty ones as null.
        form = dict.fromkeys(FORM_EXTRAS)
        return Connection(
            conn_id="octopus_form_test",
            conn_type=CONNECTION_TYPE,
            host=emulator.url,
            password=emulator.api_key if password == "" else password,
            extra=json.dumps({**form, **extra}),
        )

    def test_success_names_server_and_version(self, emulator, monkeypatch):
        conn = self.conn(emulator, timeout=10)
        monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_FORM_TEST", conn.as_json())  # as the API server does
        version = emulator.control.session.get(f"{emulator.url}/api").json()["Version"]
        assert conn.test_connection() == (True, f"Connected to Octopus Deploy {version} at {emulator.url}")

    def test_a_wrong_key_fails_clearly_without_echoing_it(self, emulator, monkeypatch):
        conn = self.conn(emulator, password="API-NOTTHEKEY0000000")
        monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_FORM_TEST", conn.as_json())
        ok, message = conn.test_connection()
        assert not ok
        assert "HTTP 401" in message and "check the API key" in message
        assert "API-NOTTHEKEY0000000" not in message

    def test_a_missing_key_fails_before_any_request(self, emulator, monkeypatch):
        conn = self.conn(emulator, password=None)
        monkeypatch.setenv("AIRFLOW_CONN_OCTOPUS_FORM_TEST", conn.as_json())
        emulator.control.clear_requests()
        ok, message = conn.test_connection()
        assert not ok
        assert "has no API key" in message
        assert emulator.control.requests() == []
