"""``share_to_space`` as an operator that starts in the triggerer (``start_from_trigger``), or runs on a worker.

Under a scheduler with ``start_from_trigger`` the scheduler defers each mapped index straight to
:class:`~octopus.share_trigger.OctopusShareSpaceTrigger` (``TaskInstance.defer_task``): no worker process. The
trigger's ``run_settings`` are rendered per index in the triggerer from :data:`RUN_SETTINGS_TEMPLATE`; it reads
its space and the fleets from the upstream XComs itself, once for all indexes of a run. Wherever the operator
runs on a worker instead (``dag.test()``, which never starts tasks from the triggerer, or
``start_from_trigger=False``), :meth:`execute` does the same share synchronously
(:func:`octopus.tasks.share_to_space`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import StartTriggerArgs

from octopus import settings, tasks
from octopus.share_trigger import DEFAULT_SPACES_AT_ONCE
from octopus.wiring import TriggerUpstream

#: The one template the triggerer renders into the trigger's kwargs: run identity and params, no XCom read
#: (the trigger reads ``spaces_to_share`` and ``wait_for_workers`` itself, once for all indexes of a run; a
#: template's ``xcom_pull`` would be one request per index to the triggerer's supervisor). One
#: ``wait_for_workers`` index per selected cloud.
RUN_SETTINGS_TEMPLATE = (
    "{{ {'dag_id': ti.dag_id, 'run_id': ti.run_id, 'name_prefix': params.name_prefix, "
    "'dry_run': params.dry_run, 'prune_stale': params.prune_stale, "
    "'fleet_count': params.clouds | unique | list | length} | tojson }}"
)


def share_trigger_args(
    octopus_conn_id: str,
    *,
    upstream: TriggerUpstream,
    concurrency: int = DEFAULT_SPACES_AT_ONCE,
    parallelism: int | None = None,
) -> StartTriggerArgs:
    """What the scheduler starts each index with: the share trigger, its templated kwargs, ``execute_complete``.

    The trigger reads its space (this index's item of ``upstream["spaces"]``) and the fleets
    (``upstream["fleets"]``) from XCom in the triggerer: pass the task ids of the DAG's own objects.
    """
    kwargs: dict[str, Any] = {
        "run_settings": RUN_SETTINGS_TEMPLATE,
        "octopus_conn_id": octopus_conn_id,
        "spaces_at_once": concurrency,
        "upstream": dict(upstream),
    }
    if parallelism is not None:
        kwargs["parallelism"] = parallelism
    return StartTriggerArgs(
        trigger_cls="octopus.share_trigger.OctopusShareSpaceTrigger",
        trigger_kwargs=kwargs,
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )


class OctopusShareSpaceOperator(BaseOperator):
    """
    Make one space's shared pools hold exactly the ready fleets (see :func:`octopus.operations.share_space`).

    Pushes the XCom ``space_result`` and fails only its own index. Pass ``start_from_trigger=True`` and
    ``start_trigger_args=share_trigger_args(conn_id, upstream=...)`` to run it in the triggerer.

    :param space: an item of ``spaces_to_share`` (mapped over).
    :param fleets: the ``wait_for_workers`` XComs.
    :param octopus_conn_id: Airflow connection of the Octopus server.
    :param concurrency: share tasks running at once; each worker-side hook paces at its share of the key's rate.
    """

    template_fields: Sequence[str] = ("space", "fleets", "run_settings")
    ui_color = "#2f93e0"

    def __init__(
        self,
        *,
        space: Mapping[str, Any],
        fleets: Any = None,
        octopus_conn_id: str = settings.default("conn_id"),
        concurrency: int = DEFAULT_SPACES_AT_ONCE,
        run_settings: str = RUN_SETTINGS_TEMPLATE,
        start_from_trigger: bool = False,
        start_trigger_args: StartTriggerArgs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Named here so that .partial() accepts them (a mapped operator reads them from its partial kwargs).
        self.start_from_trigger = start_from_trigger
        self.start_trigger_args = start_trigger_args
        self.space = space
        self.fleets = fleets
        self.octopus_conn_id = octopus_conn_id
        self.concurrency = concurrency
        self.run_settings = run_settings  # the trigger's; on a worker the context has it all

    def execute(self, context: Any) -> None:
        tasks.share_to_space(
            self.space, self.fleets, context, conn_id=self.octopus_conn_id, concurrency=self.concurrency
        )

    def execute_complete(self, context: Any, event: Mapping[str, Any] | None = None) -> None:
        """Resumed from the trigger only for an error no retry can fix: record the result, fail without retries."""
        event = dict(event or {})
        if event.get("result"):
            context["ti"].xcom_push(key=tasks.SPACE_RESULT_KEY, value=event["result"])
        raise AirflowFailException(event.get("message") or f"share trigger ended with an unexpected event: {event}")
