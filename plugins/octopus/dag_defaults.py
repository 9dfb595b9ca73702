"""Settings both DAGs share: default task arguments and the params that mean the same in each."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param

from octopus.sharing import DEFAULT_POOL_NAME_TEMPLATE, SUPPORTED_CLOUDS

CONN_ID = "octopus_default"

DEFAULT_ARGS = {
    "owner": "platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}


def clouds_param(description: str) -> Param:
    return Param(
        ["aws", "azure", "gcp"],
        type="array",
        items={"type": "string", "enum": list(SUPPORTED_CLOUDS)},
        minItems=1,
        uniqueItems=True,
        description=description,
    )


def worker_pool_name_param() -> Param:
    return Param(
        DEFAULT_POOL_NAME_TEMPLATE,
        type="string",
        minLength=1,
        pattern=r"\{cloud\}",
        description="Pool name template; {cloud} becomes AWS, Azure, GCP or Local.",
    )


def name_prefix_param() -> Param:
    # Short enough for every cloud's naming rules once "-<cloud>" is appended (the modules allow 32 characters).
    return Param(
        "octopus-shared",
        type="string",
        pattern=r"^[a-z][a-z0-9-]{0,24}$",
        description="Worker names start with <name_prefix>-<cloud>-.",
    )


def dry_run_param(description: str) -> Param:
    return Param(False, type="boolean", description=description)
