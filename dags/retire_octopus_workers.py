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
from airflow.sdk import AssetAlias, TriggerRule, dag, get_current_context, task

from octopus.dag_defaults import CONN_ID, DEFAULT_ARGS, RETIRE_DESCRIPTION, RETIRE_PARAMS
from octopus.operators import TerraformFleetOperator
from octopus.sensors import DeploymentLeaseSensor
from octopus.sharing import ASSET_ALIAS, SUPPORTED_CLOUDS


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
    claim = DeploymentLeaseSensor(task_id="claim_deployment")

    @task
    def get_spaces() -> list[dict]:
        """Per cloud: the pool, the deployment's pinned initial space and every other space holding it."""
        from octopus import tasks

        context = get_current_context()
        params = dict(context["params"])
        params["instance_count"] = {c: 0 for c in SUPPORTED_CLOUDS}
        params["target_spaces"] = []
        return tasks.get_spaces(params, conn_id=CONN_ID, context=context, teardown=True)

    @task
    def get_fleets(plans: list[dict]) -> list[dict]:
        """Per cloud, the records the deployment's ledger owns: the only ones a teardown removes."""
        from octopus import tasks

        return tasks.get_fleet_records(plans, get_current_context())

    @task
    def copy_spaces(plans: list[dict]) -> list[dict]:
        from octopus import tasks

        return tasks.retire_spaces(plans, role="copy")

    @task
    def initial_spaces(plans: list[dict]) -> list[dict]:
        from octopus import tasks

        return tasks.retire_spaces(plans, role="initial")

    @task(map_index_template="{{ space_label }}", multiple_outputs=False)
    def retire_copies(space: dict, fleets: list[dict]) -> None:
        """Remove the deployment's copies from one remaining space."""
        from octopus import tasks

        context = get_current_context()
        context["space_label"] = space["name"]
        tasks.retire_from_space(space, fleets, context, conn_id=CONN_ID)

    @task(map_index_template="{{ space_label }}", trigger_rule=TriggerRule.NONE_FAILED, multiple_outputs=False)
    def retire_initial(space: dict, fleets: list[dict]) -> None:
        """Remove the fleets' own registrations from their initial space, after every copy is gone."""
        from octopus import tasks

        context = get_current_context()
        context["space_label"] = space["name"]
        tasks.retire_from_space(space, fleets, context, conn_id=CONN_ID)

    @task(trigger_rule=TriggerRule.ALL_DONE, multiple_outputs=False, outlets=[AssetAlias(ASSET_ALIAS)])
    def summarize(plans) -> dict:
        """Teardown table; releases the lease; emits the retired Asset on full success."""
        from octopus import tasks

        return tasks.summarize_retire(plans, get_current_context())

    plans = get_spaces()
    claim >> plans
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
