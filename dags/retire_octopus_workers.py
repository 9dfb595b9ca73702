"""
### Retire shared Octopus workers

The teardown of `share_octopus_workers`: per selected cloud, removes the fleet's worker records from every
space — the copies first, then the initial space — and then runs `terraform destroy` on the fleet.

The fleet is every polling worker named `<name_prefix>-<cloud>-…` in the initial space's pool (any health);
its copies are found by thumbprint in every space's pool of the same name. Workers that also belong to other
pools only lose the shared pool. `dry_run` lists what would go and plans the destroy. Idempotent: a second
run finds nothing to do and succeeds.

Schedule: none. Trigger it by hand, or pair it with the daily rebuild (e.g. an evening run).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import TriggerRule, dag, get_current_context, task

from octopus.dag_defaults import CONN_ID, DEFAULT_ARGS, RETIRE_DESCRIPTION, RETIRE_PARAMS
from octopus.operators import TerraformFleetOperator
from octopus.sharing import SUPPORTED_CLOUDS


@dag(
    dag_id="retire_octopus_workers",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    doc_md=__doc__,
    description=RETIRE_DESCRIPTION,
    tags=["octopus", "workers"],
    params=RETIRE_PARAMS,
    default_args=DEFAULT_ARGS,
)
def retire_octopus_workers():
    @task
    def get_spaces() -> list[dict]:
        """Per cloud: the pool, its initial space and every other space holding it."""
        from octopus import tasks

        params = dict(get_current_context()["params"])
        params["instance_count"] = {c: 0 for c in SUPPORTED_CLOUDS}
        params["target_spaces"] = []
        return tasks.get_spaces(params, conn_id=CONN_ID)

    @task
    def get_fleets(plans: list[dict]) -> list[dict]:
        """Every record of each fleet in its initial pool: what must go everywhere."""
        from octopus import tasks

        return tasks.get_fleet_records(plans, conn_id=CONN_ID)

    @task
    def copy_spaces(plans: list[dict]) -> list[dict]:
        from octopus import tasks

        return tasks.retire_spaces(plans, role="copy")

    @task
    def initial_spaces(plans: list[dict]) -> list[dict]:
        from octopus import tasks

        return tasks.retire_spaces(plans, role="initial")

    @task(map_index_template="{{ space_label }}")
    def retire_copies(space: dict, fleets: list[dict]) -> dict:
        """Remove the fleets' copies from one remaining space."""
        from octopus import tasks

        context = get_current_context()
        context["space_label"] = space["name"]
        return tasks.retire_from_space(space, fleets, context, conn_id=CONN_ID)

    @task(map_index_template="{{ space_label }}", trigger_rule=TriggerRule.NONE_FAILED)
    def retire_initial(space: dict, fleets: list[dict]) -> dict:
        """Remove the fleets' own registrations from their initial space, after every copy is gone."""
        from octopus import tasks

        context = get_current_context()
        context["space_label"] = space["name"]
        return tasks.retire_from_space(space, fleets, context, conn_id=CONN_ID)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def summarize(plans) -> dict:
        from octopus import tasks

        return tasks.summarize_retire(plans, get_current_context())

    plans = get_spaces()
    fleets = get_fleets(plans)
    copies = retire_copies.partial(fleets=fleets).expand(space=copy_spaces(plans))
    initials = retire_initial.partial(fleets=fleets).expand(space=initial_spaces(plans))
    destroy = TerraformFleetOperator.partial(
        task_id="terraform_destroy",
        destroy=True,
        dry_run="{{ params.dry_run }}",
        octopus_conn_id=CONN_ID,
        map_index_template="{{ task.fleet_plan['cloud'] }}",
        trigger_rule=TriggerRule.NONE_FAILED,
        execution_timeout=timedelta(minutes=45),
    ).expand(fleet_plan=plans)
    copies >> initials >> destroy >> summarize(plans)


retire_octopus_workers()
