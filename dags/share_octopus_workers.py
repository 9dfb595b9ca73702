"""
### Share Octopus workers across spaces

Builds a fleet of polling-Tentacle workers per cloud with Terraform, waits until they have registered
themselves in the **initial space** (the first space, in Octopus's order, that holds the pool
`<Cloud> Worker Pool TF`, pinned on first use), then makes every worker a member of the same-named pool in
**every other space** that has it — the same endpoint (`poll://` URI and thumbprint) registered once per space.

| task | what it does |
|---|---|
| `claim_deployment` | takes the deployment's lease; waits while another share, retire or backfill holds it |
| `get_spaces` | lists spaces and pools once: per cloud the pool, initial and remaining spaces |
| `drain_removed` (per cloud) | a lower count: drains the instances that leave, deletes their records |
| `terraform_apply` (per cloud) | `terraform init` + `apply` (`plan` when `dry_run`); removes exactly those |
| `wait_for_workers` (per cloud) | waits for the cloud's instances to register; records the fleet, sealed |
| `share_to_space` (one per space) | adds the fleet, repairs drift, prunes our stale copies |
| `drain_outdated` (per cloud) | a rebuild: once every space has the new instances, drains the outdated ones |
| `remove_outdated` (per cloud) | a second apply that removes exactly the drained outdated instances (skipped if none) |
| `summarize` | a spaces × clouds table, the drains; emits the Asset; fails the run if anything failed |

**Ownership.** A record is ours only when it carries the endpoint of one of this deployment's instances, proven by
evidence sealed with the connection's key (an Airflow Variable editor cannot forge it). A copy renamed in Octopus
stays ours; a foreign machine holding one of our names blocks only its own space. See `docs/ownership.md`.

**Re-running only failed spaces.** Each space is its own map index of `share_to_space`, named after the space.
Clear the failed ones together with `summarize` — in the UI select the failed instances → *Clear* with
*Downstream*; on the CLI `airflow tasks clear share_octopus_workers -t '^(share_to_space|summarize)$'
--only-failed -s <date> -e <date> -y`. Every write is an upsert. A cleared task of an *older* run refuses once a
newer run has claimed the deployment: trigger a new run instead.

**Params.** `clouds`, `instance_count` (per cloud; while `autoscale_octopus_workers` owns a deployment's count, its
sealed size wins, with a warning), `name_prefix` (the deployment), `dry_run` (plan and compute every share, change
nothing), `worker_pool_name`, `target_spaces` (names or ids this run writes to; empty = all), `allowed_spaces` /
`denied_spaces` (the access policy, over the `[octopus]` options of the same names: a denied space gets no copy,
and ours there are withdrawn, drained if a step runs on one), `initial_space` (keep or move the fleet
deliberately), `prune_stale`, `adopt` (thumbprints of this deployment's own older records to take back after its
ledger was lost; dry run first), `registration_timeout_minutes`, `poll_interval_seconds`, `wait_mode` (`reschedule`
or `deferrable`), `drain_timeout_minutes`, `force_drain`, `stale_lease_minutes` (how instances that leave are
drained: no step is killed; on timeout the run fails, leaving them disabled and intact).

**Draining.** No instance leaves under a running deployment step. Whatever takes one out — a lower
`instance_count`, a rebuild (a changed server URL, space, pool, machine policy, image or bootstrap makes the running
instances *outdated*: they stay shared while new ones are built and shared beside them) — first disables its
records in every space, waits until no step in any space holds it (`workertaskleases`, two reads a poll apart),
deletes the records, and only then removes that instance. The grid labels each cloud's drain with what it waits
for (`aws: draining 2 (ServerTasks-12, …)`, `aws: nothing leaves`); the summary lists, per worker, how long it
waited and for which steps. If the fleet must go **now**: trigger with `force_drain` and a short
`drain_timeout_minutes` (the steps still on those workers then fail); without `force_drain` a drain that times out
fails the run and leaves the workers disabled and intact (clear the drain task to wait again).

Connection: `octopus_default` (type `octopus`; host = server URL, password = API key). See the README's runbook.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import AssetAlias, TriggerRule, dag, get_current_context, task, task_group

from octopus.dag_defaults import (
    CONN_ID,
    DEFAULT_ARGS,
    DRAIN_ARGS,
    SHARE_DESCRIPTION,
    SHARE_MAX_ACTIVE_TIS,
    SHARE_PARAMS,
    share_mode,
    share_pool,
)
from octopus.operators import TerraformFleetOperator
from octopus.sensors import (
    DeploymentLeaseSensor,
    OctopusRemovedInstancesDrainedSensor,
    OctopusWorkersRegisteredSensor,
)
from octopus.share_operator import OctopusShareSpaceOperator, share_trigger_args
from octopus.sharing import ASSET_ALIAS


@dag(
    dag_id="share_octopus_workers",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=3),
    doc_md=__doc__,
    description=SHARE_DESCRIPTION,
    tags=["octopus", "workers"],
    params=SHARE_PARAMS,
    default_args=DEFAULT_ARGS,
)
def share_octopus_workers():
    claim = DeploymentLeaseSensor(task_id="claim_deployment")

    @task
    def get_spaces() -> list[dict]:
        """Per cloud: pool name, pinned initial space, remaining spaces and their pool ids (sorted, deterministic)."""
        from octopus import tasks

        context = get_current_context()
        return tasks.get_spaces(context["params"], conn_id=CONN_ID, context=context)

    # The grid labels each cloud's drain with what it does: "aws: nothing leaves", "aws: draining 2 (ServerTasks-12,
    # …)", "aws: drained 2 in 40s" (the drain sensors set drain_label; before they run, the cloud).
    drain_label = "{{ drain_label | default(task.fleet_plan['cloud']) }}"
    rebuild = {}

    @task_group(group_id="fleet", prefix_group_id=False)
    def fleet(fleet_plan):
        # Instances a lower count removes are drained (disabled, no step holding them) and their records deleted
        # before Terraform removes exactly those: the package picks who leaves, never the cloud.
        drained = OctopusRemovedInstancesDrainedSensor(
            task_id="drain_removed",
            fleet_plan=fleet_plan,
            octopus_conn_id=CONN_ID,
            **DRAIN_ARGS,
            map_index_template=drain_label,
        )
        applied = TerraformFleetOperator(
            task_id="terraform_apply",
            fleet_plan=fleet_plan,
            dry_run="{{ params.dry_run }}",
            octopus_conn_id=CONN_ID,
            map_index_template="{{ task.fleet_plan['cloud'] }}",
            execution_timeout=timedelta(minutes=45),
        )
        drained >> applied
        rebuild["drain_removed"], rebuild["apply"] = drained, applied
        waited = OctopusWorkersRegisteredSensor(
            task_id="wait_for_workers",
            fleet_plan=fleet_plan,
            terraform_output=applied.output,
            octopus_conn_id=CONN_ID,
            registration_timeout="{{ params.registration_timeout_minutes * 60 }}",
            poll_interval="{{ params.poll_interval_seconds }}",
            deferrable="{{ params.wait_mode == 'deferrable' }}",
            dry_run="{{ params.dry_run }}",
            mode="reschedule",
            map_index_template="{{ task.fleet_plan['cloud'] }}",
        )
        # A rebuild without a gap: instances built from an older configuration (the module's outdated_instances)
        # stayed and stayed shared while the apply started instance_count current ones beside them. Once every
        # space has the current ones (after share_to_space), the outdated ones are drained like a scale-in's, and
        # a second apply removes exactly those by name. Nothing outdated: both return at once (the apply skips).
        rebuild["drain"] = OctopusRemovedInstancesDrainedSensor(
            task_id="drain_outdated",
            fleet_plan=fleet_plan,
            terraform_output=applied.output,
            octopus_conn_id=CONN_ID,
            **DRAIN_ARGS,
            map_index_template=drain_label,
        )
        rebuild["remove"] = TerraformFleetOperator(
            task_id="remove_outdated",
            fleet_plan=fleet_plan,
            remove_instances=rebuild["drain"].output,
            dry_run="{{ params.dry_run }}",
            octopus_conn_id=CONN_ID,
            map_index_template="{{ task.fleet_plan['cloud'] }}",
            execution_timeout=timedelta(minutes=45),
        )
        waited >> rebuild["drain"]
        return waited

    @task
    def spaces_to_share(plans: list[dict]) -> list[dict]:
        """The union of spaces to visit, one map index each, in a stable order."""
        from octopus import tasks

        return tasks.spaces_to_share(plans, get_current_context()["params"])

    @task(trigger_rule=TriggerRule.ALL_DONE, multiple_outputs=False, outlets=[AssetAlias(ASSET_ALIAS)])
    def summarize(plans, fleets, spaces, upstream: dict) -> dict:
        """Spaces × clouds table; keeps the evidence lean; releases the lease; emits the Asset on success."""
        from octopus import tasks

        return tasks.summarize(plans, fleets, spaces, get_current_context(), upstream=upstream, conn_id=CONN_ID)

    plans = get_spaces()
    claim >> plans
    waits = fleet.expand(fleet_plan=plans)
    # One index per space, named by space; under a scheduler it runs on a worker or, with [octopus]
    # share_mode = triggerer, wholly in the triggerer (see octopus.dag_defaults.share_mode).
    spaces = spaces_to_share(plans)
    shares = OctopusShareSpaceOperator.partial(
        task_id="share_to_space",
        fleets=waits.output,
        octopus_conn_id=CONN_ID,
        concurrency=SHARE_MAX_ACTIVE_TIS,
        map_index_template="{{ task.space['name'] }}",
        trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS,
        retries=3,
        max_active_tis_per_dagrun=SHARE_MAX_ACTIVE_TIS,
        max_active_tis_per_dag=SHARE_MAX_ACTIVE_TIS,  # the cap across runs (backfills), whatever the pool
        pool=share_pool(),  # default_pool unless [octopus] share_pool names one (octopus.dag_defaults.share_pool)
        start_from_trigger=share_mode() == "triggerer",
        start_trigger_args=share_trigger_args(
            CONN_ID,
            upstream={"spaces": spaces.operator.task_id, "fleets": waits.task_id},  # read in the triggerer
            concurrency=SHARE_MAX_ACTIVE_TIS,
        ),
    ).expand(space=spaces)
    # The summary reads the per-cloud tasks by these objects' task ids: renaming a task here cannot break it.
    read_from = {
        "drain_removed": rebuild["drain_removed"].task_id,
        "apply": rebuild["apply"].task_id,
        "drain_outdated": rebuild["drain"].task_id,
        "remove_outdated": rebuild["remove"].task_id,
    }
    summary = summarize(plans, waits.output, spaces, read_from)
    shares >> rebuild["drain"]  # the current instances are in every pool before an outdated one leaves any
    shares >> summary
    rebuild["remove"] >> summary


share_octopus_workers()
