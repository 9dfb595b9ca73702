"""
### Autoscale the shared Octopus workers

Every 5 minutes, per deployment (`name_prefix`, cloud): sizes the shared fleet to what the spaces run, and acts
through the same pipeline as `share_octopus_workers` (Terraform, wait, share) by triggering a run of it.

| task | what it does |
|---|---|
| `tick` | lease (never waits), observe, decide, act, release; one log line per cloud |
| `share_runs` | the share runs the tick recorded (none on most ticks) |
| `trigger_share` (per cloud, when the tick says so) | triggers `share_octopus_workers` with the new size |

`tick` takes the deployment's lease without waiting (a share or retire run holding it: the tick holds and says
so), and logs one line per cloud: demand, target, action and why. `trigger_share` passes `{clouds, name_prefix,
instance_count: {cloud: target}}` and the run id the tick recorded.

**Demand** = live leases on our records (sealed thumbprints only) in the spaces of the access policy, and queued +
executing tasks there as the leading signal; `ceil(max(leases, tasks) / leases_per_worker)` workers, raised to the
floor (`min_size`, or an open time window's `min_size`; never 0 inside a window that declares deployments unless
`allow_zero_in_window`), capped at `max_size`. See `plugins/octopus/autoscale.py` for the rule.

* **Scale out** at once (instances still booting count as capacity): the tick records the new size and triggers a
  share run that builds, waits for and shares the new instances.
* **Scale in** one instance at a time, the one idle longest (no lease in any space for `idle_minutes`), not within
  `scale_in_cooldown_minutes` of a scale action nor `reversal_minutes` after a scale-out: the tick disables its
  records in every space (the drain), following ticks read its leases until two reads a tick apart find none,
  then the tick records the smaller size and that instance as the one leaving, and triggers a share run whose
  `drain_removed` deletes its records and whose Terraform removes exactly it. Demand that comes back during the
  drain re-enables it instead of building another.
* **Hold** on any failed read (429, 5xx, timeout), on stale data, while the share run the scaler triggered is
  queued or running, and while another run holds the deployment.
* **Access policy**: demand from spaces outside it never counts; a recorded space taken out of it has our copies
  disabled there and deleted once two reads a tick apart find no lease on them (never under a running step).

**Who owns the count.** Once the scaler has acted for a deployment, its Variable
`octopus_workers.<prefix>.<cloud>.scaler` holds the size it chose, and that size is the fleet's: every share run
(the daily one included) builds that many, and removes the instance the scaler drained when it shrinks. To hand
the count back to the share DAG's `instance_count` param, pause this DAG and delete that Variable.

Every step is idempotent: a tick killed between any two steps leaves an intent in that Variable which the next
tick finishes, never repeats. Each size change emits the Asset `octopus://<server>/shared-workers/<prefix>/size`
with the reason in its extra.

**Paused when created**: set the params (their defaults are what scheduled runs use), then unpause it.

**Params.** `clouds`, `name_prefix` (the deployment), `min_size`, `max_size`, `idle_minutes`,
`scale_in_cooldown_minutes`, `reversal_minutes`, `leases_per_worker`, `windows` (time windows, JSON: `[{"name":
"business hours", "days": ["mon-fri"], "start": "08:00", "end": "18:00", "tz": "Europe/Berlin", "min_size": 2}]`),
`allow_zero_in_window`, `warmup_minutes`, `allowed_spaces` (names, ids or globs; empty = all), `denied_spaces`
(deny wins), `share_conf` (further params of the share runs it triggers, e.g. `worker_pool_name`),
`stale_lease_minutes`, `dry_run` (observe and decide, change nothing).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import AssetAlias, Param, dag, get_current_context, task

from octopus import autoscale, settings
from octopus.dag_defaults import CONN_ID
from octopus.draining import DEFAULT_STALE_AFTER_SECONDS
from octopus.scaler_state import SCALER_DAG_ID, SHARE_DAG_ID, SIZE_ASSET_ALIAS
from octopus.sharing import DEFAULT_NAME_PREFIX, NAME_PREFIX_MAX, NAME_PREFIX_PATTERN, SUPPORTED_CLOUDS

SECTION_BUILD = "What to scale"
SECTION_SHARE = "Where demand counts"
SECTION_SCALE = "How to scale"

#: The rule's own defaults (octopus.autoscale.ScalePolicy): each knob's default is declared there once.
RULE = autoscale.ScalePolicy()

AUTOSCALE_PARAMS = {
    "clouds": Param(
        settings.default("clouds"),
        type="array",
        items={"type": "string", "enum": list(SUPPORTED_CLOUDS)},
        minItems=1,
        uniqueItems=True,
        examples=list(SUPPORTED_CLOUDS),
        title="Clouds",
        section=SECTION_BUILD,
        description="Clouds whose fleets to scale (each with the same name prefix: one deployment per cloud).",
    ),
    "name_prefix": Param(
        DEFAULT_NAME_PREFIX,
        type="string",
        pattern=NAME_PREFIX_PATTERN.pattern,
        maxLength=NAME_PREFIX_MAX,
        title="Name prefix",
        section=SECTION_BUILD,
        description="The deployment to scale: the name_prefix its share_octopus_workers runs use.",
    ),
    "min_size": Param(
        1,  # not the rule's 0: a scaler deployed without windows must not empty an idle fleet (every step would fail)
        type="integer",
        minimum=0,
        maximum=100,
        title="Minimum size",
        section=SECTION_SCALE,
        description=(
            "Least number of workers outside every time window (inside one, the window's min_size). 0 lets an "
            "idle fleet go empty, and an empty pool fails every step at once: only with windows covering deployments."
        ),
    ),
    "max_size": Param(
        RULE.max_size,
        type="integer",
        minimum=1,
        maximum=100,
        title="Maximum size",
        section=SECTION_SCALE,
        description="Most workers the scaler ever asks for.",
    ),
    "idle_minutes": Param(
        RULE.idle_minutes,
        type="number",
        minimum=0,
        title="Idle period (minutes)",
        section=SECTION_SCALE,
        description="How long the fleet must have been larger than demand needs before one worker is drained.",
    ),
    "scale_in_cooldown_minutes": Param(
        RULE.scale_in_cooldown_minutes,
        type="number",
        minimum=0,
        title="Scale-in cooldown (minutes)",
        section=SECTION_SCALE,
        description="No scale-in this soon after any scale action.",
    ),
    "reversal_minutes": Param(
        RULE.reversal_minutes,
        type="number",
        minimum=0,
        title="Reversal delay (minutes)",
        section=SECTION_SCALE,
        description="A scale-in right after a scale-out waits this long (at most 2 direction changes an hour).",
    ),
    "leases_per_worker": Param(
        RULE.leases_per_worker,
        type="integer",
        minimum=1,
        maximum=100,
        title="Leases per worker",
        section=SECTION_SCALE,
        description="Concurrent deployment steps one worker takes before another is wanted.",
    ),
    "windows": Param(
        [],
        type=["array", "null"],
        items={"type": "object"},
        title="Time windows",
        section=SECTION_SCALE,
        description=(
            'While a window is open the fleet keeps at least its min_size, e.g. [{"name": "business hours", '
            '"days": ["mon-fri"], "start": "08:00", "end": "18:00", "tz": "Europe/Berlin", "min_size": 2}]. '
            'A window with "deployments": false (nights) may go to 0.'
        ),
    ),
    "warmup_minutes": Param(
        RULE.warmup_minutes,
        type="number",
        minimum=0,
        title="Warm-up (minutes)",
        section=SECTION_SCALE,
        description="A window's floor is built this long before it opens.",
    ),
    "allow_zero_in_window": Param(
        RULE.allow_zero_in_window,
        type="boolean",
        title="Allow 0 workers inside a window",
        section=SECTION_SCALE,
        description="An empty pool fails every step at once: leave off unless no deployment can run then.",
    ),
    "allowed_spaces": Param(
        [],
        type=["array", "null"],
        items={"type": "string", "minLength": 1},
        title="Allowed spaces",
        section=SECTION_SHARE,
        description=(
            "Space names, ids or glob patterns whose demand counts. Empty: [octopus] allowed_spaces, else every space."
        ),
    ),
    "denied_spaces": Param(
        [],
        type=["array", "null"],
        items={"type": "string", "minLength": 1},
        title="Denied spaces",
        section=SECTION_SHARE,
        description=(
            "Spaces left out (deny wins; added to [octopus] denied_spaces): no demand counts, our copies there are "
            "drained and removed."
        ),
    ),
    "share_conf": Param(
        {},
        type=["object", "null"],
        title="Conf of the share runs",
        section=SECTION_SHARE,
        description=(
            "Further params of the share_octopus_workers runs the scaler triggers, e.g. "
            '{"worker_pool_name": "{cloud} Workers", "drain_timeout_minutes": 120}; clouds, name_prefix and '
            "instance_count are always the scaler's."
        ),
    ),
    "stale_lease_minutes": Param(
        DEFAULT_STALE_AFTER_SECONDS // 60,
        type="number",
        exclusiveMinimum=0,
        title="Stale lease after (minutes)",
        section=SECTION_SCALE,
        description="A lease whose task has completed and that is this old is stale: it holds no worker.",
    ),
    "dry_run": Param(
        False,
        type="boolean",
        title="Dry run",
        section=SECTION_BUILD,
        description="Observe and decide; change nothing (no Octopus write, no Variable, no share run).",
    ),
}


@dag(
    dag_id=SCALER_DAG_ID,
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    doc_md=__doc__,
    description="Size the shared Octopus worker fleets to what the spaces run (scale out at once, in after idle)",
    tags=["octopus", "workers", "autoscale"],
    params=AUTOSCALE_PARAMS,
    default_args={"owner": "platform", "retries": 0},
    is_paused_upon_creation=True,  # it changes production fleets: unpause it deliberately, its params set
)
def autoscale_octopus_workers():
    @task(outlets=[AssetAlias(SIZE_ASSET_ALIAS)], execution_timeout=timedelta(minutes=4))
    def tick() -> dict:
        """Lease, observe, decide, act, release: one line per cloud; the share runs to trigger."""
        from octopus import scaler

        return scaler.tick_task(get_current_context(), conn_id=CONN_ID)

    @task
    def share_runs(summary: dict) -> list[dict]:
        """The share runs this tick recorded: one ``{trigger_run_id, conf}`` per cloud that changes size."""
        return list(summary.get("triggers") or [])

    TriggerDagRunOperator.partial(
        task_id="trigger_share",
        trigger_dag_id=SHARE_DAG_ID,
        logical_date=None,
        skip_when_already_exists=True,  # a tick that resumes an interrupted trigger never starts a second run
        openlineage_inject_parent_info=False,
        map_index_template="{{ task.conf['clouds'][0] }}",
    ).expand_kwargs(share_runs(tick()))


autoscale_octopus_workers()
