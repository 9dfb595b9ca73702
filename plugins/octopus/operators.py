"""``BashOperator`` that runs one cloud's fleet module through ``include/terraform-fleet.sh``."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import context_to_airflow_vars
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from octopus import settings
from octopus.templating import as_bool

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Clouds whose instances run on this machine and so get the API key through Terraform's environment.
#: Real clouds never do: their VMs read a scoped key from the cloud's secret store.
CLOUDS_WITH_KEY_IN_ENV = frozenset({"local"})

#: Variables of the worker's environment that Terraform and its providers may see, whatever the cloud.
PASSTHROUGH_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "TMP",
        "TEMP",
        "LANG",
        "LANGUAGE",
        "TZ",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    }
)
#: Prefixes passed for every cloud: locale, Terraform's own settings and inputs, this package's runner settings.
PASSTHROUGH_PREFIXES = ("LC_", "TF_", "OCTOPUS_TF_", "OCTOPUS_WORKERS_")
#: The cloud's own credential and SDK settings (also used for a state backend on that cloud).
CLOUD_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "aws": ("AWS_",),
    "azure": ("ARM_", "AZURE_", "MSI_", "IDENTITY_"),
    "gcp": ("GOOGLE_", "CLOUDSDK_", "GCE_METADATA_"),
    "local": (),
}
#: Settings of a state backend, by backend type (``OCTOPUS_TF_BACKEND_<CLOUD>``).
BACKEND_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "s3": CLOUD_PREFIXES["aws"],
    "azurerm": CLOUD_PREFIXES["azure"],
    "gcs": CLOUD_PREFIXES["gcp"],
    "pg": ("PG",),  # PG_CONN_STR, PG_SCHEMA_NAME and libpq's PGUSER, PGPASSWORD, PGSSLMODE, ...
    "consul": ("CONSUL_",),
    "kubernetes": ("KUBE_",),
}
#: Never passed on, whatever matched above: Airflow's connections, variables and settings, and the API key
#: (the local cloud gets the key from the connection, not from the worker's environment).
#: The runner chooses the workspace and data dir itself.
BLOCKED_PREFIXES = ("AIRFLOW", "_AIRFLOW")
BLOCKED_NAMES = frozenset({"OCTOPUS_API_KEY", "TF_WORKSPACE", "TF_DATA_DIR"})

#: Executors whose tasks all run on one machine: local state is safe there.
SINGLE_MACHINE_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})
#: Opt-out of the multi-worker check when ``OCTOPUS_WORKERS_STATE_DIR`` is a disk every worker mounts.
SHARED_STATE_DIR_VAR = "OCTOPUS_WORKERS_SHARED_STATE_DIR"

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def include_dir() -> Path:
    """The package's ``include/`` folder (override with ``OCTOPUS_WORKERS_INCLUDE_DIR``)."""
    configured = os.environ.get("OCTOPUS_WORKERS_INCLUDE_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "include"


def deployment_prefix(fleet_plan: Mapping[str, Any]) -> str:
    """The deployment's ``name_prefix`` param: ``prefix``, else ``name_prefix`` without its ``-<cloud>``."""
    cloud = fleet_plan["cloud"]
    prefix = fleet_plan.get("prefix") or str(fleet_plan["name_prefix"]).removesuffix(f"-{cloud}")
    if not _PREFIX_RE.match(prefix):
        raise AirflowFailException(
            f"deployment prefix {prefix!r} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit (it names the Terraform state folder and workspace)"
        )
    return prefix


def backend_of(cloud: str, environ: Mapping[str, str] | None = None) -> str:
    """The Terraform backend type for ``cloud``: ``OCTOPUS_TF_BACKEND_<CLOUD>``, default ``local``."""
    environ = os.environ if environ is None else environ
    return environ.get(f"OCTOPUS_TF_BACKEND_{cloud.upper()}") or "local"


def terraform_env(fleet_plan: Mapping[str, Any], action: str) -> dict[str, str]:
    """The environment for ``terraform-fleet.sh``: the shared Terraform input contract as ``TF_VAR_*``.

    Holds no secret, so it may appear in rendered fields.
    """
    cloud = fleet_plan["cloud"]
    env = {
        "CLOUD": cloud,
        "TF_ACTION": action,
        "DEPLOYMENT_PREFIX": deployment_prefix(fleet_plan),
        "OCTOPUS_WORKERS_INCLUDE_DIR": str(include_dir()),
        "OCTOPUS_PYTHON": sys.executable,
        "TF_VAR_octopus_server_url": fleet_plan["server_url"],
        "TF_VAR_octopus_space_name": fleet_plan["initial_space"]["name"],
        "TF_VAR_worker_pool_name": fleet_plan["pool_name"],
        "TF_VAR_instance_count": str(int(fleet_plan["instance_count"])),
        "TF_VAR_machine_policy_name": "Default Machine Policy",
        "TF_VAR_name_prefix": fleet_plan["name_prefix"],
        # The instances the package removes in this run (drained first), by worker name; always set, so a stray
        # TF_VAR_remove_instances in the worker's environment can never name one (include/terraform/README.md).
        "TF_VAR_remove_instances": json.dumps([str(n) for n in fleet_plan.get("remove_instances") or []]),
    }
    if cloud == "local":
        # The simulated VMs run this interpreter, importing octopus_emulator from this package's root.
        env["TF_VAR_python_executable"] = sys.executable
        inherited = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(include_dir().parent), inherited]))
    return env


def filtered_environ(cloud: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What Terraform may inherit from the worker's environment for ``cloud`` (see the module constants).

    ``OCTOPUS_WORKERS_TF_ENV_PASSTHROUGH`` (comma-separated names, or prefixes ending in ``*``) adds more,
    never a blocked one.
    """
    environ = os.environ if environ is None else environ
    prefixes = (
        PASSTHROUGH_PREFIXES + CLOUD_PREFIXES.get(cloud, ()) + BACKEND_PREFIXES.get(backend_of(cloud, environ), ())
    )
    extra_names: set[str] = set()
    for item in filter(None, (s.strip() for s in environ.get("OCTOPUS_WORKERS_TF_ENV_PASSTHROUGH", "").split(","))):
        if item.endswith("*"):
            prefixes += (item[:-1],)
        else:
            extra_names.add(item)
    return {
        name: value
        for name, value in environ.items()
        if (name in PASSTHROUGH_NAMES or name in extra_names or name.startswith(prefixes))
        and name not in BLOCKED_NAMES
        and not name.startswith(BLOCKED_PREFIXES)
    }


def configured_executors() -> list[str]:
    """Class names of ``[core] executor`` (a comma-separated list of names, module paths or ``path:alias``)."""
    from airflow.configuration import conf

    names = []
    for entry in (conf.get("core", "executor", fallback="") or "").split(","):
        entry = entry.strip()
        if entry:
            names.append(entry.split(":", 1)[0].rsplit(".", 1)[-1])
    return names


def _runs_in_process() -> bool:
    """True under ``dag.test()`` without an executor: the task runs in the test's own process."""
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms
    except ImportError:  # pragma: no cover - another Airflow layout
        return False
    return isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), InProcessSupervisorComms)


def check_state_is_shared(cloud: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse local state when tasks can run on several machines (a retry elsewhere would build a second fleet)."""
    environ = os.environ if environ is None else environ
    if backend_of(cloud, environ) != "local" or as_bool(environ.get(SHARED_STATE_DIR_VAR, "false")):
        return
    executors = configured_executors()
    if not executors or set(executors) <= SINGLE_MACHINE_EXECUTORS or _runs_in_process():
        return
    upper = cloud.upper()
    raise AirflowFailException(
        f"Terraform state for cloud {cloud!r} is local (on this worker's disk) but the executor "
        f"({', '.join(executors)}) can run tasks on other machines: a retry or the next run there would find no "
        f"state and build a second fleet. Set OCTOPUS_TF_BACKEND_{upper} (e.g. s3, azurerm, gcs, pg) and "
        f"OCTOPUS_TF_BACKEND_CONFIG_{upper} (a -backend-config file) on every worker, or, if "
        f"OCTOPUS_WORKERS_STATE_DIR is a disk every worker shares, set {SHARED_STATE_DIR_VAR}=true."
    )


def parse_result(output: str) -> dict[str, Any]:
    """``terraform-fleet.sh``'s last line as a dict: ``{"cloud", "action", "changes", "outputs"}``."""
    try:
        result = json.loads(output)
    except (TypeError, ValueError):
        raise AirflowException(
            f"terraform-fleet.sh did not end with its JSON result line; last line: {output!r}"
        ) from None
    if not isinstance(result, dict) or not {"cloud", "action", "changes", "outputs"} <= result.keys():
        raise AirflowException(f"terraform-fleet.sh's result line lacks cloud/action/changes/outputs: {output!r}")
    return result


class TerraformFleetOperator(BashOperator):
    """
    Apply (or, with ``dry_run``, plan) one cloud's fleet; ``destroy=True`` tears it down instead.

    A deployment is (``prefix``, cloud): its Terraform state is keyed by both (see ``terraform-fleet.sh``).
    Inputs go through ``TF_VAR_*`` environment variables built from the fleet plan. The child environment is
    built in :meth:`get_env` from an allow-list of the worker's environment (see :func:`filtered_environ`): no
    Airflow connection, variable or setting ever reaches Terraform, and the API key is added only for clouds in
    :data:`CLOUDS_WITH_KEY_IN_ENV`, at execution time, so it is in no rendered field, XCom or command line.
    With local state on a multi-machine executor the task fails before ``init`` (:func:`check_state_is_shared`).
    The XCom is a dict: ``{"cloud", "action", "changes", "outputs"}`` (the module's non-sensitive outputs).

    :param fleet_plan: one entry of ``get_spaces``.
    :param remove_instances: the instances this apply removes by name, instead of ``fleet_plan["remove_instances"]``
        (templated): a list of worker names, or the XCom of an
        :class:`~octopus.sensors.OctopusRemovedInstancesDrainedSensor` (its ``instances``, drained and their records
        deleted). Given and empty, the task is skipped without running
        Terraform: nothing to remove (e.g. ``remove_outdated`` when no instance is outdated).
    :param destroy: run ``destroy`` instead of ``apply``.
    :param dry_run: plan only (templated).
    :param octopus_conn_id: connection whose password is the API key (only used for local clouds).
    :param ledger_store: where the deployment's ledger and lease live (default: Airflow Variables).
    """

    template_fields: Sequence[str] = (*BashOperator.template_fields, "fleet_plan", "dry_run", "remove_instances")

    def __init__(
        self,
        *,
        fleet_plan: Mapping[str, Any],
        remove_instances: Any = None,
        destroy: bool = False,
        dry_run: Any = False,
        octopus_conn_id: str = settings.default("conn_id"),
        ledger_store: Any = None,
        **kwargs: Any,
    ) -> None:
        script = include_dir() / "terraform-fleet.sh"
        # The trailing space keeps BashOperator from treating the ``.sh`` path as a Jinja template file.
        kwargs.setdefault("bash_command", f"bash {script} ")
        kwargs.setdefault("output_processor", parse_result)
        super().__init__(**kwargs)
        self.fleet_plan = fleet_plan
        self.remove_instances = remove_instances
        self.destroy = destroy
        self.dry_run = dry_run
        self.octopus_conn_id = octopus_conn_id
        self.ledger_store = ledger_store

    @property
    def action(self) -> str:
        dry = as_bool(self.dry_run)
        if self.destroy:
            return "plan-destroy" if dry else "destroy"
        return "plan" if dry else "apply"

    def _named(self) -> list[str] | None:
        """The names given in ``remove_instances`` (``None``: not given, the fleet plan's own are used)."""
        value = self.remove_instances
        if value is None:
            return None
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else []
        if isinstance(value, Mapping):
            value = value.get("instances") or []
        return [str(n) for n in value or []]

    def _plan(self) -> Mapping[str, Any]:
        named = self._named()
        return self.fleet_plan if named is None else {**self.fleet_plan, "remove_instances": named}

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.env = {**(self.env or {}), **terraform_env(self._plan(), self.action)}

    def get_env(self, context: Context) -> dict[str, str]:
        """The worker's allowed variables, this task's ``env``, the API key (local clouds only), Airflow's context."""
        cloud = self.fleet_plan["cloud"]
        # Also here, not only at render time: a mapped operator is rendered on an unmapped copy.
        env = {**filtered_environ(cloud), **(self.env or {}), **terraform_env(self._plan(), self.action)}
        env.pop("OCTOPUS_API_KEY", None)
        if cloud in CLOUDS_WITH_KEY_IN_ENV:
            from airflow.sdk import BaseHook

            password = BaseHook.get_connection(self.octopus_conn_id).password
            if not password:
                raise AirflowFailException(f"Connection {self.octopus_conn_id!r} has no password (the Octopus API key)")
            env["OCTOPUS_API_KEY"] = password
        env.update(context_to_airflow_vars(context, in_env_var_format=True))
        return env

    def execute(self, context: Context) -> Any:
        if self._named() == []:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"{self.fleet_plan['cloud']}: nothing to remove; Terraform not run")
        check_state_is_shared(self.fleet_plan["cloud"])
        before = None
        if not as_bool(self.dry_run):
            # Terraform state is the deployment's too: only the run holding its lease, and the latest one, writes it.
            from octopus import ledger, tasks

            cloud, store = self.fleet_plan["cloud"], self.ledger_store or ledger.VariableStore()
            with tasks.fail_fast_on_bad_input():
                doc = ledger.check_fence(
                    store, deployment_prefix(self.fleet_plan), cloud, tasks.this_run(context), tasks.run_state
                )
            if not self.destroy and ledger.previous_fleet(doc) is None:
                before = self.registered_before()
        result = super().execute(context)
        if before is not None and isinstance(result, dict):
            result["registered_before"] = before
        return result

    def registered_before(self) -> dict[str, str]:
        """``{name: thumbprint}`` of the fleet-named polling records in the initial pool, read before the apply.

        Read only when the ledger records no fleet (first use, or the ledger was lost): the wait then counts a
        record only once it carries an endpoint it did not carry here, so a replaced instance's stale record
        (Healthy until Octopus's next health check) is never taken for the new instance.
        """
        from octopus.hooks import OctopusHook
        from octopus.sharing import is_polling, thumbprint_of

        initial = self.fleet_plan["initial_space"]
        prefix = f"{self.fleet_plan['name_prefix']}-".casefold()
        with OctopusHook(octopus_conn_id=self.octopus_conn_id) as hook:
            records = hook.list_workers(initial["id"], worker_pool_id=initial["pool_id"])
        return {
            r["Name"]: thumbprint_of(r)
            for r in records
            if is_polling(r) and (r.get("Name") or "").casefold().startswith(prefix)
        }
