"""The package as an Airflow provider: entry point, metadata, and that everything it names imports.

These need the package installed (``scripts/setup.sh`` does ``pip install -e .``): that is how Airflow finds
a provider, so without it they fail, naming the fix.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from pathlib import Path

import airflow
import jsonschema
import pytest
from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

from octopus.provider_info import CONNECTION_TYPE, HOOK_CLASS, PACKAGE_NAME, get_provider_info

INSTALL_HINT = "the package is not installed in this venv: run scripts/setup.sh (pip install -e .)"


def provider_entry_point() -> importlib.metadata.EntryPoint:
    for entry_point in importlib.metadata.entry_points(group="apache_airflow_provider"):
        if entry_point.dist is not None and entry_point.dist.metadata["Name"] == PACKAGE_NAME:
            return entry_point
    pytest.fail(INSTALL_HINT)


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class TestEntryPoint:
    def test_the_installed_package_declares_get_provider_info(self):
        entry_point = provider_entry_point()
        assert entry_point.value == "octopus.provider_info:get_provider_info"
        assert entry_point.load()() == get_provider_info()

    def test_the_installed_package_is_this_source_tree(self):
        # An editable install: the provider Airflow loads is the code under plugins/, not a stale copy.
        provider_entry_point()
        import octopus.provider_info as module

        assert Path(module.__file__).resolve().is_relative_to(Path(__file__).resolve().parents[2] / "plugins")

    def test_provider_info_is_valid_for_airflow(self):
        schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
        jsonschema.validate(get_provider_info(), json.loads(schema_path.read_text()))
        assert get_provider_info()["package-name"] == PACKAGE_NAME  # Airflow refuses a name mismatch


class TestEverythingNamedImports:
    def test_every_connection_type_s_hook_imports_and_declares_that_type(self):
        connection_types = get_provider_info()["connection-types"]
        assert [c["connection-type"] for c in connection_types] == [CONNECTION_TYPE]
        for conn in connection_types:
            hook = import_class(conn["hook-class-name"])
            assert hook.conn_type == conn["connection-type"]  # else Airflow logs an "Inconsistency!" warning
            assert hook.hook_name == conn["hook-name"]
            assert hook.default_conn_name == "octopus_default"
            assert callable(getattr(hook, "test_connection", None))
            # The form is declared in provider info; the deprecated (3.2) hook methods must not be defined.
            assert "get_ui_field_behaviour" not in vars(hook)
            assert "get_connection_form_widgets" not in vars(hook)

    @pytest.mark.parametrize("kind", ["hooks", "sensors", "triggers", "operators"])
    def test_every_listed_module_imports(self, kind):
        modules = [m for entry in get_provider_info()[kind] for m in entry["python-modules"]]
        assert modules
        for module in modules:
            importlib.import_module(module)


class TestAirflowSeesTheProvider:
    """Both registries see it: the API server's (connection form, Test button) and the task runtime's."""

    @pytest.fixture(scope="class")
    def server(self) -> ProvidersManager:
        provider_entry_point()
        return ProvidersManager()

    @pytest.fixture(scope="class")
    def runtime(self) -> ProvidersManagerTaskRuntime:
        provider_entry_point()
        return ProvidersManagerTaskRuntime()

    def test_listed_with_its_version(self, server, runtime):
        version = importlib.metadata.version(PACKAGE_NAME)
        assert server.providers[PACKAGE_NAME].version == version
        assert runtime.providers[PACKAGE_NAME].version == version

    @pytest.mark.filterwarnings("ignore::airflow.exceptions.AirflowProviderDeprecationWarning")
    @pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
    @pytest.mark.parametrize("registry", ["server", "runtime"])
    def test_octopus_connection_type_maps_to_the_hook(self, request, registry):
        hook_info = request.getfixturevalue(registry).hooks[CONNECTION_TYPE]
        assert hook_info is not None, "Airflow could not import the hook (see its log)"
        assert hook_info.hook_class_name == HOOK_CLASS
        assert hook_info.connection_id_attribute_name == "octopus_conn_id"
        assert hook_info.connection_testable  # the UI's Test button is enabled

    def test_the_http_type_still_belongs_to_the_http_provider(self, runtime):
        # Existing octopus_default connections of type http keep working, and keep HttpHook's form.
        assert runtime.hooks["http"].hook_class_name == "airflow.providers.http.hooks.http.HttpHook"
