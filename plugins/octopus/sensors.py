"""Sensor that waits until a fleet's workers have registered themselves into the initial space's pool."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from octopus.sharing import describe_registration
from octopus.templating import as_bool, as_seconds
from octopus.triggers import OctopusWorkersRegisteredTrigger, check_registration

if TYPE_CHECKING:
    from airflow.sdk import Context


def expected_names_from(terraform_output: Any) -> list[str]:
    """Worker names Terraform knows (``worker_names`` output), from ``terraform_apply``'s XCom."""
    if not terraform_output:
        return []
    data = json.loads(terraform_output) if isinstance(terraform_output, str) else terraform_output
    return list((data.get("outputs") or {}).get("worker_names") or [])


class OctopusWorkersRegisteredSensor(BaseSensorOperator):
    """
    Wait until ``instance_count`` workers of a fleet are registered in its initial space's pool.

    Reads every page of the pool's members and counts distinct thumbprints of polling workers named like the
    fleet that are not ``Unavailable`` (stale records of an earlier fleet never satisfy it). Pushes the fleet
    (name, thumbprint, endpoint URI of each worker) to XCom. On timeout it fails with a listing of what it saw.

    With ``deferrable`` true it pokes once, then hands the wait to :class:`OctopusWorkersRegisteredTrigger`.
    With ``dry_run`` true it does not wait: it reports the fleet as registered right now.

    :param fleet_plan: one entry of ``get_spaces`` (cloud, instance_count, name_prefix, initial_space, ...).
    :param terraform_output: ``terraform_apply``'s XCom (JSON); its ``worker_names`` output, when not empty,
        names the expected workers exactly.
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
        octopus_conn_id: str = "octopus_default",
        registration_timeout: Any = 20 * 60,
        poll_interval: Any = 30,
        deferrable: Any = False,
        dry_run: Any = False,
        mode: str = "reschedule",
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, **kwargs)
        self.fleet_plan = fleet_plan
        self.terraform_output = terraform_output
        self.octopus_conn_id = octopus_conn_id
        self.registration_timeout = registration_timeout
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.dry_run = dry_run
        self._last_seen: dict[str, Any] | None = None

    # -- helpers
    @property
    def _expected(self) -> int:
        return int(self.fleet_plan["instance_count"])

    def _check(self) -> dict[str, Any]:
        initial = self.fleet_plan["initial_space"]
        return check_registration(
            self.octopus_conn_id,
            initial["id"],
            initial["pool_id"],
            self.fleet_plan["name_prefix"],
            expected_names_from(self.terraform_output),
        )

    def _fleet(self, seen: Mapping[str, Any]) -> dict[str, Any]:
        initial = self.fleet_plan["initial_space"]
        workers = list(seen["workers"])
        if len(workers) > self._expected:
            self.log.warning(
                "%d live workers named like the fleet, %d expected: all are shared; stale ones are pruned once "
                "their tentacles are gone",
                len(workers),
                self._expected,
            )
        return {
            "cloud": self.fleet_plan["cloud"],
            "space_id": initial["id"],
            "space_name": initial["name"],
            "pool_id": initial["pool_id"],
            "pool_name": self.fleet_plan["pool_name"],
            "workers": workers,
            # The initial pool as this read saw it: share_to_space prunes it without reading it again.
            "pool_records": list(seen.get("records", [])),
        }

    # -- sensor protocol
    def poke(self, context: Context) -> PokeReturnValue:
        seen = self._last_seen = self._check()
        self.log.info("%s", describe_registration(seen, self._expected))
        if as_bool(self.dry_run):
            return PokeReturnValue(True, {**self._fleet(seen), "dry_run": True})
        return PokeReturnValue(len(seen["workers"]) >= self._expected, self._fleet(seen))

    def execute(self, context: Context) -> Any:
        self.timeout = as_seconds(self.registration_timeout, "registration_timeout")
        self.poke_interval = as_seconds(self.poll_interval, "poll_interval")
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
                    expected_count=self._expected,
                    name_prefix=self.fleet_plan["name_prefix"],
                    expected_names=expected_names_from(self.terraform_output),
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
        """Resume after the trigger fired: return the fleet, or fail with what was seen."""
        if not event:
            raise AirflowException("wait_for_workers resumed without an event from its trigger")
        if event["status"] == "success":
            return self._fleet(event["seen"])
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(self._timeout_message(event["seen"]))
        raise AirflowException(f"Waiting for workers failed: {event.get('message')}")

    def _timeout_message(self, seen: Mapping[str, Any] | None) -> str:
        plan = self.fleet_plan
        what = describe_registration(seen, self._expected) if seen else "no successful read of the pool"
        return (
            f"Timed out after {self.timeout:.0f}s waiting for {self._expected} {plan['cloud']} workers to register in "
            f"pool {plan['pool_name']!r} of space {plan['initial_space']['name']!r}. Seen:\n{what}\n"
            "Check the VMs' bootstrap log (/var/log/octopus-configure-tentacle.log on cloud VMs), the key the VMs "
            "use, and registration_timeout_minutes."
        )
