"""``BashOperator`` that runs one cloud's fleet module through ``include/terraform-fleet.sh``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.bash import BashOperator

from octopus.templating import as_bool

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Clouds whose instances run on this machine and so get the API key through Terraform's environment.
#: Real clouds never do: their VMs read a scoped key from the cloud's secret store.
CLOUDS_WITH_KEY_IN_ENV = frozenset({"local"})


def include_dir() -> Path:
    """The package's ``include/`` folder (override with ``OCTOPUS_WORKERS_INCLUDE_DIR``)."""
    configured = os.environ.get("OCTOPUS_WORKERS_INCLUDE_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "include"


def terraform_env(fleet_plan: Mapping[str, Any], action: str) -> dict[str, str]:
    """The environment for ``terraform-fleet.sh``: the shared Terraform input contract as ``TF_VAR_*``.

    Holds no secret, so it may appear in rendered fields.
    """
    cloud = fleet_plan["cloud"]
    env = {
        "CLOUD": cloud,
        "TF_ACTION": action,
        "OCTOPUS_WORKERS_INCLUDE_DIR": str(include_dir()),
        "OCTOPUS_PYTHON": sys.executable,
        "TF_VAR_octopus_server_url": fleet_plan["server_url"],
        "TF_VAR_octopus_space_name": fleet_plan["initial_space"]["name"],
        "TF_VAR_worker_pool_name": fleet_plan["pool_name"],
        "TF_VAR_instance_count": str(int(fleet_plan["instance_count"])),
        "TF_VAR_machine_policy_name": fleet_plan.get("machine_policy_name") or "Default Machine Policy",
        "TF_VAR_name_prefix": fleet_plan["name_prefix"],
    }
    if cloud == "local":
        # The simulated VMs run this interpreter, importing octopus_emulator from this package's root.
        env["TF_VAR_python_executable"] = sys.executable
        inherited = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(include_dir().parent), inherited]))
    return env


class TerraformFleetOperator(BashOperator):
    """
    Apply (or, with ``dry_run``, plan) one cloud's fleet; ``destroy=True`` tears it down instead.

    Inputs go through ``TF_VAR_*`` environment variables built from the fleet plan; the API key is added to the
    environment only for clouds in :data:`CLOUDS_WITH_KEY_IN_ENV`, at execution time, so it is in no rendered
    field, XCom or command line. The XCom is ``terraform-fleet.sh``'s last line: the module's non-sensitive
    outputs as JSON.

    :param fleet_plan: one entry of ``get_spaces``.
    :param destroy: run ``destroy`` instead of ``apply``.
    :param dry_run: plan only (templated).
    :param octopus_conn_id: connection whose password is the API key (only used for local clouds).
    """

    template_fields: Sequence[str] = (*BashOperator.template_fields, "fleet_plan", "dry_run")

    def __init__(
        self,
        *,
        fleet_plan: Mapping[str, Any],
        destroy: bool = False,
        dry_run: Any = False,
        octopus_conn_id: str = "octopus_default",
        **kwargs: Any,
    ) -> None:
        script = include_dir() / "terraform-fleet.sh"
        # The trailing space keeps BashOperator from treating the ``.sh`` path as a Jinja template file.
        kwargs.setdefault("bash_command", f"bash {script} ")
        kwargs.setdefault("append_env", True)
        super().__init__(**kwargs)
        self.fleet_plan = fleet_plan
        self.destroy = destroy
        self.dry_run = dry_run
        self.octopus_conn_id = octopus_conn_id

    @property
    def action(self) -> str:
        dry = as_bool(self.dry_run)
        if self.destroy:
            return "plan-destroy" if dry else "destroy"
        return "plan" if dry else "apply"

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.env = {**(self.env or {}), **terraform_env(self.fleet_plan, self.action)}

    def execute(self, context: Context) -> Any:
        # Also here, not only at render time: a mapped operator is rendered on an unmapped copy.
        self.env = {**(self.env or {}), **terraform_env(self.fleet_plan, self.action)}
        if self.fleet_plan["cloud"] in CLOUDS_WITH_KEY_IN_ENV:
            from airflow.sdk import BaseHook

            password = BaseHook.get_connection(self.octopus_conn_id).password
            if not password:
                raise ValueError(f"Connection {self.octopus_conn_id!r} has no password (the Octopus API key)")
            self.env = {**(self.env or {}), "OCTOPUS_API_KEY": password}
        try:
            return super().execute(context)
        finally:
            if self.env:
                self.env.pop("OCTOPUS_API_KEY", None)
