"""Settings both DAGs share: default task arguments, the trigger form's params, and the share pool.

Every param has a title, a description and a section of the trigger form; the names and values are those
users' runbooks pass in ``conf``, and each default is defined once (here, or in :mod:`octopus.sharing`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param

from octopus.draining import DEFAULT_DRAIN_TIMEOUT_MINUTES, DEFAULT_STALE_AFTER_SECONDS
from octopus.sharing import (
    DEFAULT_INSTANCE_COUNT,
    DEFAULT_NAME_PREFIX,
    DEFAULT_POOL_NAME_TEMPLATE,
    NAME_PREFIX_MAX,
    NAME_PREFIX_PATTERN,
    SUPPORTED_CLOUDS,
)

CONN_ID = "octopus_default"

DEFAULT_ARGS = {
    "owner": "platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}


#: Sections of the trigger form, in display order.
SECTION_BUILD = "What to build"
SECTION_SHARE = "Where to share"
SECTION_ADVANCED = "Advanced"

#: Labels of the clouds in the form's multi-select (the values stay the ids of ``SUPPORTED_CLOUDS``).
CLOUD_LABELS = {
    "aws": "AWS",
    "azure": "Azure",
    "gcp": "Google Cloud (GCP)",
    "local": "Local (simulated VMs on the Airflow worker: tests and demos)",
}
DEFAULT_CLOUDS = ["aws", "azure", "gcp"]

#: The Airflow pool ``share_to_space`` runs in unless ``[octopus] share_pool`` names another (see :func:`share_pool`):
#: Airflow's own ``default_pool``, which every Airflow has and which cannot be deleted, so a share never waits on a
#: pool nobody created (Airflow leaves a task of a missing pool in ``scheduled`` forever, saying so only in the
#: scheduler's log and the task's blocking dependencies).
DEFAULT_SHARE_POOL = "default_pool"
#: A dedicated pool an operator may create and name in ``[octopus] share_pool`` (the name, slots and description
#: the README's ``airflow pools set`` line and :func:`share_pool_body` use), e.g. to see the shares in the pools
#: view or to cap them together with other DAGs' writers of the same API key.
SHARE_POOL = "octopus_share"
SHARE_POOL_SLOTS = 16  # Airflow's default max_active_tasks_per_dag: fewer would queue shares behind each other
SHARE_POOL_DESCRIPTION = (
    "share_octopus_workers: share_to_space tasks writing to Octopus at once (they share the API key's rate limit)"
)
#: ``max_active_tis_per_dagrun`` and ``max_active_tis_per_dag`` of ``share_to_space``: the most share tasks one run,
#: and all runs of the DAG together, have running at once, in whatever pool. It is also the ``concurrency`` their
#: hooks divide the connection's ``max_requests_per_minute`` by, so the shares stay under the key's limit.
SHARE_MAX_ACTIVE_TIS = SHARE_POOL_SLOTS

#: Where ``share_to_space`` indexes run under a scheduler, from Airflow's config ``[octopus] share_mode``
#: (``AIRFLOW__OCTOPUS__SHARE_MODE``), read when the DAG is parsed:
#:
#: * ``worker`` (default): each index is a task process on a worker, labelled with its space's name;
#: * ``triggerer``: each index starts and ends in the triggerer (``start_from_trigger``) as a coroutine, so it
#:   costs about its HTTP; but Airflow 3.3 does not render ``map_index_template`` there, so the grid shows
#:   indexes 0, 1, 2 … (in ``spaces_to_share`` order; each index's log and XCom name its space).
#:
#: ``dag.test()`` always runs the worker path (it never starts a task from the triggerer).
SHARE_MODES = ("worker", "triggerer")


def share_mode() -> str:
    """The configured :data:`SHARE_MODES` entry; anything else fails the DAG's parse, naming the setting."""
    from airflow.sdk.configuration import conf

    mode = (conf.get("octopus", "share_mode", fallback="worker") or "worker").strip().lower()
    if mode not in SHARE_MODES:
        raise ValueError(
            f"[octopus] share_mode (AIRFLOW__OCTOPUS__SHARE_MODE) must be one of {', '.join(SHARE_MODES)}, got {mode!r}"
        )
    return mode


def share_pool() -> str:
    """The pool ``share_to_space`` runs in: Airflow's config ``[octopus] share_pool``
    (``AIRFLOW__OCTOPUS__SHARE_POOL``), read when the DAG is parsed; unset or blank, :data:`DEFAULT_SHARE_POOL`.

    A pool named here must exist (``airflow pools set <name> 16 "<description>"``): Airflow 3.3 shows pools to no
    task and no DAG parse, so the package cannot check it, and a share in a missing pool waits in ``scheduled``.
    """
    from airflow.sdk.configuration import conf

    return (conf.get("octopus", "share_pool", fallback="") or "").strip() or DEFAULT_SHARE_POOL


def share_pool_body(slots: int = SHARE_POOL_SLOTS) -> dict[str, Any]:
    """The dedicated :data:`SHARE_POOL` as a ``POST /api/v2/pools`` body (``airflow pools set`` takes the same three
    values); it is used once ``[octopus] share_pool`` names it."""
    return {"name": SHARE_POOL, "slots": slots, "description": SHARE_POOL_DESCRIPTION, "include_deferred": False}


def clouds_param(description: str) -> Param:
    """The clouds, as a multi-select of :data:`SUPPORTED_CLOUDS` (the form offers ``examples``)."""
    return Param(
        list(DEFAULT_CLOUDS),
        type="array",
        items={"type": "string", "enum": list(SUPPORTED_CLOUDS)},
        minItems=1,
        uniqueItems=True,
        examples=list(SUPPORTED_CLOUDS),
        values_display=CLOUD_LABELS,
        title="Clouds",
        description=description,
        section=SECTION_BUILD,
    )


def instance_count_param() -> Param:
    defaults = ", ".join(f'"{cloud}": {count}' for cloud, count in DEFAULT_INSTANCE_COUNT.items())
    return Param(
        dict(DEFAULT_INSTANCE_COUNT),
        type="object",
        properties={
            cloud: {"type": "integer", "minimum": 0, "maximum": 100, "title": f"{label} workers"}
            for cloud, label in SUPPORTED_CLOUDS.items()
        },
        additionalProperties=False,
        title="Workers per cloud",
        description=(
            "How many workers each selected cloud gets (0-100): Terraform builds this many and the run waits "
            'for this many. Edit the numbers, e.g. {"local": 2}; a cloud left out keeps its default '
            f"({{{defaults}}}); clouds not selected above are ignored."
        ),
        section=SECTION_BUILD,
    )


def name_prefix_param() -> Param:
    # Short enough for every cloud's naming rules once "-<cloud>" is appended (the modules allow 32 characters).
    return Param(
        DEFAULT_NAME_PREFIX,
        type="string",
        pattern=NAME_PREFIX_PATTERN.pattern,
        maxLength=NAME_PREFIX_MAX,
        title="Name prefix",
        description=(
            f"Names this deployment's workers <prefix>-<cloud>-<n> and tells them apart from any other's: "
            f"lower-case letters, digits and single hyphens, at most {NAME_PREFIX_MAX} characters, no cloud name "
            "as a part. Use the same prefix to retire them."
        ),
        section=SECTION_BUILD,
    )


def dry_run_param(description: str) -> Param:
    return Param(False, type="boolean", title="Dry run", description=description, section=SECTION_BUILD)


def worker_pool_name_param() -> Param:
    return Param(
        DEFAULT_POOL_NAME_TEMPLATE,
        type="string",
        minLength=1,
        pattern=r"\{cloud\}",
        title="Worker pool name",
        description=(
            "Name of the worker pool, the same in every space; {cloud} becomes AWS, Azure, GCP or Local. "
            f"Default: {DEFAULT_POOL_NAME_TEMPLATE}."
        ),
        section=SECTION_SHARE,
    )


def initial_space_param() -> Param:
    return Param(
        "",
        type=["string", "null"],
        title="Initial space",
        description=(
            "Space (name or id) the fleet registers in. Empty: the space pinned on first use (or, on first use, "
            "the first space holding the pool). Set it to move the fleet deliberately."
        ),
        section=SECTION_SHARE,
    )


def poll_interval_param(description: str) -> Param:
    return Param(
        30,
        type="integer",
        minimum=1,
        maximum=3600,
        title="Poll interval (seconds)",
        description=description,
        section=SECTION_ADVANCED,
    )


#: How every drain (the share's ``drain_removed``, the retire's ``wait_for_drain``) takes its settings from the
#: run's params: one place for both DAGs.
DRAIN_ARGS: dict[str, str] = {
    "drain_timeout": "{{ params.drain_timeout_minutes * 60 }}",
    "stale_after": "{{ params.stale_lease_minutes * 60 }}",
    "poll_interval": "{{ params.poll_interval_seconds }}",
    "force": "{{ params.force_drain }}",
    "dry_run": "{{ params.dry_run }}",
}


def drain_timeout_param() -> Param:
    return Param(
        DEFAULT_DRAIN_TIMEOUT_MINUTES,
        type="number",
        exclusiveMinimum=0,
        maximum=7 * 24 * 60,
        title="Drain timeout (minutes)",
        description=(
            "How long to wait for the deployment steps running on a worker to end before removing it. When it "
            "runs out the run fails naming those steps, and the workers stay disabled and intact."
        ),
        section=SECTION_ADVANCED,
    )


def force_drain_param() -> Param:
    return Param(
        False,
        type="boolean",
        title="Force removal after the drain timeout",
        description=(
            "Remove the workers even if steps still run on them when the drain times out. Those steps fail: use it "
            "only when the fleet must go now."
        ),
        section=SECTION_ADVANCED,
    )


def stale_lease_param() -> Param:
    return Param(
        DEFAULT_STALE_AFTER_SECONDS // 60,
        type="number",
        exclusiveMinimum=0,
        maximum=7 * 24 * 60,
        title="Stale lease after (minutes)",
        description=(
            "A lease whose task has already completed and that is older than this is stale (Octopus keeps some "
            "until it restarts): reported, never waited for."
        ),
        section=SECTION_ADVANCED,
    )


SHARE_PARAMS = {
    # What to build
    "clouds": clouds_param("Clouds whose fleets to build and share. Pick one or more."),
    "instance_count": instance_count_param(),
    "name_prefix": name_prefix_param(),
    "dry_run": dry_run_param(
        "Plan Terraform and compute every share without changing anything: no VMs, no Octopus writes."
    ),
    # Where to share
    "worker_pool_name": worker_pool_name_param(),
    "target_spaces": Param(
        [],
        type=["array", "null"],
        items={"type": "string", "minLength": 1},
        title="Only these spaces",
        description="Space names or ids, one per line, to share into. Empty: every space that has the pool.",
        section=SECTION_SHARE,
    ),
    "initial_space": initial_space_param(),
    "prune_stale": Param(
        True,
        type="boolean",
        title="Remove stale copies",
        description=(
            "Remove this deployment's workers that are no longer in the fleet from the shared pools "
            "(e.g. yesterday's VMs). Off: only add and repair."
        ),
        section=SECTION_SHARE,
    ),
    # Advanced
    "registration_timeout_minutes": Param(
        20,
        type="integer",
        minimum=1,
        maximum=24 * 60,
        title="Registration timeout (minutes)",
        description="How long to wait for a new fleet's workers to register and turn healthy before failing.",
        section=SECTION_ADVANCED,
    ),
    "poll_interval_seconds": poll_interval_param(
        "How often the wait checks Octopus for the fleet's workers, and a drain which steps still hold them."
    ),
    "drain_timeout_minutes": drain_timeout_param(),
    "force_drain": force_drain_param(),
    "stale_lease_minutes": stale_lease_param(),
    "adopt": Param(
        [],
        type=["array", "null"],
        items={"type": "string", "pattern": "^[0-9A-Fa-f]{40}$"},
        uniqueItems=True,
        title="Adopt records (thumbprints)",
        description=(
            "Thumbprints of this deployment's own older workers to take back after its ledger was lost. Run a dry "
            "run first: its summary lists the records it could adopt (named like this fleet, not Healthy). Only "
            "such records are adopted; any other thumbprint fails the run before anything is written."
        ),
        section=SECTION_ADVANCED,
    ),
    "wait_mode": Param(
        "reschedule",
        type="string",
        enum=["reschedule", "deferrable"],
        values_display={
            "reschedule": "Reschedule (frees the worker slot between checks)",
            "deferrable": "Deferrable (the triggerer waits; needs a running triggerer)",
        },
        title="Wait mode",
        description="How the wait for the workers runs between its checks.",
        section=SECTION_ADVANCED,
    ),
}

RETIRE_PARAMS = {
    "clouds": clouds_param("Clouds whose fleets to remove. Pick one or more."),
    "name_prefix": name_prefix_param(),
    "dry_run": dry_run_param("List what would be removed and plan the destroy; change nothing."),
    "worker_pool_name": worker_pool_name_param(),
    "initial_space": initial_space_param(),
    "drain_timeout_minutes": drain_timeout_param(),
    "force_drain": force_drain_param(),
    "stale_lease_minutes": stale_lease_param(),
    "poll_interval_seconds": poll_interval_param(
        "How often the drain reads which deployment steps still hold the workers."
    ),
    "forget_spaces": Param(
        [],
        type=["array", "null"],
        items={"type": "string", "minLength": 1},
        title="Let go of spaces",
        description=(
            "Space names or ids the ledger recorded that this retire may stop tracking without reading them (a "
            "space deleted, or that the key may no longer see). Records of ours left there are left as they are."
        ),
        section=SECTION_SHARE,
    ),
}

SHARE_DESCRIPTION = "Build worker fleets with Terraform and share them into every space's worker pool"
RETIRE_DESCRIPTION = "Remove a deployment's shared workers from every space, then destroy its fleets"
