"""The seam between ``OctopusHook``/``AsyncOctopusClient`` and the HTTP provider's private parts, checked in one place.

``OctopusHook`` subclasses ``HttpHook`` and relies on members the provider does not document as API (see
docs/design.md, "HTTP transport"); pyproject.toml therefore pins the provider to the minor series
these tests pass with. Each test checks one member against the provider itself, not through the hook, so an
upgrade that renames, removes or reshapes one fails here, by name, instead of somewhere deep in a share.
"""

from __future__ import annotations

import inspect
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import requests
from airflow.providers.http.hooks import http as provider
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import Connection
from packaging.requirements import Requirement
from packaging.version import Version
from requests_toolbelt.adapters.socket_options import SocketOptionsAdapter

from octopus.hooks import OctopusHook

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

#: HttpHook members OctopusHook overrides: the provider must still call them by these names and arguments.
OVERRIDDEN = {
    "get_conn": ["self", "headers", "extra_options"],
    "_set_base_url": ["self", "connection"],
    "run_and_check": ["self", "session", "prepped_request", "extra_options"],
    "test_connection": ["self"],
}
#: HttpHook methods OctopusHook calls without overriding, with the parameters it passes.
CALLED = {
    "_configure_session_from_extra": ["self", "session", "connection", "extra_options"],
    "_configure_session_from_mount_adapters": ["self", "session"],
}


def params(function) -> list[str]:
    return [name for name, p in inspect.signature(function).parameters.items() if p.kind is not p.VAR_KEYWORD]


def connection(host: str = "https://octopus.example.com", **extra) -> Connection:
    return Connection(conn_id="seam", conn_type="http", host=host, password="API-KEY", extra=json.dumps(extra))


def test_the_installed_provider_is_in_the_pinned_range():
    """The pin is one minor series, and the installed provider (the one these tests ran against) is in it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "apache-airflow-providers-http"]
    installed = Version(version("apache-airflow-providers-http"))
    assert installed in pin.specifier, f"installed {installed} is outside pyproject's pin {pin.specifier}"
    ceilings = [Version(s.version) for s in pin.specifier if s.operator == "<"]
    floors = [Version(s.version) for s in pin.specifier if s.operator == ">="]
    assert ceilings and floors, f"pin {pin} needs both a floor and a ceiling"
    assert (min(ceilings).major, min(ceilings).minor) == (max(floors).major, max(floors).minor + 1)


@pytest.mark.parametrize(("name", "expected"), sorted({**OVERRIDDEN, **CALLED}.items()))
def test_methods_keep_their_names_and_parameters(name, expected):
    assert name in vars(HttpHook), f"HttpHook.{name} is gone: OctopusHook relies on it"
    assert params(getattr(HttpHook, name)) == expected, f"HttpHook.{name} changed its parameters"


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_octopus_overrides_take_the_same_parameters(name):
    """An override whose parameters drift from the provider's would be called wrongly (or not at all)."""
    assert params(getattr(OctopusHook, name)) == params(getattr(HttpHook, name))


def test_constructor_takes_the_arguments_octopus_passes_and_forwards():
    accepted = inspect.signature(HttpHook.__init__).parameters
    # OctopusHook passes method and http_conn_id; its callers may forward tcp_keep_alive and adapter (pool_size).
    for name in ("method", "http_conn_id", "tcp_keep_alive", "adapter"):
        assert name in accepted, f"HttpHook.__init__ no longer takes {name}"


def test_constructor_sets_the_attributes_octopus_reads_and_writes():
    hook = HttpHook(method="GET", http_conn_id="seam")
    assert hook.method == "GET"
    assert hook.base_url == "" and hook._base_url_initialized is False
    assert hook.merged_extra == {}  # what the inherited run() hands run_and_check when the connection has no extra
    assert hook._srv_lookup_enabled is False  # OctopusHook's _set_base_url never enables SRV lookup in run()
    # pool_size rebuilds keep_alive_adapter from its socket_options, or sets adapter when keep-alive is off.
    assert hook.adapter is None
    assert isinstance(hook.keep_alive_adapter, SocketOptionsAdapter)
    assert isinstance(hook.keep_alive_adapter.socket_options, list) and hook.keep_alive_adapter.socket_options
    assert HttpHook(method="GET", tcp_keep_alive=False).keep_alive_adapter is None
    own = requests.adapters.HTTPAdapter()
    given = HttpHook(method="GET", adapter=own)
    assert given.adapter is own and given.keep_alive_adapter is None


def test_url_from_endpoint_initialises_the_base_url_through_set_base_url():
    """The inherited run() builds its URL here: OctopusHook's _set_base_url (and its checks) must be what it calls."""
    calls = []

    class Probe(HttpHook):
        def get_connection(self, conn_id):
            return connection()

        def _set_base_url(self, conn) -> None:
            calls.append(conn.conn_id)
            self.base_url = "https://octopus.example.com/prefix"
            self._base_url_initialized = True

    hook = Probe(method="GET", http_conn_id="seam")
    assert hook.url_from_endpoint("/api") == "https://octopus.example.com/prefix/api"
    assert hook.url_from_endpoint("/api/spaces") == "https://octopus.example.com/prefix/api/spaces"
    assert calls == ["seam"]  # once: _base_url_initialized is what stops a second lookup


def test_configure_session_from_extra_sets_merged_extra_and_sends_other_extras_as_headers():
    hook = HttpHook(method="GET", http_conn_id="seam")
    session = requests.Session()
    conn = connection(timeout=5, verify=False, proxies={"https": "http://proxy:3128"}, **{"X-Team": "infra"})
    assert hook._configure_session_from_extra(session, conn, {}) is session
    assert hook.merged_extra["timeout"] == 5
    assert session.headers["X-Team"] == "infra"  # OctopusHook pops its own extras from these headers by name
    assert "timeout" not in session.headers and "verify" not in session.headers
    assert session.proxies == {"https": "http://proxy:3128"} and session.verify is False


@pytest.mark.parametrize(("given", "mounted"), [("adapter", ["https://"]), ("keep_alive", ["http://", "https://"])])
def test_mount_adapters_mounts_adapter_else_keep_alive_adapter(given, mounted):
    own = requests.adapters.HTTPAdapter()
    hook = HttpHook(method="GET", adapter=own if given == "adapter" else None)
    hook.base_url = "https://octopus.example.com"
    session = hook._configure_session_from_mount_adapters(requests.Session())
    expected = own if given == "adapter" else hook.keep_alive_adapter
    assert sorted(prefix for prefix, adapter in session.adapters.items() if adapter is expected) == mounted


def test_run_gets_the_session_then_hands_run_and_check_the_merged_extra():
    """OctopusHook hardens run_and_check (no redirect, no other server) for the inherited run()."""
    seen = {}
    session = requests.Session()

    class Probe(HttpHook):
        def get_conn(self, headers=None, extra_options=None):
            seen["get_conn"] = (headers, extra_options)
            self.merged_extra = {"check_response": False}
            return session

        def run_and_check(self, session_, prepped_request, extra_options):
            seen["run_and_check"] = (session_, prepped_request, extra_options)
            return "response"

    hook = Probe(method="GET", http_conn_id="seam")
    hook.base_url, hook._base_url_initialized = "https://octopus.example.com", True
    assert hook.run("/api/spaces", data={"take": 1}, headers={"X-A": "1"}, extra_options={"timeout": 3}) == "response"
    assert seen["get_conn"] == ({"X-A": "1"}, {"timeout": 3})
    used, prepped, extra = seen["run_and_check"]
    assert used is session and extra is hook.merged_extra
    assert prepped.method == "GET" and prepped.url == "https://octopus.example.com/api/spaces?take=1"


def test_process_extra_options_from_connection_splits_headers_from_request_options():
    """AsyncOctopusClient builds its httpx client from this: headers, then cert / proxy / trust_env options."""
    assert params(provider._process_extra_options_from_connection) == ["conn", "extra_options"]
    conn = connection(
        timeout=5, cert="/c.pem", proxies={"https": "http://p:1"}, trust_env=False, verify=True, **{"X-Team": "a"}
    )
    headers, merged = provider._process_extra_options_from_connection(conn, {})
    assert headers == {"X-Team": "a"}
    assert merged["cert"] == "/c.pem" and merged["proxy"] == {"https": "http://p:1"} and merged["trust_env"] is False
    assert conn.extra_dejson["timeout"] == 5  # the connection's extras are not consumed


def test_the_hook_and_the_client_use_nothing_else_private_from_the_provider():
    """A new private reach-in must be added to this file (and docs/design.md) before it can land."""
    plugins = Path(__file__).resolve().parents[2] / "plugins" / "octopus"
    imported = set()
    for source in (plugins / "api.py", plugins / "hooks.py", plugins / "aio.py"):
        for line in re.findall(r"^from airflow\.providers\.http\S* import (.+)$", source.read_text(), re.M):
            imported.update(name.strip() for name in line.split(","))
    assert imported == {"HttpHook", "_process_extra_options_from_connection"}
    hook_source = (plugins / "hooks.py").read_text()
    used_private = {
        name
        for name in re.findall(r"\bself\.(_\w+)", hook_source)
        if name in vars(HttpHook) or name in vars(HttpHook(method="GET"))
    }
    assert used_private <= {"_set_base_url", "_base_url_initialized", *CALLED}, used_private
