"""
### Retire shared Octopus workers

The teardown of `share_octopus_workers` for one deployment (`name_prefix`, per selected cloud): removes the
deployment's own worker records from every space — the copies first, then the initial space — and then runs
`terraform destroy` on that deployment's fleet.

A record is removed only when it carries an endpoint the deployment's **sealed evidence** owns (its ledger,
verified with the connection's key), whatever its name; foreign records and other deployments' fleets are left
alone. Every space the deployment ever wrote to is visited, also one whose pool was renamed since. Records that
also belong to other pools only lose the shared pool.

**Draining first.** Every record of ours is disabled (no new step is given to it), then `wait_for_drain` waits
until no deployment step holds any of them in any space (two reads of `workertaskleases` a poll apart), up to
`drain_timeout_minutes` (60); only then are records deleted and instances destroyed. Steps already running finish
on their worker; new steps go to the pool's other workers (a pool left with none fails them: retire only fleets
nothing needs any more). Its log and the summary say, per worker, how long the drain waited and for which steps
(`ServerTasks-…`). Stale leases (task completed, older than `stale_lease_minutes`) are reported, not waited for.

**If the fleet must go now:** trigger with `force_drain` true and a short `drain_timeout_minutes` (e.g. 1): after
that wait the records are deleted and the instances destroyed even while steps hold them, and **those steps fail**.
Without `force_drain` a drain that times out fails the run naming the steps and leaves every worker disabled and
intact (nothing deleted, nothing destroyed): clear `wait_for_drain` to wait again once they end.

The deployment is reported **retired** (Asset `…/retired`) only when every such space was read and holds none of
its records any more, and Terraform destroyed every fleet. A space that cannot be read fails its index and stays
in the ledger for the next retire; name a space that is gone for good in `forget_spaces` to stop tracking it.
A retired deployment's count goes back to the share DAG's `instance_count` param (the size
`autoscale_octopus_workers` chose for it is forgotten).

`dry_run` lists what would go and plans the destroy. Idempotent: a second run finds nothing to do and succeeds.
Schedule: none. Trigger it by hand, or pair it with the daily rebuild (e.g. an evening run).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import AssetAlias, TriggerRule, dag, get_current_context, task

from octopus.dag_defaults import CONN_ID, DEFAULT_ARGS, DRAIN_ARGS, RETIRE_DESCRIPTION, RETIRE_PARAMS
from octopus.operators import TerraformFleetOperator
from octopus.sensors import DeploymentLeaseSensor, OctopusWorkersDrainedSensor
from octopus.sharing import ASSET_ALIAS, SUPPORTED_CLOUDS
from octopus.wiring import upstream_ids


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
        """Per cloud, the endpoints the deployment's sealed evidence owns: the only records a teardown removes."""
        from octopus import tasks

        return tasks.get_fleet_records(plans, get_current_context(), conn_id=CONN_ID)

    @task
    def drain_spaces(plans: list[dict]) -> list[dict]:
        from octopus import tasks

        return tasks.retire_spaces(plans, role="all")

    @task(map_index_template="{{ space_label }}")
    def disable_records(space: dict, fleets: list[dict]) -> list[dict]:
        """Drain, step 1: disable the deployment's records in one space (no new step is given to them)."""
        from octopus import tasks

        context = get_current_context()
        context["space_label"] = space["name"]
        return tasks.disable_records(space, fleets, context, conn_id=CONN_ID)

    @task
    def copy_spaces(plans: list[dict]) -> list[dict]:
        from octopus import tasks

        return tasks.retire_spaces(plans, role="copy")

    @task
    def initial_spaces(plans: list[dict]) -> list[dict]:
        from octopus import tasks

        return tasks.retire_spaces(plans, role="initial")

    @task(map_index_template="{{ space_label }}", multiple_outputs=False)
    def retire_copies(space: dict, fleets: list[dict], drained: dict) -> None:
        """Remove the deployment's copies from one remaining space."""
        from octopus import tasks

        context = get_current_context()
        context["space_label"] = space["name"]
        tasks.retire_from_space(space, fleets, context, conn_id=CONN_ID, drained=drained)

    @task(map_index_template="{{ space_label }}", trigger_rule=TriggerRule.NONE_FAILED, multiple_outputs=False)
    def retire_initial(space: dict, fleets: list[dict], drained: dict) -> None:
        """Remove the fleets' own registrations from their initial space, after every copy is gone."""
        from octopus import tasks

        context = get_current_context()
        context["space_label"] = space["name"]
        tasks.retire_from_space(space, fleets, context, conn_id=CONN_ID, drained=drained)

    @task(trigger_rule=TriggerRule.ALL_DONE, multiple_outputs=False, outlets=[AssetAlias(ASSET_ALIAS)])
    def summarize(plans, upstream: dict) -> dict:
        """Teardown table; releases the lease; emits the retired Asset on full success."""
        from octopus import tasks

        return tasks.summarize_retire(plans, get_current_context(), upstream=upstream, conn_id=CONN_ID)

    plans = get_spaces()
    claim >> plans
    fleets = get_fleets(plans)
    # Drain first: disable every record of ours, wait until no step holds any, only then delete and destroy.
    disabled = disable_records.partial(fleets=fleets).expand(space=drain_spaces(plans))
    drained = OctopusWorkersDrainedSensor(
        task_id="wait_for_drain",
        records=disabled,
        octopus_conn_id=CONN_ID,
        **DRAIN_ARGS,
    )
    copies = retire_copies.partial(fleets=fleets, drained=drained.output).expand(space=copy_spaces(plans))
    initials = retire_initial.partial(fleets=fleets, drained=drained.output).expand(space=initial_spaces(plans))
    destroy = TerraformFleetOperator.partial(
        task_id="terraform_destroy",
        destroy=True,
        dry_run="{{ params.dry_run }}",
        octopus_conn_id=CONN_ID,
        map_index_template="{{ task.fleet_plan['cloud'] }}",
        trigger_rule=TriggerRule.NONE_FAILED,
        execution_timeout=timedelta(minutes=45),
    ).expand(fleet_plan=plans)
    # The summary finds its inputs by these objects' task ids: renaming a task here cannot break it.
    read_from = {"results": upstream_ids(copies, initials), "drain": drained.task_id, "destroy": destroy.task_id}
    copies >> initials >> destroy >> summarize(plans, read_from)


retire_octopus_workers()
