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


SHARE_PARAMS = {
    "clouds": clouds_param("Clouds whose fleets to build and share."),
    "instance_count": Param(
        {"aws": 2, "azure": 2, "gcp": 2, "local": 3},
        type="object",
        properties={cloud: {"type": "integer", "minimum": 0, "maximum": 100} for cloud in SUPPORTED_CLOUDS},
        additionalProperties=False,
        description="Workers per cloud: Terraform builds this many and the wait expects this many.",
    ),
    "worker_pool_name": worker_pool_name_param(),
    "target_spaces": Param(
        [],
        type="array",
        items={"type": "string", "minLength": 1},
        description="Limit sharing to these spaces (names or ids). Empty: every space that has the pool.",
    ),
    "dry_run": dry_run_param("Plan Terraform and compute every share; write nothing."),
    "prune_stale": Param(
        True,
        type="boolean",
        description="Remove copies of workers that are no longer in the fleet (shared pools only).",
    ),
    "registration_timeout_minutes": Param(20, type="integer", minimum=1, maximum=24 * 60),
    "poll_interval_seconds": Param(30, type="integer", minimum=1, maximum=3600),
    "wait_mode": Param("reschedule", type="string", enum=["reschedule", "deferrable"]),
    "name_prefix": name_prefix_param(),
}

RETIRE_PARAMS = {
    "clouds": clouds_param("Clouds whose fleets to remove."),
    "worker_pool_name": worker_pool_name_param(),
    "dry_run": dry_run_param("List what would be removed and plan the destroy; change nothing."),
    "name_prefix": name_prefix_param(),
}

SHARE_DESCRIPTION = "Build worker fleets with Terraform and share them into every space's worker pool"
RETIRE_DESCRIPTION = "Remove a deployment's shared workers from every space, then destroy its fleets"
