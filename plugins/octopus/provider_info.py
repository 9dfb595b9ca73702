"""Airflow provider metadata: the ``octopus`` connection type, its form, and the package's hook.

Airflow reads :func:`get_provider_info` through the ``apache_airflow_provider`` entry point declared in
``pyproject.toml`` (``pip install .``, or ``pip install -e .`` for development). The connection form is declared
here (``conn-fields`` and ``ui-field-behaviour``, the Airflow 3.2+ way) rather than by methods on the hook, so the
API server builds the form without importing the hook. This module imports nothing from Airflow.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONNECTION_TYPE", "EXTRA_FIELDS", "FIELD_BEHAVIOUR", "HOOK_CLASS", "get_provider_info"]

PACKAGE_NAME = "octopus-shared-workers"
CONNECTION_TYPE = "octopus"
HOOK_CLASS = "octopus.hooks.OctopusHook"

#: The extras of an ``octopus`` connection, as typed form fields. The keys are the extra's keys (the UI stores
#: each field under its own name in the connection's extra); every field is optional (``null`` = the hook's
#: default, named in the description: Airflow 3.3 shows no placeholder in a number field).
EXTRA_FIELDS: dict[str, dict[str, Any]] = {
    "verify": {
        "label": "Verify TLS certificate",
        "description": "Keep it on. Turn it off only for a test server with a self-signed certificate; for a "
        "private CA keep it on and set REQUESTS_CA_BUNDLE on the Airflow machines (or put the bundle's path "
        'in the extra as "verify").',
        # A default, unlike the other fields: the switch must show what an untouched connection does.
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Seconds to wait for each HTTP response (connect and read). Default 30.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "examples": [30]},
    },
    "page_size": {
        "label": "Page size",
        "description": "Items per page when listing workers (the API's take). Default 1000.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "examples": [1000]},
    },
    "max_requests_per_minute": {
        "label": "Max requests per minute",
        "description": "The server's rate limit for this API key (Octopus 2026.3+ allows 200 a minute by "
        "default). Tasks running in parallel share it between them. Empty: no client-side pacing.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "examples": [180]},
    },
    "max_attempts": {
        "label": "Max attempts",
        "description": "Attempts per request, the first included, on connection errors, timeouts and 5xx "
        "(429 answers do not count: the retry budget bounds them). Default 6.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "examples": [6]},
    },
    "max_retry_seconds": {
        "label": "Retry budget (seconds)",
        "description": "Total time one request may spend retrying, waits included. Default 120.",
        "schema": {"type": ["number", "null"], "minimum": 0, "examples": [120]},
    },
    "evidence_secret": {
        "label": "Evidence key",
        "description": "Secret that seals the deployments' ownership evidence (HMAC). Empty: the API key. Set it "
        "to keep the evidence valid across API-key rotations; whoever holds it can make the package treat "
        "records as its own, so guard it like the key.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
}

#: Standard fields: the server URL and the API key; login, schema and port are not used.
FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "schema", "port"],
    "relabeling": {"host": "Server URL", "password": "API key"},
    "placeholders": {
        "host": "https://octopus.example.com",
        "password": "API-XXXXXXXXXXXXXXXXXXXXXXXXXX",
        "timeout": "30",
        "page_size": "1000",
        "max_requests_per_minute": "180",
        "max_attempts": "6",
        "max_retry_seconds": "120",
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
