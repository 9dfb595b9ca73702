"""Airflow provider metadata: the ``octopus`` connection type, its form, and the package's hook.

Airflow reads :func:`get_provider_info` through the ``apache_airflow_provider`` entry point declared in
``pyproject.toml`` (``pip install .``, or ``pip install -e .`` for development). The connection form is declared
here (``conn-fields`` and ``ui-field-behaviour``, the Airflow 3.2+ way) rather than by methods on the hook, so the
API server builds the form without importing the hook. The fields come from :mod:`octopus.settings`; neither
module imports anything from Airflow.
"""

from __future__ import annotations

from typing import Any

from octopus import settings

__all__ = ["CONNECTION_TYPE", "EXTRA_FIELDS", "FIELD_BEHAVIOUR", "HOOK_CLASS", "get_provider_info"]

PACKAGE_NAME = "octopus-shared-workers"
CONNECTION_TYPE = "octopus"
HOOK_CLASS = "octopus.hooks.OctopusHook"

#: The extras of an ``octopus`` connection, as typed form fields, generated from :mod:`octopus.settings` (labels,
#: descriptions, bounds and defaults are declared there). The keys are the extra's keys (the UI stores each field
#: under its own name in the connection's extra); every field is optional (``null`` = the hook's default, named in
#: the description: Airflow 3.3 shows no placeholder in a number field).
EXTRA_FIELDS: dict[str, dict[str, Any]] = settings.connection_fields()

#: Standard fields: the server URL and the API key; login, schema and port are not used.
FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "schema", "port"],
    "relabeling": {"host": "Server URL", "password": "API key"},
    "placeholders": {
        "host": "https://octopus.example.com",
        "password": "API-XXXXXXXXXXXXXXXXXXXXXXXXXX",
        **settings.field_placeholders(),
    },
}


def get_provider_info() -> dict[str, Any]:
    """Provider metadata in the shape of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "Octopus Deploy shared workers",
        "description": "Octopus Deploy hook and connection type; DAGs that share polling workers across spaces.",
        "integrations": [
            {
                "integration-name": "Octopus Deploy",
                "external-doc-url": "https://octopus.com/docs/octopus-rest-api",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "Octopus Deploy", "python-modules": ["octopus.hooks"]}],
        "sensors": [{"integration-name": "Octopus Deploy", "python-modules": ["octopus.sensors"]}],
        "triggers": [{"integration-name": "Octopus Deploy", "python-modules": ["octopus.triggers"]}],
        "operators": [{"integration-name": "Octopus Deploy", "python-modules": ["octopus.operators"]}],
        "connection-types": [
            {
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Octopus Deploy",
                "connection-type": CONNECTION_TYPE,
                "conn-fields": EXTRA_FIELDS,
                "ui-field-behaviour": FIELD_BEHAVIOUR,
            }
        ],
    }
