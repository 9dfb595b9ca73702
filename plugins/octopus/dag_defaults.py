"""Settings both DAGs share: default task arguments, the trigger form's params, and the share pool.

Every param has a title, a description and a section of the trigger form; the names and values are those
users' runbooks pass in ``conf``. Each default, bound and description is declared once, in :mod:`octopus.settings`;
this module only names what the DAGs import.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from octopus import settings
from octopus.settings import SECTION_ADVANCED, SECTION_BUILD, SECTION_SHARE  # noqa: F401 - re-exported

CONN_ID: str = settings.default("conn_id")

DEFAULT_ARGS = {
    "owner": settings.default("task_owner"),
    "retries": settings.default("task_retries"),
    "retry_delay": timedelta(seconds=settings.seconds("task_retry_delay_seconds")),
    "retry_exponential_backoff": settings.default("task_retry_backoff"),
    "max_retry_delay": timedelta(seconds=settings.seconds("task_max_retry_delay_minutes")),
}

#: Labels of the clouds in the form's multi-select (the values stay the ids of ``SUPPORTED_CLOUDS``).
CLOUD_LABELS: dict[str, str] = dict(settings.setting("clouds").form["values_display"])
DEFAULT_CLOUDS: list[str] = settings.default("clouds")

#: The Airflow pool ``share_to_space`` runs in unless ``[octopus] share_pool`` names another (see :func:`share_pool`):
#: Airflow's own ``default_pool``, which every Airflow has and which cannot be deleted, so a share never waits on a
#: pool nobody created (Airflow leaves a task of a missing pool in ``scheduled`` forever, saying so only in the
#: scheduler's log and the task's blocking dependencies).
DEFAULT_SHARE_POOL: str = settings.default("share_pool")
#: A dedicated pool an operator may create and name in ``[octopus] share_pool`` (the name, slots and description
#: the README's ``airflow pools set`` line and :func:`share_pool_body` use), e.g. to see the shares in the pools
#: view or to cap them together with other DAGs' writers of the same API key.
SHARE_POOL: str = settings.default("dedicated_share_pool")
#: Airflow's default max_active_tasks_per_dag: fewer slots would queue shares behind each other.
SHARE_POOL_SLOTS: int = settings.default("shares_at_once")
SHARE_POOL_DESCRIPTION = (
    "share_octopus_workers: share_to_space tasks writing to Octopus at once (they share the API key's rate limit)"
)
#: ``max_active_tis_per_dagrun`` and ``max_active_tis_per_dag`` of ``share_to_space``: the most share tasks one run,
#: and all runs of the DAG together, have running at once, in whatever pool. It is also the ``concurrency`` their
#: hooks divide the connection's ``max_requests_per_minute`` by, so the shares stay under the key's limit.
SHARE_MAX_ACTIVE_TIS: int = settings.default("shares_at_once")

#: Where ``share_to_space`` indexes run under a scheduler, from Airflow's config ``[octopus] share_mode``
#: (``AIRFLOW__OCTOPUS__SHARE_MODE``), read when the DAG is parsed:
#:
#: * ``worker`` (default): each index is a task process on a worker, labelled with its space's name;
#: * ``triggerer``: each index starts and ends in the triggerer (``start_from_trigger``) as a coroutine, so it
#:   costs about its HTTP; but Airflow 3.3 does not render ``map_index_template`` there, so the grid shows
#:   indexes 0, 1, 2 … (in ``spaces_to_share`` order; each index's log and XCom name its space).
#:
#: ``dag.test()`` always runs the worker path (it never starts a task from the triggerer).
SHARE_MODES: tuple[str, ...] = tuple(settings.setting("share_mode").bounds["enum"])


def share_mode() -> str:
    """The configured :data:`SHARE_MODES` entry; anything else fails the DAG's parse, naming the setting."""
    return settings.config_option("share_mode")


def share_pool() -> str:
    """The pool ``share_to_space`` runs in: Airflow's config ``[octopus] share_pool``
    (``AIRFLOW__OCTOPUS__SHARE_POOL``), read when the DAG is parsed; unset or blank, :data:`DEFAULT_SHARE_POOL`.

    A pool named here must exist (``airflow pools set <name> <slots> "<description>"``): Airflow 3.3 shows pools to
    no task and no DAG parse, so the package cannot check it, and a share in a missing pool waits in ``scheduled``.
    """
    return settings.config_option("share_pool")


def share_pool_body(slots: int = SHARE_POOL_SLOTS) -> dict[str, Any]:
    """The dedicated :data:`SHARE_POOL` as a ``POST /api/v2/pools`` body (``airflow pools set`` takes the same three
    values); it is used once ``[octopus] share_pool`` names it."""
    return {"name": SHARE_POOL, "slots": slots, "description": SHARE_POOL_DESCRIPTION, "include_deferred": False}


#: How every drain (the share's ``drain_removed``, the retire's ``wait_for_drain``) takes its settings from the
#: run's params: one place for both DAGs.
DRAIN_ARGS: dict[str, str] = {
    "drain_timeout": "{{ params.drain_timeout_minutes * 60 }}",
    "stale_after": "{{ params.stale_lease_minutes * 60 }}",
    "poll_interval": "{{ params.poll_interval_seconds }}",
    "force": "{{ params.force_drain }}",
    "dry_run": "{{ params.dry_run }}",
}

#: The trigger forms (generated from :mod:`octopus.settings`: same names, types, defaults and descriptions).
SHARE_PARAMS = settings.params(settings.SHARE)
RETIRE_PARAMS = settings.params(settings.RETIRE)

SHARE_DESCRIPTION = "Build worker fleets with Terraform and share them into every space's worker pool"
RETIRE_DESCRIPTION = "Remove a deployment's shared workers from every space, then destroy its fleets"
