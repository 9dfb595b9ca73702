"""Every setting of the package, declared once: its name, type, default, where it can be set, bounds and help.

A setting can be set in one or more places (:data:`WHERE`):

* ``param`` — a field of a DAG's trigger form (``conf`` of ``airflow dags trigger``);
* ``[octopus]`` — an option of Airflow's config section ``[octopus]`` (``AIRFLOW__OCTOPUS__<NAME>``), read when
  the DAGs are parsed;
* ``extra`` — a key of the ``octopus`` connection's extra (a field of the connection form unless ``form=False``);
* ``env`` — an environment variable of the Airflow workers (some are read by ``include/*.sh`` too);
* nowhere (``where=()``) — a constant of the package: declared here so that it has one value and one name.

The readers: :func:`config_option`, :func:`connection_extra`, :func:`env`; the trigger forms' params come from
:func:`param` / :func:`params`, the connection form from :func:`connection_fields` / :func:`field_placeholders`;
``docs/settings.md`` is :func:`markdown_table` (``python -m octopus.settings docs/settings.md`` rewrites it, and a
test checks it is current).

This module imports nothing from Airflow at import time (:mod:`octopus.provider_info` reads it, and the API server
builds the connection form from that without importing Airflow's task SDK).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONSTANT",
    "ENV",
    "EXTRA",
    "OPTION",
    "PARAM",
    "REGISTRY",
    "Setting",
    "config_option",
    "connection_extra",
    "connection_fields",
    "default",
    "env",
    "field_placeholders",
    "markdown_table",
    "param",
    "params",
]

PARAM = "param"
OPTION = "[octopus]"
EXTRA = "extra"
ENV = "env"
#: Where a setting can be set, in the order the docs list them; a setting set nowhere is a package constant.
WHERE = (PARAM, OPTION, EXTRA, ENV)
CONSTANT = "constant"

#: The Airflow config section of the ``[octopus]`` options.
SECTION = "octopus"

#: Sections of the trigger form, in display order.
SECTION_BUILD = "What to build"
SECTION_SHARE = "Where to share"
SECTION_ADVANCED = "Advanced"

#: The DAGs whose trigger forms the params make, by the short name :func:`params` takes.
SHARE = "share"
RETIRE = "retire"

#: The words a boolean setting (an extra, an option, a variable, a rendered template) may be given as.
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Setting:
    """One setting.

    :param type: its JSON-schema type (a list when ``null`` is allowed), as the trigger form validates it.
    :param default: the value when it is set nowhere (``None``: unset; ``default_text`` then says what happens).
    :param help: one line for users (the form's description; ``help_by_dag`` when a DAG's form says it otherwise).
    :param where: of :data:`WHERE`; empty for a package constant.
    :param bounds: JSON-schema validation keywords (``minimum``, ``enum``, ``pattern``, ...), enforced by the form
        and by the readers.
    :param form: display-only keywords of the param or connection field (``section``, ``values_display``,
        ``examples``, ...).
    :param unit: ``seconds`` or ``minutes`` for a duration.
    :param env_var: the variable's name for ``env`` (``<CLOUD>`` stands for a cloud, upper-case).
    :param scripts: files under ``include/`` that read the variable too (with the same default, tested).
    """

    name: str
    type: str | list[str]
    default: Any
    help: str
    where: tuple[str, ...] = ()
    title: str = ""
    bounds: Mapping[str, Any] = field(default_factory=dict)
    form: Mapping[str, Any] = field(default_factory=dict)
    unit: str = ""
    help_by_dag: Mapping[str, str] = field(default_factory=dict)
    env_var: str = ""
    scripts: tuple[str, ...] = ()
    default_text: str = ""
    #: For ``extra``: shown in the connection form (tuning knobs for tests and benchmarks are not).
    in_form: bool = True

    @property
    def option_env_var(self) -> str:
        """``AIRFLOW__OCTOPUS__<NAME>``: the environment form of the ``[octopus]`` option."""
        return f"AIRFLOW__{SECTION.upper()}__{self.name.upper()}"


def _text(value: Any) -> str:
    """A value as the docs and the forms' placeholders state it (``30``, not ``30.0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------- the declarations

#: The clouds a fleet can be built on, by id, with the names pools and docs use (``{cloud}`` in a pool name).
CLOUDS: dict[str, str] = {"aws": "AWS", "azure": "Azure", "gcp": "GCP", "local": "Local"}
_CLOUD_LABELS = {
    "aws": "AWS",
    "azure": "Azure",
    "gcp": "Google Cloud (GCP)",
    "local": "Local (simulated VMs on the Airflow worker: tests and demos)",
}
_INSTANCE_COUNT = {"aws": 2, "azure": 2, "gcp": 2, "local": 3}
_NAME_PREFIX_MAX = 25
_POOL_NAME = "{cloud} Worker Pool TF"
_WEEK_MINUTES = 7 * 24 * 60

_SETTINGS: tuple[Setting, ...] = (
    # ------------------------------------------------------------------------------------------------ params
    Setting(
        "clouds",
        "array",
        ["aws", "azure", "gcp"],
        "Clouds whose fleets to build and share. Pick one or more.",
        where=(PARAM,),
        title="Clouds",
        bounds={"items": {"type": "string", "enum": list(CLOUDS)}, "minItems": 1, "uniqueItems": True},
        form={"examples": list(CLOUDS), "values_display": _CLOUD_LABELS, "section": SECTION_BUILD},
        help_by_dag={RETIRE: "Clouds whose fleets to remove. Pick one or more."},
    ),
    Setting(
        "instance_count",
        "object",
        _INSTANCE_COUNT,
        "How many workers each selected cloud gets (0-100): Terraform builds this many and the run waits "
        'for this many. Edit the numbers, e.g. {"local": 2}; a cloud left out keeps its default '
        f"({json.dumps(_INSTANCE_COUNT)}); clouds not selected above are ignored.",
        where=(PARAM,),
        title="Workers per cloud",
        bounds={
            "properties": {
                cloud: {"type": "integer", "minimum": 0, "maximum": 100, "title": f"{label} workers"}
                for cloud, label in CLOUDS.items()
            },
            "additionalProperties": False,
        },
        form={"section": SECTION_BUILD},
    ),
    Setting(
        "name_prefix",
        "string",
        "octopus-shared",
        "Names this deployment's workers <prefix>-<cloud>-<n> and tells them apart from any other's: "
        f"lower-case letters, digits and single hyphens, at most {_NAME_PREFIX_MAX} characters, no cloud name "
        "as a part. Use the same prefix to retire them.",
        where=(PARAM,),
        title="Name prefix",
        # Short enough for every cloud's naming rules once "-<cloud>" is appended (the modules allow 32).
        bounds={"pattern": r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", "maxLength": _NAME_PREFIX_MAX},
        form={"section": SECTION_BUILD},
    ),
    Setting(
        "dry_run",
        "boolean",
        False,
        "Plan Terraform and compute every share without changing anything: no VMs, no Octopus writes.",
        where=(PARAM,),
        title="Dry run",
        form={"section": SECTION_BUILD},
        help_by_dag={RETIRE: "List what would be removed and plan the destroy; change nothing."},
    ),
    Setting(
        "worker_pool_name",
        "string",
        _POOL_NAME,
        "Name of the worker pool, the same in every space; {cloud} becomes AWS, Azure, GCP or Local. "
        f"Default: {_POOL_NAME}.",
        where=(PARAM,),
        title="Worker pool name",
        bounds={"minLength": 1, "pattern": r"\{cloud\}"},
        form={"section": SECTION_SHARE},
    ),
    Setting(
        "target_spaces",
        ["array", "null"],
        [],
        "Space names or ids, one per line, to share into. Empty: every space that has the pool.",
        where=(PARAM,),
        title="Only these spaces",
        bounds={"items": {"type": "string", "minLength": 1}},
        form={"section": SECTION_SHARE},
    ),
    Setting(
        "allowed_spaces",
        ["array", "null"],
        [],
        "Access policy: space names, ids or glob patterns the fleet may be shared into (and whose demand the "
        "scaler counts), one per line. Empty: the [octopus] allowed_spaces option, else every space.",
        where=(PARAM, OPTION),
        title="Allowed spaces",
        bounds={"items": {"type": "string", "minLength": 1}},
        form={"section": SECTION_SHARE},
    ),
    Setting(
        "denied_spaces",
        ["array", "null"],
        [],
        "Access policy: spaces never shared into (deny wins; added to the [octopus] denied_spaces option). "
        "Copies of ours already there are drained and removed: never deleted under a running step.",
        where=(PARAM, OPTION),
        title="Denied spaces",
        bounds={"items": {"type": "string", "minLength": 1}},
        form={"section": SECTION_SHARE},
    ),
    Setting(
        "initial_space",
        ["string", "null"],
        "",
        "Space (name or id) the fleet registers in. Empty: the space pinned on first use (or, on first use, "
        "the first space holding the pool). Set it to move the fleet deliberately.",
        where=(PARAM,),
        title="Initial space",
        form={"section": SECTION_SHARE},
    ),
    Setting(
        "prune_stale",
        "boolean",
        True,
        "Remove this deployment's workers that are no longer in the fleet from the shared pools "
        "(e.g. yesterday's VMs). Off: only add and repair.",
        where=(PARAM,),
        title="Remove stale copies",
        form={"section": SECTION_SHARE},
    ),
    Setting(
        "forget_spaces",
        ["array", "null"],
        [],
        "Space names or ids the ledger recorded that this retire may stop tracking without reading them (a "
        "space deleted, or that the key may no longer see). Records of ours left there are left as they are.",
        where=(PARAM,),
        title="Let go of spaces",
        bounds={"items": {"type": "string", "minLength": 1}},
        form={"section": SECTION_SHARE},
    ),
    Setting(
        "registration_timeout_minutes",
        "integer",
        20,
        "How long to wait for a new fleet's workers to register and turn healthy before failing.",
        where=(PARAM,),
        title="Registration timeout (minutes)",
        bounds={"minimum": 1, "maximum": 24 * 60},
        form={"section": SECTION_ADVANCED},
        unit="minutes",
    ),
    Setting(
        "poll_interval_seconds",
        "integer",
        30,
        "How often the wait checks Octopus for the fleet's workers, and a drain which steps still hold them.",
        where=(PARAM,),
        title="Poll interval (seconds)",
        bounds={"minimum": 1, "maximum": 3600},
        form={"section": SECTION_ADVANCED},
        unit="seconds",
        help_by_dag={RETIRE: "How often the drain reads which deployment steps still hold the workers."},
    ),
    Setting(
        "drain_timeout_minutes",
        "number",
        60,
        "How long to wait for the deployment steps running on a worker to end before removing it. When it "
        "runs out the run fails naming those steps, and the workers stay disabled and intact.",
        where=(PARAM,),
        title="Drain timeout (minutes)",
        bounds={"exclusiveMinimum": 0, "maximum": _WEEK_MINUTES},
        form={"section": SECTION_ADVANCED},
        unit="minutes",
    ),
    Setting(
        "force_drain",
        "boolean",
        False,
        "Remove the workers even if steps still run on them when the drain times out. Those steps fail: use it "
        "only when the fleet must go now.",
        where=(PARAM,),
        title="Force removal after the drain timeout",
        form={"section": SECTION_ADVANCED},
    ),
    Setting(
        "stale_lease_minutes",
        "number",
        15,
        "A lease whose task has already completed and that is older than this is stale (Octopus keeps some "
        "until it restarts): reported, never waited for.",
        where=(PARAM,),
        title="Stale lease after (minutes)",
        bounds={"exclusiveMinimum": 0, "maximum": _WEEK_MINUTES},
        form={"section": SECTION_ADVANCED},
        unit="minutes",
    ),
    Setting(
        "adopt",
        ["array", "null"],
        [],
        "Thumbprints of this deployment's own older workers to take back after its ledger was lost. Run a dry "
        "run first: its summary lists the records it could adopt (named like this fleet, not Healthy). Only "
        "such records are adopted; any other thumbprint fails the run before anything is written.",
        where=(PARAM,),
        title="Adopt records (thumbprints)",
        bounds={"items": {"type": "string", "pattern": "^[0-9A-Fa-f]{40}$"}, "uniqueItems": True},
        form={"section": SECTION_ADVANCED},
    ),
    Setting(
        "wait_mode",
        "string",
        "reschedule",
        "How the wait for the workers runs between its checks.",
        where=(PARAM,),
        title="Wait mode",
        bounds={"enum": ["reschedule", "deferrable"]},
        form={
            "values_display": {
                "reschedule": "Reschedule (frees the worker slot between checks)",
                "deferrable": "Deferrable (the triggerer waits; needs a running triggerer)",
            },
            "section": SECTION_ADVANCED,
        },
    ),
    # ------------------------------------------------------------------------------------- [octopus] options
    Setting(
        "share_mode",
        "string",
        "worker",
        "Where share_to_space indexes run under a scheduler: worker (a task process per space, labelled by "
        "space) or triggerer (a coroutine each in the triggerer; the grid shows indexes 0, 1, 2 ...).",
        where=(OPTION,),
        bounds={"enum": ["worker", "triggerer"]},
    ),
    Setting(
        "share_pool",
        "string",
        "default_pool",
        "The Airflow pool share_to_space runs in; a pool named here must exist (airflow pools set), or the "
        "shares wait in scheduled.",
        where=(OPTION,),
        default_text="default_pool (Airflow's own, which always exists)",
    ),
    # --------------------------------------------------------------------------------------- connection extras
    Setting(
        "verify",
        ["boolean", "null"],
        True,
        "Keep it on. Turn it off only for a test server with a self-signed certificate; for a "
        "private CA keep it on and set REQUESTS_CA_BUNDLE on the Airflow machines (or put the bundle's path "
        'in the extra as "verify").',
        where=(EXTRA,),
        title="Verify TLS certificate",
    ),
    Setting(
        "timeout",
        ["number", "null"],
        30.0,
        "Seconds to wait for each HTTP response (connect and read).",
        where=(EXTRA,),
        title="Timeout (seconds)",
        bounds={"exclusiveMinimum": 0},
        unit="seconds",
    ),
    Setting(
        "page_size",
        ["integer", "null"],
        1000,
        "Items per page when listing workers (the API's take).",
        where=(EXTRA,),
        title="Page size",
        bounds={"minimum": 1},
    ),
    Setting(
        "max_requests_per_minute",
        ["number", "null"],
        None,
        "The server's rate limit for this API key (Octopus 2026.3+ allows 200 a minute by "
        "default). Tasks running in parallel share it between them. Empty: no client-side pacing.",
        where=(EXTRA,),
        title="Max requests per minute",
        bounds={"exclusiveMinimum": 0},
        form={"examples": [180]},
        default_text="none (no client-side pacing)",
    ),
    Setting(
        "max_attempts",
        ["integer", "null"],
        6,
        "Attempts per request, the first included, on connection errors, timeouts and 5xx "
        "(429 answers do not count: the retry budget bounds them).",
        where=(EXTRA,),
        title="Max attempts",
        bounds={"minimum": 1},
    ),
    Setting(
        "max_retry_seconds",
        ["number", "null"],
        120.0,
        "Total time one request may spend retrying, waits included.",
        where=(EXTRA,),
        title="Retry budget (seconds)",
        bounds={"minimum": 0},
        unit="seconds",
    ),
    Setting(
        "evidence_secret",
        ["string", "null"],
        None,
        "Secret that seals the deployments' ownership evidence (HMAC). Empty: the API key. Set it "
        "to keep the evidence valid across API-key rotations; whoever holds it can make the package treat "
        "records as its own, so guard it like the key.",
        where=(EXTRA,),
        title="Evidence key",
        form={"format": "password"},
        default_text="the API key",
    ),
    Setting(
        "retry_initial_wait",
        ["number", "null"],
        0.5,
        "First backoff wait of a retried request (doubles each retry, plus jitter); for tests and benchmarks.",
        where=(EXTRA,),
        bounds={"minimum": 0},
        unit="seconds",
        in_form=False,
    ),
    Setting(
        "retry_max_wait",
        ["number", "null"],
        30.0,
        "Cap of one backoff wait (Retry-After may exceed it, within the retry budget); for tests and benchmarks.",
        where=(EXTRA,),
        bounds={"minimum": 0},
        unit="seconds",
        in_form=False,
    ),
    # ------------------------------------------------------------------------------- environment variables
    Setting(
        "include_dir",
        "string",
        None,
        "The package's include/ folder (Terraform modules, scripts); set it for a non-editable install.",
        where=(ENV,),
        env_var="OCTOPUS_WORKERS_INCLUDE_DIR",
        scripts=("terraform-fleet.sh",),
        default_text="this package's include/",
    ),
    Setting(
        "state_dir",
        "string",
        None,
        "Root of the local Terraform state: <dir>/<name_prefix>/<cloud>/terraform.tfstate.",
        where=(ENV,),
        env_var="OCTOPUS_WORKERS_STATE_DIR",
        scripts=("terraform-fleet.sh",),
        default_text="$AIRFLOW_HOME/octopus-workers-state",
    ),
    Setting(
        "shared_state_dir",
        "boolean",
        False,
        "true: the local state dir is a disk every worker shares, so local state is allowed with a "
        "multi-machine executor.",
        where=(ENV,),
        env_var="OCTOPUS_WORKERS_SHARED_STATE_DIR",
    ),
    Setting(
        "tf_backend",
        "string",
        "local",
        "Terraform backend type for that cloud (s3, azurerm, gcs, pg, ...); any but local uses the workspace "
        "<name_prefix>.",
        where=(ENV,),
        env_var="OCTOPUS_TF_BACKEND_<CLOUD>",
        scripts=("terraform-fleet.sh",),
    ),
    Setting(
        "tf_backend_config",
        "string",
        None,
        "A file passed as -backend-config for that cloud's non-local backend.",
        where=(ENV,),
        env_var="OCTOPUS_TF_BACKEND_CONFIG_<CLOUD>",
        scripts=("terraform-fleet.sh",),
        default_text="none",
    ),
    Setting(
        "tf_lock_timeout",
        "string",
        "5m",
        "How long Terraform waits for the state lock.",
        where=(ENV,),
        env_var="OCTOPUS_TF_LOCK_TIMEOUT",
        scripts=("terraform-fleet.sh",),
    ),
    Setting(
        "tf_allow_unnamed_removal",
        "boolean",
        False,
        "true: let an apply lower a cloud group's size without named instances, or replace the group (only for "
        "a fleet known to be idle).",
        where=(ENV,),
        env_var="OCTOPUS_TF_ALLOW_UNNAMED_REMOVAL",
        scripts=("terraform-fleet.sh",),
    ),
    Setting(
        "tf_remove_timeout",
        "integer",
        900,
        "How long removing one named instance through its cloud's API may take.",
        where=(ENV,),
        env_var="OCTOPUS_TF_REMOVE_TIMEOUT",
        bounds={"minimum": 1},
        unit="seconds",
        scripts=("remove-instance.sh",),
    ),
    Setting(
        "tf_env_passthrough",
        "string",
        "",
        "More worker environment variables Terraform may inherit: comma-separated names, or prefixes ending "
        "in * (never a blocked one such as OCTOPUS_API_KEY).",
        where=(ENV,),
        env_var="OCTOPUS_WORKERS_TF_ENV_PASSTHROUGH",
        default_text="none",
    ),
    # ----------------------------------------------------------------------------------- package constants
    Setting("conn_id", "string", "octopus_default", "The Airflow connection every DAG, hook and trigger uses."),
    Setting(
        "shares_at_once",
        "integer",
        16,
        "share_to_space tasks running at once (max_active_tis_per_dag and per dagrun; the dedicated pool's slots; "
        "the triggerer's spaces at once); each hook paces at max_requests_per_minute / this.",
    ),
    Setting(
        "dedicated_share_pool",
        "string",
        "octopus_share",
        "The name of the dedicated pool an operator may create and name in [octopus] share_pool.",
    ),
    Setting(
        "discovery_parallelism",
        "integer",
        16,
        "Pool listings in flight during discovery (get_spaces: one read per space, nothing written).",
    ),
    Setting("space_parallelism", "integer", 8, "Octopus requests in flight within one space's share."),
    Setting(
        "drain_settle_seconds",
        "number",
        5.0,
        "Seconds between the two reads that must both find no lease before a drained worker is removed.",
        unit="seconds",
    ),
    Setting("task_owner", "string", "platform", "The owner of the DAGs' tasks."),
    Setting("task_retries", "integer", 2, "Retries of a failed task."),
    Setting("task_retry_delay_seconds", "integer", 30, "First wait before a task's retry.", unit="seconds"),
    Setting("task_retry_backoff", "number", 2.0, "Factor of the exponential backoff between a task's retries."),
    Setting("task_max_retry_delay_minutes", "integer", 10, "Longest wait before a task's retry.", unit="minutes"),
)

#: Every setting by name.
REGISTRY: dict[str, Setting] = {s.name: s for s in _SETTINGS}
if len(REGISTRY) != len(_SETTINGS):  # pragma: no cover - a typo in the table above
    raise RuntimeError("octopus.settings declares a setting twice")

#: The params of each DAG's trigger form, in display order.
DAG_PARAMS: dict[str, tuple[str, ...]] = {
    SHARE: (
        "clouds",
        "instance_count",
        "name_prefix",
        "dry_run",
        "worker_pool_name",
        "target_spaces",
        "allowed_spaces",
        "denied_spaces",
        "initial_space",
        "prune_stale",
        "registration_timeout_minutes",
        "poll_interval_seconds",
        "drain_timeout_minutes",
        "force_drain",
        "stale_lease_minutes",
        "adopt",
        "wait_mode",
    ),
    RETIRE: (
        "clouds",
        "name_prefix",
        "dry_run",
        "worker_pool_name",
        "initial_space",
        "drain_timeout_minutes",
        "force_drain",
        "stale_lease_minutes",
        "poll_interval_seconds",
        "forget_spaces",
    ),
}


def setting(name: str) -> Setting:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"octopus.settings declares no setting {name!r}; known: {', '.join(REGISTRY)}") from None


def default(name: str) -> Any:
    """The declared default of ``name`` (a copy, so a caller cannot change the declaration)."""
    return copy.deepcopy(setting(name).default)


def seconds(name: str) -> float:
    """The default of a duration setting in seconds."""
    s = setting(name)
    factor = {"seconds": 1, "minutes": 60}.get(s.unit)
    if factor is None:
        raise ValueError(f"setting {name!r} is not a duration")
    return s.default * factor


def _expect(s: Setting, kind: str) -> None:
    if kind not in s.where:
        raise ValueError(f"setting {s.name!r} cannot be set as {kind} (only: {', '.join(s.where) or 'nowhere'})")


# ---------------------------------------------------------------------------------------------------- parsing


def _types(s: Setting) -> list[str]:
    return [t for t in ([s.type] if isinstance(s.type, str) else s.type) if t != "null"]


def _parse(s: Setting, value: Any, where: str) -> Any:
    """``value`` (maybe a string from a URI-form connection, the config or the environment) as ``s``'s type, within
    its bounds; ``where`` names the place in the error."""
    kind = _types(s)[0]
    problem = f"{where} must be {_expected(s)}, got {value!r}"
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise ValueError(problem)
    if kind in ("integer", "number"):
        if isinstance(value, bool):
            raise ValueError(problem)
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError(problem) from None
        if not math.isfinite(number) or (kind == "integer" and not number.is_integer()):
            raise ValueError(problem)
        b = s.bounds
        if (
            ("minimum" in b and number < b["minimum"])
            or ("maximum" in b and number > b["maximum"])
            or ("exclusiveMinimum" in b and number <= b["exclusiveMinimum"])
        ):
            raise ValueError(problem)
        return int(number) if kind == "integer" else number
    if kind == "string":
        text = str(value).strip()
        if "enum" in s.bounds:
            text = text.lower()
            if text not in s.bounds["enum"]:
                raise ValueError(problem)
        return text
    if kind == "array" and isinstance(value, str):
        return [item.strip() for item in re.split(r"[,\n]", value) if item.strip()]
    return value


def _expected(s: Setting) -> str:
    kind = _types(s)[0]
    b = s.bounds
    if "enum" in b:
        return f"one of {', '.join(b['enum'])}"
    words = {"boolean": "true or false", "integer": "an integer", "number": "a number", "string": "a string"}
    text = words.get(kind, kind)
    limits = [f">= {_text(b['minimum'])}"] if "minimum" in b else []
    limits += [f"> {_text(b['exclusiveMinimum'])}"] if "exclusiveMinimum" in b else []
    limits += [f"<= {_text(b['maximum'])}"] if "maximum" in b else []
    return f"{text} {' and '.join(limits)}".strip()


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# ---------------------------------------------------------------------------------------------------- readers


def config_option(name: str) -> Any:
    """The ``[octopus] <name>`` option (``AIRFLOW__OCTOPUS__<NAME>``) as its declared type; unset or blank: the
    declared default. A value out of bounds raises ``ValueError`` naming the option and its variable."""
    from airflow.sdk.configuration import conf

    s = setting(name)
    _expect(s, OPTION)
    raw = conf.get(SECTION, name, fallback=None)
    if _unset(raw):
        return default(name)
    return _parse(s, raw, f"[{SECTION}] {name} ({s.option_env_var})")


def connection_extra(name: str, extras: Mapping[str, Any], conn_id: str = "") -> Any:
    """The connection extra ``name`` from ``extras`` (a connection's ``extra_dejson``) as its declared type; absent,
    ``null`` (an empty form field) or blank: the declared default. Out of bounds raises ``ValueError``."""
    s = setting(name)
    _expect(s, EXTRA)
    raw = extras.get(name)
    if _unset(raw):
        return default(name)
    where = f"connection {conn_id!r}: extra {name}" if conn_id else f"extra {name}"
    return _parse(s, raw, where)


def env(name: str, *, cloud: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """The environment variable of setting ``name`` (``cloud`` fills ``<CLOUD>``) as its declared type; unset or
    blank: the declared default."""
    s = setting(name)
    _expect(s, ENV)
    var = env_var(name, cloud=cloud)
    raw = (os.environ if environ is None else environ).get(var)
    if _unset(raw):
        return default(name)
    return _parse(s, raw, var)


def env_var(name: str, *, cloud: str = "") -> str:
    """The variable's name; ``cloud`` fills ``<CLOUD>`` (required when the name has it)."""
    var = setting(name).env_var
    if "<CLOUD>" in var:
        if not cloud:
            raise ValueError(f"{var} is per cloud: pass cloud=")
        var = var.replace("<CLOUD>", cloud.upper())
    return var


# -------------------------------------------------------------------------------------------------- the forms


def param(name: str, dag: str = SHARE) -> Any:
    """The trigger form's ``airflow.sdk.Param`` of setting ``name`` as DAG ``dag`` (:data:`SHARE` or
    :data:`RETIRE`) shows it."""
    from airflow.sdk import Param

    s = setting(name)
    _expect(s, PARAM)
    display = copy.deepcopy(dict(s.form))
    section = {"section": display.pop("section")} if "section" in display else {}
    return Param(
        default(name),
        type=copy.deepcopy(s.type),
        **copy.deepcopy(dict(s.bounds)),
        **display,
        title=s.title,
        description=s.help_by_dag.get(dag, s.help),
        **section,
    )


def params(dag: str) -> dict[str, Any]:
    """The trigger form of DAG ``dag``: every param, in display order."""
    return {name: param(name, dag) for name in DAG_PARAMS[dag]}


def connection_fields() -> dict[str, dict[str, Any]]:
    """The connection form's extra fields (provider info's ``conn-fields``): label, description (stating the
    default), and a schema whose ``null`` means the default."""
    fields: dict[str, dict[str, Any]] = {}
    for s in _SETTINGS:
        if EXTRA not in s.where or not s.in_form:
            continue
        schema: dict[str, Any] = {"type": copy.deepcopy(s.type), **copy.deepcopy(dict(s.bounds))}
        description = s.help
        if _types(s)[0] == "boolean":
            # The switch must show what an untouched connection does.
            schema["default"] = s.default
        elif _types(s)[0] in ("integer", "number"):
            if s.default is not None:
                description = f"{description} Default {_text(s.default)}."
            schema["examples"] = [s.default]
        schema.update(copy.deepcopy(dict(s.form)))
        fields[s.name] = {"label": s.title, "description": description, "schema": schema}
    return fields


def field_placeholders() -> dict[str, str]:
    """Placeholders of the connection form's number fields: their default (or example)."""
    return {
        name: _text(field["schema"]["examples"][0])
        for name, field in connection_fields().items()
        if field["schema"].get("examples")
    }


# ------------------------------------------------------------------------------------------------------ docs

_DOC_HEAD = """\
# Settings

Every setting of the package, generated from `plugins/octopus/settings.py` (the one place each is declared):
run `python -m octopus.settings docs/settings.md` after changing one; `tests/provider/test_settings.py` fails
while this file is out of date.

Where: **param** — the DAG's trigger form (or `conf`); **[octopus]** — Airflow's config section `[octopus]`
(`AIRFLOW__OCTOPUS__<NAME>`, on every component that parses the DAGs); **extra** — the `octopus` connection's
extra (a field of the connection form, unless marked *JSON only*); **env** — an environment variable of the
Airflow workers (`<CLOUD>`: `AWS`, `AZURE`, `GCP`, `LOCAL`); **constant** — fixed in the package.
"""


def _where(s: Setting) -> str:
    if not s.where:
        return CONSTANT
    parts = []
    for kind in s.where:
        if kind == PARAM:
            dags = [dag for dag, names in DAG_PARAMS.items() if s.name in names]
            parts.append(f"param ({', '.join(dags)})")
        elif kind == OPTION:
            parts.append(f"`[{SECTION}] {s.name}` / `{s.option_env_var}`")
        elif kind == EXTRA:
            parts.append("extra" if s.in_form else "extra (JSON only)")
        elif kind == ENV:
            parts.append(f"env `{s.env_var}`")
    return ", ".join(parts)


def _bounds(s: Setting) -> str:
    b = dict(s.bounds)
    if "enum" in b:
        return "one of " + ", ".join(f"`{v}`" for v in b["enum"])
    if "items" in b and "enum" in b["items"]:
        return "any of " + ", ".join(f"`{v}`" for v in b["items"]["enum"])
    if "properties" in b:
        limits = {(p.get("minimum"), p.get("maximum")) for p in b["properties"].values()}
        if len(limits) == 1:
            low, high = limits.pop()
            return f"per cloud {low}–{high}"
    out = []
    if "minimum" in b:
        out.append(f"≥ {_text(b['minimum'])}")
    if "exclusiveMinimum" in b:
        out.append(f"> {_text(b['exclusiveMinimum'])}")
    if "maximum" in b:
        out.append(f"≤ {_text(b['maximum'])}")
    if "maxLength" in b:
        out.append(f"≤ {b['maxLength']} chars")
    if "pattern" in b:
        out.append(f"`{b['pattern']}`".replace("|", "\\|"))
    if "items" in b and "pattern" in b["items"]:
        out.append(f"items `{b['items']['pattern']}`")
    return ", ".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table() -> str:
    """``docs/settings.md``: one row per setting, grouped by where it is set."""
    lines = [_DOC_HEAD, "| setting | where | type | default | bounds | what |", "|---|---|---|---|---|---|"]
    order = {kind: i for i, kind in enumerate((*WHERE, CONSTANT))}
    for s in sorted(_SETTINGS, key=lambda s: order[s.where[0] if s.where else CONSTANT]):
        kind = "/".join(_types(s)) + (f" ({s.unit})" if s.unit else "")
        shown = _text(s.default)
        value = _cell(s.default_text) if s.default_text else f"`{_cell(shown)}`" if shown else "empty"
        help_ = _cell(s.help_by_dag.get(SHARE, s.help))
        lines.append(f"| `{s.name}` | {_where(s)} | {kind} | {value} | {_bounds(s)} | {help_} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m octopus.settings [PATH]``: print the docs table, or write it to PATH."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    text = markdown_table()
    if args:
        with open(args[0], "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
