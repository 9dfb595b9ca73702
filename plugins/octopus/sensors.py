"""Sensors of the worker DAGs: the deployment lease, and the wait for a fleet's registration."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from octopus import draining, ledger, settings
from octopus.sharing import (
    Fleet,
    SharingError,
    fleet_from,
    instances_before_from,
    instances_from,
    next_poll_interval,
    registered_before_from,
    registration_status,
)
from octopus.templating import as_bool, as_seconds
from octopus.triggers import OctopusWorkersRegisteredTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


#: The sensors' defaults, as declared in octopus.settings (a DAG passes its params' templates instead).
REGISTRATION_TIMEOUT_SECONDS: float = settings.seconds("registration_timeout_minutes")
POLL_INTERVAL_SECONDS: float = settings.default("poll_interval_seconds")
DRAIN_TIMEOUT_SECONDS: float = settings.seconds("drain_timeout_minutes")


class DeploymentLeaseSensor(BaseSensorOperator):
    """
    Take the lease of every deployment (``name_prefix``, cloud) a run writes for, waiting while another run holds it.

    Runs of ``share_octopus_workers`` and ``retire_octopus_workers`` — scheduled, manual or backfill — never
    overlap for one deployment: the later one waits here (reschedule mode: no worker slot held), and fails
    naming the run it met after ``timeout`` seconds. Different prefixes, or disjoint clouds, never wait.
    """

    ui_color = "#fdf1d6"

    def __init__(self, *, mode: str = "reschedule", **kwargs: Any) -> None:
        kwargs.setdefault("timeout", ledger.CLAIM_TIMEOUT_SECONDS)
        kwargs.setdefault("poke_interval", 15)
        super().__init__(mode=mode, **kwargs)
        self._met: str | None = None

    def poke(self, context: Context) -> bool:
        from octopus import tasks

        self._met = tasks.claim_deployments(context)
        if self._met:
            self.log.info("Waiting: %s", self._met)
            return False
        return True

    def execute(self, context: Context) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"Gave up after {self.timeout:.0f}s waiting for the deployment: {self._met}. Let that run finish "
                "(or mark it failed), then clear this run."
            ) from exc


class OctopusWorkersRegisteredSensor(BaseSensorOperator):
    """
    Wait until the fleet the cloud actually runs has registered in its initial space's pool; record it.

    The fleet is exactly Terraform's instance inventory (the module's ``instances`` output), never a name
    pattern: a record counts for an instance only under :func:`octopus.sharing.registration_status`'s rules
    (live polling record with the instance's exact name, re-registered when the instance was replaced, still
    its recorded thumbprint otherwise). Never more than ``instance_count``; ``instance_count`` 0 is an empty
    fleet, ready at once. Look-alike records are reported as suspicious and never shared.

    When done it records the fleet in the deployment's ledger (a new generation; every worker owned from now
    on) and pushes a :class:`octopus.sharing.Fleet`. On timeout it fails with a listing of what it saw.
    With ``deferrable`` true it pokes once, then hands the wait to :class:`OctopusWorkersRegisteredTrigger`.
    With ``dry_run`` true it does not wait, and records nothing.

    :param fleet_plan: one entry of ``get_spaces``.
    :param terraform_output: ``terraform_apply``'s XCom.
    :param registration_timeout: seconds (templated).
    :param poll_interval: seconds between reads (templated).
    :param deferrable: defer to the triggerer (templated; "true"/"false" accepted).
    :param dry_run: do not wait (templated).
    """

    template_fields: Sequence[str] = (
        "fleet_plan",
        "terraform_output",
        "registration_timeout",
        "poll_interval",
        "deferrable",
        "dry_run",
    )
    ui_color = "#d9ecf9"

    def __init__(
        self,
        *,
        fleet_plan: Mapping[str, Any],
        terraform_output: Any = None,
        octopus_conn_id: str = settings.default("conn_id"),
        registration_timeout: Any = REGISTRATION_TIMEOUT_SECONDS,
        poll_interval: Any = POLL_INTERVAL_SECONDS,
        deferrable: Any = False,
        dry_run: Any = False,
        mode: str = "reschedule",
        ledger_store: ledger.LedgerStore | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, **kwargs)
        self.ledger_store = ledger_store
        self.fleet_plan = fleet_plan
        self.terraform_output = terraform_output
        self.octopus_conn_id = octopus_conn_id
        self.registration_timeout = registration_timeout
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.dry_run = dry_run
        self._last_seen: dict[str, Any] | None = None
        self._doc: ledger.LedgerDoc | None = None

    # -- helpers
    @property
    def _expected(self) -> int:
        """``instance_count`` current instances, plus the outdated ones still running beside them (a rebuild without
        a gap: they stay registered and shared until the share DAG has drained and removed them)."""
        return int(self.fleet_plan["instance_count"]) + len(self._outdated())

    def _outdated(self) -> list[str]:
        result = self.terraform_output
        if isinstance(result, str) and result.strip().startswith("{"):
            import json

            result = json.loads(result)
        outputs = ((result or {}).get("outputs") or {}) if isinstance(result, Mapping) else {}
        return [str(n) for n in outputs.get("outdated_instances") or []]

    @property
    def _store(self) -> ledger.LedgerStore:
        return self.ledger_store or ledger.VariableStore()

    def _ledger(self) -> ledger.LedgerDoc:
        if self._doc is None:
            plan = self.fleet_plan
            self._doc = ledger.load(self._store, plan["prefix"], plan["cloud"])
        return self._doc

    def fleet_spec(self) -> dict[str, Any]:
        """What the wait compares a pool read against (JSON: it also travels to the trigger)."""
        instances = instances_from(self.terraform_output)
        if instances is None and not as_bool(self.dry_run):
            raise AirflowFailException(
                f"terraform_apply of {self.fleet_plan['cloud']} gave no 'instances' (or 'worker_names') output: "
                "the fleet's inventory is unknown, so no record can be proven to be ours. The module must output "
                "the instances it runs (see include/terraform/contract.json)."
            )
        return {
            "expected_count": self._expected,
            "name_prefix": self.fleet_plan["name_prefix"],
            "instances": instances,
            "previous": ledger.previous_fleet(self._ledger()),
            # What the initial pool held before this run's apply, read only when the ledger knows no fleet:
            # a record still carrying the same endpoint may be a replaced instance's (see registration_status).
            "registered_before": registered_before_from(self.terraform_output),
            "instances_before": instances_before_from(self.terraform_output),
            "owned": sorted(o["thumbprint"] for o in ledger.verified(self._ledger(), self._signer())["owned"]),
        }

    def _signer(self) -> ledger.Signer:
        from octopus.hooks import OctopusHook

        return OctopusHook(octopus_conn_id=self.octopus_conn_id).evidence_signer()

    def _check(self) -> dict[str, Any]:
        from octopus.hooks import OctopusHook

        initial = self.fleet_plan["initial_space"]
        hook = OctopusHook(octopus_conn_id=self.octopus_conn_id)
        records = hook.list_workers(initial["id"], worker_pool_id=initial["pool_id"])
        return registration_status(records, self.fleet_spec())

    def _fleet(self, context: Context, seen: Mapping[str, Any]) -> Fleet:
        """Record the registered fleet in the ledger (not in a dry run) and return what travels to the shares."""
        from octopus import tasks

        plan, initial = self.fleet_plan, self.fleet_plan["initial_space"]
        workers = [dict(w) for w in seen["workers"]]
        doc = self._ledger()
        dry_run = as_bool(self.dry_run)
        if dry_run and not workers:
            # Nothing was built (a plan only): show what sharing the last recorded fleet would do.
            workers = [dict(w) for w in (doc.get("fleet") or {}).get("workers", [])]
            seen = {**seen, "workers": workers}
        if not dry_run:
            try:
                doc = ledger.check_fence(
                    self._store, plan["prefix"], plan["cloud"], tasks.this_run(context), tasks.run_state
                )
            except (SharingError, ledger.LeaseError) as exc:
                raise AirflowFailException(str(exc)) from None
            doc = ledger.record_fleet(doc, workers, tasks.this_run(context), self._signer())
            doc = ledger.add_spaces(doc, [initial])
            ledger.save(self._store, doc)
            self._doc = doc
        for suspect in seen.get("suspicious", []):
            self.log.warning("Suspicious record, never shared: %s (%s)", suspect["name"], suspect["why"])
        return {
            "cloud": plan["cloud"],
            "prefix": plan["prefix"],
            "space_id": initial["id"],
            "space_name": initial["name"],
            "pool_id": initial["pool_id"],
            "pool_name": plan["pool_name"],
            "generation": int((doc.get("fleet") or {}).get("generation") or 0),
            "workers": [{**w, "leaving": True} if w["name"] in self._outdated() else w for w in fleet_from(seen)],
            "dry_run": dry_run,
        }

    # -- sensor protocol
    def poke(self, context: Context) -> PokeReturnValue:
        status = self._check()
        self._last_seen = status["seen"]
        self.log.info("%s", status["summary"])
        if as_bool(self.dry_run) or status["done"]:
            return PokeReturnValue(True, self._fleet(context, status["seen"]))
        return PokeReturnValue(False)

    def execute(self, context: Context) -> Any:
        self.timeout = as_seconds(self.registration_timeout, "registration_timeout")
        self.poke_interval = as_seconds(self.poll_interval, "poll_interval")
        if self.reschedule and not as_bool(self.deferrable):
            # The next poke after 1, 2, 4 … s of waiting, then every poll_interval (sharing.next_poll_interval).
            from airflow.sdk import timezone

            first = context["ti"].get_first_reschedule_date(context)
            waited = (timezone.utcnow() - first).total_seconds() if first else 0.0
            self.poke_interval = next_poll_interval(waited, self.poke_interval)
        if as_bool(self.deferrable) and not as_bool(self.dry_run):
            result = self.poke(context)
            if result.is_done:
                return result.xcom_value
            initial = self.fleet_plan["initial_space"]
            self.defer(
                trigger=OctopusWorkersRegisteredTrigger(
                    octopus_conn_id=self.octopus_conn_id,
                    space_id=initial["id"],
                    pool_id=initial["pool_id"],
                    fleet_spec=self.fleet_spec(),
                    poll_interval=self.poke_interval,
                    deadline=time.time() + self.timeout,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + 5 * self.poke_interval),
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(self._timeout_message(self._last_seen)) from exc

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: read the pool once more (this try's own read), or fail with what was seen."""
        if not event:
            raise AirflowException("wait_for_workers resumed without an event from its trigger")
        if event["status"] == "success":
            status = self._check()
            if status["done"]:
                return self._fleet(context, status["seen"])
            raise AirflowException(f"The fleet was complete in the triggerer but not any more:\n{status['summary']}")
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(self._timeout_message(event.get("seen")))
        raise AirflowException(f"Waiting for workers failed: {event.get('message')}")

    def _timeout_message(self, seen: Mapping[str, Any] | None) -> str:
        from octopus.sharing import describe_registration

        plan = self.fleet_plan
        what = describe_registration(seen, self._expected) if seen else "no successful read of the pool"
        return (
            f"Timed out after {self.timeout:.0f}s waiting for {self._expected} {plan['cloud']} workers to register in "
            f"pool {plan['pool_name']!r} of space {plan['initial_space']['name']!r}. Seen:\n{what}\n"
            "Check the VMs' bootstrap log (/var/log/octopus-configure-tentacle.log on cloud VMs), the key the VMs "
            "use, and registration_timeout_minutes."
        )


class OctopusWorkersDrainedSensor(BaseSensorOperator):
    """
    Wait until no deployment step holds any of the records being taken out of service, in any space.

    The records were disabled first (``disable_records``), so Octopus gives them no new step where it honours
    that. Each poke reads the leases of every space holding one (``workertaskleases``); the drain is done when
    two reads ``settle`` seconds apart both find no lease on them. A lease whose server task has completed and
    that is older than ``stale_after`` is stale: reported, not waited for. After ``drain_timeout`` seconds the
    task fails naming the steps that still hold a worker, which stays disabled and intact — unless ``force``.
    In a dry run it reads once and reports who holds what, without waiting.

    Pushes ``{"records", "waited_seconds", "workers", "stale", "held_by", "forced"}``: what the removal and the
    summary show; ``workers`` says, per worker, how long the drain waited for it and for which steps (kept across
    pokes in a Variable ``octopus_drain_log.<dag>.<run>.<task>.<map index>``, deleted when the drain ends). While it
    waits, the ``drain_label`` context variable says what it waits for (a mapped drain's ``map_index_template``
    shows it in the grid, e.g. ``aws: draining 2 (ServerTasks-12, …)``).

    :param records: the ``disable_records`` XComs (a list, or a list of lists from a mapped task).
    :param drain_timeout: seconds (templated).
    :param stale_after: seconds after which a lease whose task completed is stale (templated).
    :param force: remove even when the drain times out (templated; the steps on those workers then fail).
    """

    template_fields: Sequence[str] = ("records", "drain_timeout", "poll_interval", "stale_after", "force", "dry_run")
    ui_color = "#f6e3c7"

    def __init__(
        self,
        *,
        records: Any,
        octopus_conn_id: str = settings.default("conn_id"),
        drain_timeout: Any = DRAIN_TIMEOUT_SECONDS,
        poll_interval: Any = POLL_INTERVAL_SECONDS,
        stale_after: Any = draining.DEFAULT_STALE_AFTER_SECONDS,
        settle: float = draining.DEFAULT_SETTLE_SECONDS,
        force: Any = False,
        dry_run: Any = False,
        mode: str = "reschedule",
        drain_log_store: ledger.LedgerStore | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, **kwargs)
        self.drain_log_store = drain_log_store
        self.records = records
        self.octopus_conn_id = octopus_conn_id
        self.drain_timeout = drain_timeout
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.settle = settle
        self.force = force
        self.dry_run = dry_run
        self._last: list[dict[str, Any]] = []
        self._waited = 0.0
        self._drain_log: dict[str, Any] | None = None
        self._context: Any = None
        self._label_waited = 0.0

    # -- what the drain waited for (kept across pokes) and the grid's label
    what = "leaving"

    def _cloud(self, records: list[dict[str, Any]]) -> str:
        return str(records[0].get("cloud") or "") if records else ""

    def _log_key(self) -> str | None:
        ti = (self._context or {}).get("ti") if isinstance(self._context, Mapping) else None
        try:
            return f"octopus_drain_log.{ti.dag_id}.{ti.run_id}.{ti.task_id}.{ti.map_index}"
        except AttributeError:
            return None

    def _log_store(self) -> ledger.LedgerStore:
        return self.drain_log_store or ledger.VariableStore()

    def _note(self, holds: list[dict[str, Any]]) -> None:
        from airflow.sdk import timezone

        from octopus import draining

        key = self._log_key()
        if self._drain_log is None and key:
            self._drain_log = dict(self._log_store().load(key) or {})
        before = self._drain_log
        names = [r.get("name") or r["id"] for r in self._records()]
        self._drain_log = draining.note_holds(before, holds, timezone.utcnow(), names)
        if key and (any(not h["stale"] for h in holds) or (before or {}).get("workers") != self._drain_log["workers"]):
            self._log_store().save(key, self._drain_log)

    def _end_log(self) -> None:
        key = self._log_key()
        if key and self._drain_log is not None:
            self._log_store().delete(key)

    def _label(self, state: str, records: list[dict[str, Any]], holds: list[dict[str, Any]] = ()) -> None:
        from octopus import draining

        if not isinstance(self._context, dict):
            return
        cloud = self._cloud(records)
        if not cloud:
            return
        count = len({r.get("thumbprint") or r.get("name") for r in records})
        tasks = sorted({h["task"] for h in holds if not h["stale"]})
        waited = self._label_waited if state in ("forced", "timeout") else self._waited
        self._context["drain_label"] = draining.drain_label(
            cloud, self.what, state, count=count, tasks=tasks, waited=waited
        )

    def _records(self) -> list[dict[str, Any]]:
        flat: list[dict[str, Any]] = []
        for item in self.records or []:
            if isinstance(item, Mapping):
                flat.append(dict(item))
            elif item:
                flat.extend(dict(r) for r in item)
        return flat

    def _read(self, hook: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from airflow.sdk import timezone

        from octopus import draining
        from octopus.exceptions import OctopusNotFoundError

        leases = {}
        for space_id in sorted({r["space_id"] for r in records}):
            try:
                leases[space_id] = hook.list_worker_task_leases(space_id)
            except OctopusNotFoundError:
                leases[space_id] = []  # the space is gone, and every lease with it
        held = draining.holds(leases, records)
        tasks: dict[str, Any] = {}
        for item in held:
            task_id = item["lease"].get("ServerTaskId") or ""
            if task_id and task_id not in tasks:
                try:
                    tasks[task_id] = hook.get_task(item["record"]["space_id"], task_id)
                except OctopusNotFoundError:
                    tasks[task_id] = {}
        return list(
            draining.classify(
                held, tasks, now=timezone.utcnow(), stale_after=as_seconds(self.stale_after, "stale_after")
            )
        )

    def poke(self, context: Context) -> PokeReturnValue:
        from octopus import draining
        from octopus.hooks import OctopusHook

        self._context = context
        hook = OctopusHook(octopus_conn_id=self.octopus_conn_id)
        records = self._prepare(context, hook)
        if not records:
            self._label("nothing", records)
            return PokeReturnValue(True, self._result(records, []))
        spaces = {r["space_id"]: r["space_name"] for r in records}
        first = self._read(hook, records)
        if not as_bool(self.dry_run):
            self._note(first)
        if as_bool(self.dry_run):
            self.log.info(
                "Dry run: %d records would be drained; now held: %s",
                len(records),
                draining.describe_holds(first, spaces) or "none",
            )
            return PokeReturnValue(True, self._result(records, first))
        if draining.drain_verdict(first, None) == "busy":
            self._last = first
            self._label("busy", records, first)
            self.log.info("Draining %d records, still held: %s", len(records), draining.describe_holds(first, spaces))
            return PokeReturnValue(False)
        time.sleep(self.settle)  # the second read, a poll apart: a step that took a worker meanwhile shows up
        second = self._read(hook, records)
        self._note(second)
        if draining.drain_verdict(first, second) != "drained":
            self._last = second
            self._label("busy", records, second)
            self.log.info("A step took a drained worker meanwhile: %s", draining.describe_holds(second, spaces))
            return PokeReturnValue(False)
        stale = [h for h in second if h["stale"]]
        if stale:
            self.log.warning("Stale leases, not waited for: %s", draining.describe_holds(stale, spaces))
        self.log.info(
            "Drained: %d records, no step holds any of them (two reads %.0fs apart)", len(records), self.settle
        )
        if not self._on_drained(hook, records, second):
            self._label("busy", records, second)
            return PokeReturnValue(False)
        self._label("drained", records, second)
        return PokeReturnValue(True, self._result(records, second))

    def _prepare(self, context: Context, hook: Any) -> list[dict[str, Any]]:
        """The records to drain (here: as the upstream ``disable_records`` left them)."""
        return self._records()

    def _on_drained(self, hook: Any, records: list[dict[str, Any]], holds: list[dict[str, Any]]) -> bool:
        """What to do once drained (here: nothing; the retire's own tasks delete). False: not done yet."""
        return True

    def _on_forced(self, records: list[dict[str, Any]]) -> None:
        """What to do when ``force`` removes workers still held (here: nothing; the retire's own tasks delete)."""

    def _result(self, records: list[dict[str, Any]], holds: list[dict[str, Any]], *, forced: bool = False) -> dict:
        from airflow.sdk import timezone

        from octopus import draining

        names = [r.get("name") or r["id"] for r in records]
        workers = draining.waited_per_worker(self._drain_log, names, timezone.utcnow())
        self._end_log()
        return {
            "records": records,
            "waited_seconds": round(self._waited, 1),
            "workers": workers,
            "stale": [h for h in holds if h["stale"]],
            "held_by": [h for h in holds if not h["stale"]],
            "forced": forced,
        }

    def execute(self, context: Context) -> Any:
        from airflow.sdk import timezone

        from octopus import draining

        self.timeout = as_seconds(self.drain_timeout, "drain_timeout")
        self.poke_interval = as_seconds(self.poll_interval, "poll_interval")
        first = context["ti"].get_first_reschedule_date(context) if self.reschedule else None
        self._waited = (timezone.utcnow() - first).total_seconds() if first else 0.0
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            records = self._records()
            spaces = {r["space_id"]: r["space_name"] for r in records}
            holding = draining.describe_holds(self._last, spaces) or "unknown (no read succeeded)"
            self._waited = max(self._waited, self.timeout)
            self._label_waited = self.timeout  # the label names the limit that ran out, not the poke's timing
            if as_bool(self.force):
                self.log.warning("FORCED after %.0fs: removing workers still held by %s", self.timeout, holding)
                self._on_forced(records)
                self._label("forced", records, self._last)
                return self._result(records, self._last, forced=True)
            self._label("timeout", records, self._last)
            self._end_log()
            raise AirflowSensorTimeout(
                f"Drain timed out after {self.timeout:.0f}s: still held by {holding}. Those workers stay disabled "
                "and intact (no record deleted, no instance removed). Clear this task to wait again once the steps "
                "end, or trigger with force_drain to remove them anyway (the steps on them will then fail)."
            ) from None


class OctopusRemovedInstancesDrainedSensor(OctopusWorkersDrainedSensor):
    """
    Before Terraform removes instances: drain them, then delete their records.

    Which instances: with ``terraform_output`` unset, ``fleet_plan["remove"]`` (``[{"name", "thumbprint"}]``,
    chosen by ``get_spaces`` when ``instance_count`` is lower: the package picks who leaves, never the cloud); with
    ``terraform_output`` (``terraform_apply``'s XCom), the instances its module reports as *outdated* (built from an
    older configuration: a rebuild without a gap, after ``share_to_space`` has shared the current ones). Either way
    only instances of the last sealed fleet, with sealed thumbprints, are drained. Each poke, under the deployment's
    lease, disables every record carrying one of their thumbprints in every space the deployment wrote to, then
    waits as :class:`OctopusWorkersDrainedSensor` does; once drained it deletes those records, and a
    ``TerraformFleetOperator`` removes exactly those instances (``remove_instances``: the ``instances`` of this
    task's XCom). With nothing to remove it returns at once, without an Octopus request.
    """

    template_fields: Sequence[str] = (*OctopusWorkersDrainedSensor.template_fields, "fleet_plan", "terraform_output")

    def __init__(
        self,
        *,
        fleet_plan: Mapping[str, Any],
        terraform_output: Any = None,
        ledger_store: ledger.LedgerStore | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("records", [])
        kwargs.setdefault("drain_log_store", ledger_store)
        super().__init__(**kwargs)
        self.fleet_plan = fleet_plan
        self.terraform_output = terraform_output
        self.ledger_store = ledger_store
        self._prepared: list[dict[str, Any]] | None = None
        self._leaving: list[dict[str, str]] = []

    @property
    def what(self) -> str:  # type: ignore[override]
        return "leaving" if self.terraform_output is None else "outdated"

    def _cloud(self, records: list[dict[str, Any]]) -> str:
        return str(self.fleet_plan["cloud"])

    def _records(self) -> list[dict[str, Any]]:
        return list(self._prepared) if self._prepared is not None else super()._records()

    def _outdated_names(self) -> list[str]:
        result = self.terraform_output
        if isinstance(result, str):  # terraform_apply's XCom: a dict (or, from older runs, its JSON line)
            import json

            result = json.loads(result)
        outputs = (result or {}).get("outputs") or {} if isinstance(result, Mapping) else {}
        return sorted({str(n) for n in outputs.get("outdated_instances") or []})

    def _leaving_from(self, doc: Mapping[str, Any], signer: ledger.Signer) -> list[dict[str, str]]:
        """The outdated instances that are in the last sealed fleet (nothing else is ever removed this way)."""
        names = set(self._outdated_names())
        fleet = ledger.verified(doc, signer)["fleet"] if doc.get("fleet") else None
        sealed = {str(w["name"]): w for w in (fleet or {}).get("workers") or []}
        unknown = sorted(names - set(sealed))
        if unknown:
            self.log.warning(
                "Outdated per Terraform but not in the deployment's last sealed fleet, so never drained or removed "
                "by this run: %s",
                ", ".join(unknown),
            )
        return [{"name": n, "thumbprint": str(sealed[n]["thumbprint"]).upper()} for n in sorted(names & set(sealed))]

    def _prepare(self, context: Context, hook: Any) -> list[dict[str, Any]]:
        from octopus import operations, tasks

        self._leaving = []
        self._prepared = []
        if self.terraform_output is None:
            leaving = list(self.fleet_plan.get("remove") or [])
        elif not self._outdated_names():
            leaving = []
        else:
            leaving = None  # from the ledger, below
        if leaving == []:
            return []
        plan, store = self.fleet_plan, self.ledger_store or ledger.VariableStore()
        if as_bool(self.dry_run):
            doc = ledger.load(store, plan["prefix"], plan["cloud"])
        else:
            try:
                doc = ledger.check_fence(store, plan["prefix"], plan["cloud"], tasks.this_run(context), tasks.run_state)
            except (SharingError, ledger.LeaseError) as exc:
                raise AirflowFailException(str(exc)) from None
        signer = hook.evidence_signer()
        if leaving is None:
            leaving = self._leaving_from(doc, signer)
            if not leaving:
                return []
        owned = {o["thumbprint"] for o in ledger.verified(doc, signer)["owned"]}
        thumbprints = {str(r["thumbprint"]).upper() for r in leaving} & owned
        self._leaving = [dict(r) for r in leaving if str(r["thumbprint"]).upper() in thumbprints]
        spaces = {plan["initial_space"]["id"]: {"name": plan["initial_space"]["name"]}, **(doc.get("spaces") or {})}
        records: list[dict[str, Any]] = []
        for space_id, entry in sorted(spaces.items()):
            space = {"id": space_id, "name": entry.get("name") or space_id, "pools": {plan["cloud"]: {}}}
            fleet = {"cloud": plan["cloud"], "owned": [{"thumbprint": t} for t in thumbprints]}
            records += operations.disable_space(hook, space, [fleet], dry_run=as_bool(self.dry_run))
        self.log.info(
            "Removing %s%s: %d of their records disabled in %d spaces",
            ", ".join(r["name"] for r in self._leaving),
            " (outdated)" if self.terraform_output is not None else "",
            len(records),
            len(spaces),
        )
        self._prepared = records
        return records

    def _result(self, records: list[dict[str, Any]], holds: list[dict[str, Any]], *, forced: bool = False) -> dict:
        result = super()._result(records, holds, forced=forced)
        # The instances the next Terraform apply removes by name: drained (or forced), their records deleted.
        result["instances"] = sorted(r["name"] for r in self._leaving)
        result["cloud"] = self.fleet_plan["cloud"]
        result["kind"] = self.what
        return result

    def _on_forced(self, records: list[dict[str, Any]]) -> None:
        from octopus.exceptions import OctopusError
        from octopus.hooks import OctopusHook

        hook = OctopusHook(octopus_conn_id=self.octopus_conn_id)
        for record in records:
            try:
                hook.delete_worker(record["space_id"], record["id"], missing_ok=True)
            except OctopusError as exc:
                self.log.warning("%s: not deleted (%s); its instance is removed anyway (force)", record["name"], exc)

    def _on_drained(self, hook: Any, records: list[dict[str, Any]], holds: list[dict[str, Any]]) -> bool:
        from octopus.exceptions import OctopusNotFoundError, OctopusValidationError

        stale = {(h["space_id"], h["worker_id"]) for h in holds if h["stale"]}
        for record in records:
            try:
                hook.delete_worker(record["space_id"], record["id"], missing_ok=True)
            except OctopusValidationError as exc:
                if (record["space_id"], record["id"]) in stale:
                    self.log.warning("%s: a stale lease keeps it (%s); left disabled", record["name"], exc)
                    continue
                self.log.info("%s: a step took it meanwhile (%s): draining again", record["name"], exc)
                return False
            except OctopusNotFoundError:
                pass
        return True
