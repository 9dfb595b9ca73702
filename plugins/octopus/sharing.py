"""Pure decisions of the worker-sharing DAGs: no I/O, no Airflow imports, unit-testable without a server.

A **deployment** is one (``name_prefix``, cloud) pair: its Terraform state, its ledger (see :mod:`octopus.ledger`)
and its worker names are keyed by it. Ownership is proven by the ledger, never by a name pattern or pool
membership: a record is ours only when its (thumbprint, name) pair is one this deployment's fleet registered.

The shapes that cross XCom are typed below (:class:`FleetPlan`, :class:`Fleet`, :class:`SpaceVisit`,
:class:`SpaceResult`); every one is plain JSON.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

SUPPORTED_CLOUDS: dict[str, str] = {"aws": "AWS", "azure": "Azure", "gcp": "GCP", "local": "Local"}
DEFAULT_POOL_NAME_TEMPLATE = "{cloud} Worker Pool TF"
DEFAULT_NAME_PREFIX = "octopus-shared"
DEFAULT_INSTANCE_COUNT: dict[str, int] = {"aws": 2, "azure": 2, "gcp": 2, "local": 3}
#: The Asset alias both DAGs emit through: octopus://<server>/shared-workers/<prefix>[/retired].
ASSET_ALIAS = "octopus-shared-workers"
POLLING = "TentacleActive"
STALE_HEALTH = frozenset({"Unavailable"})
# Lower-case letters, digits and single hyphens; no cloud name as a hyphen-separated segment (see validate_prefix).
NAME_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
NAME_PREFIX_MAX = 25

# Outcomes counted per space and cloud in the summary, in display order.
OUTCOMES = (
    "added",
    "present",
    "fixed",
    "replaced",
    "pruned",
    "unshared",
    "draining",
    "disabled",
    "foreign",
    "failed",
    "blocked",
    "not_run",
)

Role = Literal["copy", "initial"]
Op = Literal["create", "update", "delete"]


class SpaceRef(TypedDict):
    id: str
    name: str
    pool_id: str | None


class FleetPlan(TypedDict, total=False):
    """One cloud's plan, from ``get_spaces``."""

    cloud: str
    prefix: str  # the name_prefix param: with the cloud, the deployment's identity
    name_prefix: str  # "<prefix>-<cloud>": what the module names its instances with
    pool_name: str
    instance_count: int
    server_url: str
    initial_space: SpaceRef
    initial_selected: bool  # target_spaces allows writes to the initial space
    initial_pin: Literal["pinned", "first_use", "moved"]
    spaces: list[SpaceRef]
    spaces_without_pool: list[str]
    spaces_not_selected: list[str]


class FleetWorker(TypedDict):
    name: str
    thumbprint: str
    uri: str


class OwnedRecord(TypedDict):
    name: str
    thumbprint: str


class Fleet(TypedDict, total=False):
    """One cloud's registered fleet, from ``wait_for_workers``: what ``share_to_space`` makes every pool hold."""

    cloud: str
    prefix: str
    space_id: str
    space_name: str
    pool_id: str
    pool_name: str
    generation: int  # the ledger's fleet generation this run registered (a cleared older run has a lower one)
    workers: list[FleetWorker]
    # Added by the share itself from the verified ledger (never carried in XCom): every endpoint it may remove.
    owned: list[OwnedRecord]
    dry_run: bool


class PoolVisit(TypedDict):
    pool_id: str | None
    pool_name: str
    role: Role


class SpaceVisit(TypedDict, total=False):
    id: str
    name: str
    pools: dict[str, PoolVisit]


class SpaceResult(TypedDict, total=False):
    """One space's outcome, pushed once by its ``share_to_space`` (or retire) index."""

    space_id: str
    space_name: str
    dry_run: bool
    planned: list[str]
    foreign: list[str]
    owned_remaining: dict[str, list[OwnedRecord]]
    clouds: dict[str, dict[str, Any]]
    requests: int


class SharingError(ValueError):
    """Bad input to a sharing decision; the message says what to change."""


class SpaceAccessError(Exception):
    """A space's pools could not be read (e.g. 403): raised by a ``pools_of`` callable of :func:`plan_fleets`."""


# --------------------------------------------------------------------------- names


def pool_name(cloud: str, template: str = DEFAULT_POOL_NAME_TEMPLATE) -> str:
    """The worker pool name for ``cloud`` from a template such as ``"{cloud} Worker Pool TF"``."""
    if cloud not in SUPPORTED_CLOUDS:
        raise SharingError(f"Unknown cloud {cloud!r}; supported: {', '.join(SUPPORTED_CLOUDS)}")
    try:
        fields = [field for _, field, spec, conv in string.Formatter().parse(template) if field is not None]
        if any(f != "cloud" for f in fields) or any(
            spec or conv for _, f, spec, conv in string.Formatter().parse(template) if f is not None
        ):
            raise ValueError(f"only a plain {{cloud}} field is allowed, found {fields}")
        name = template.format(cloud=SUPPORTED_CLOUDS[cloud])
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise SharingError(
            f"worker_pool_name template {template!r} is invalid ({exc!r}); "
            "use {cloud} as the only placeholder, e.g. '{cloud} Worker Pool TF'"
        ) from None
    if not name.strip():
        raise SharingError(f"worker_pool_name template {template!r} gives an empty pool name for {cloud!r}")
    return name.strip()


def pool_names(template: str, clouds: Iterable[str] = SUPPORTED_CLOUDS) -> dict[str, str]:
    """Pool name per cloud; refuses a template that gives two clouds one pool (Octopus compares names ignoring case).

    Every supported cloud is checked, not only the selected ones: a run of one cloud must not pick a pool that
    another cloud's deployment of the same template also fills.
    """
    names = {cloud: pool_name(cloud, template) for cloud in SUPPORTED_CLOUDS}
    by_name: dict[str, list[str]] = {}
    for cloud, name in names.items():
        by_name.setdefault(name.casefold(), []).append(cloud)
    clashes = [f"{names[c[0]]!r} for {', '.join(c)}" for c in by_name.values() if len(c) > 1]
    if clashes:
        raise SharingError(
            f"worker_pool_name template {template!r} gives several clouds the same pool ({'; '.join(clashes)}): "
            "put {cloud} in it exactly once and outside double braces, e.g. '{cloud} Worker Pool TF'"
        )
    return {cloud: names[cloud] for cloud in clouds}


def validate_prefix(prefix: str) -> str:
    """The ``name_prefix`` param, checked so that no deployment's worker names can match another's.

    Worker names are ``<prefix>-<cloud>-<instance>``. A prefix holds no cloud name as a hyphen-separated segment,
    so the first cloud segment of a name ends its prefix: ``team`` and ``team-aws`` (rejected) can never both
    claim ``team-aws-…``.
    """
    if not isinstance(prefix, str) or not NAME_PREFIX_PATTERN.fullmatch(prefix) or len(prefix) > NAME_PREFIX_MAX:
        raise SharingError(
            f"name_prefix {prefix!r} is invalid: use 1-{NAME_PREFIX_MAX} lower-case letters, digits and single "
            "hyphens, starting with a letter (e.g. 'octopus-shared')"
        )
    clouds = [segment for segment in prefix.split("-") if segment in SUPPORTED_CLOUDS]
    if clouds:
        raise SharingError(
            f"name_prefix {prefix!r} contains the cloud name {clouds[0]!r} as a segment: worker names "
            f"'<prefix>-<cloud>-…' would then be ambiguous between deployments. Choose a prefix without "
            f"{', '.join(repr(c) for c in SUPPORTED_CLOUDS)} segments"
        )
    return prefix


def fleet_name_prefix(prefix: str, cloud: str) -> str:
    """What one deployment's module names its instances with."""
    return f"{prefix}-{cloud}"


def same_name(a: str | None, b: str | None) -> bool:
    """Octopus compares names trimmed and case-insensitively."""
    return (a or "").strip().casefold() == (b or "").strip().casefold()


def thumbprint_of(worker: Mapping[str, Any]) -> str:
    endpoint = worker.get("Endpoint") or {}
    return (endpoint.get("Thumbprint") or worker.get("Thumbprint") or "").upper()


def is_polling(worker: Mapping[str, Any]) -> bool:
    return (worker.get("Endpoint") or {}).get("CommunicationStyle") == POLLING


def record_key(record: Mapping[str, Any]) -> str:
    """A record's identity: the thumbprint of its polling endpoint ("" for any other style, never ours).

    Only the instance holding that certificate can serve a polling record with this thumbprint, so a record
    carrying one of our sealed thumbprints is ours whatever its name (a space admin may rename it).
    """
    if not is_polling(record):
        return ""
    return thumbprint_of(record)


# --------------------------------------------------------------------------- discovery


def resolve_targets(spaces: Sequence[Mapping[str, Any]], targets: Iterable[str] | None) -> set[str] | None:
    """Space ids selected by ``targets`` (names or ids); ``None`` when every space is selected.

    An entry matching no space is an error: a typo must not silently shrink the run.
    """
    targets = [t for t in (targets or []) if str(t).strip()]
    if not targets:
        return None
    selected: set[str] = set()
    unknown = []
    for target in targets:
        matches = [s["Id"] for s in spaces if same_name(s["Id"], target) or same_name(s["Name"], target)]
        if not matches:
            unknown.append(target)
        selected.update(matches)
    if unknown:
        known = ", ".join(f"{s['Name']} ({s['Id']})" for s in spaces[:20])
        more = f" and {len(spaces) - 20} more" if len(spaces) > 20 else ""
        raise SharingError(f"target_spaces names no space: {', '.join(map(repr, unknown))}. Known: {known}{more}")
    return selected


def _find_space(spaces: Sequence[Mapping[str, Any]], wanted: str) -> Mapping[str, Any] | None:
    return next((s for s in spaces if same_name(s["Id"], wanted) or same_name(s["Name"], wanted)), None)


def choose_initial_space(
    cloud: str,
    holders: Sequence[SpaceRef],
    *,
    pinned: Mapping[str, Any] | None,
    requested: Mapping[str, Any] | None,
    pool: str,
    prefix: str,
    follow_pin: bool = False,
) -> tuple[SpaceRef, Literal["pinned", "first_use", "moved"]]:
    """The deployment's initial space among the spaces holding its pool (``holders``, in Octopus's order).

    * ``requested`` (the ``initial_space`` param) wins: a deliberate choice or move;
    * else the ``pinned`` space (recorded on first use), which must still be the one discovery would choose;
    * else, on first use, the first holder.
    Never silently moves: a pinned space that is no longer first, or lost its pool, fails before any write.
    With ``follow_pin`` (a teardown) the pinned space is used wherever discovery would start.
    """
    by_id = {h["id"]: h for h in holders}
    if requested is not None:
        entry = by_id.get(requested["Id"])
        if entry is None:
            raise SharingError(
                f"initial_space {requested['Name']!r} ({requested['Id']}) holds no static pool {pool!r} "
                f"for {cloud}: create it there, or choose another space"
            )
        moved = pinned is not None and pinned.get("id") != entry["id"]
        return entry, "moved" if moved else "pinned" if pinned else "first_use"
    if not holders:
        raise SharingError(
            f"No space holds the worker pool {pool!r} for {cloud}. Create the pool (static) in the space the "
            "workers should register into, or fix the worker_pool_name param."
        )
    first = holders[0]
    if pinned is None:
        return first, "first_use"
    entry = by_id.get(pinned["id"])
    where = f"{pinned.get('name')!r} ({pinned['id']})"
    if entry is None:
        raise SharingError(
            f"The {cloud} fleet of deployment {prefix!r} is pinned to initial space {where}, which no longer holds "
            f"a static pool {pool!r} (or cannot be read). Nothing was changed. To move the fleet deliberately, set "
            f"the initial_space param to the new space, e.g. {first['name']!r} ({first['id']})."
        )
    if entry["id"] != first["id"] and not follow_pin:
        raise SharingError(
            f"The {cloud} fleet of deployment {prefix!r} is pinned to initial space {entry['name']!r} "
            f"({entry['id']}), but discovery now finds {first['name']!r} ({first['id']}) first with pool {pool!r} "
            "(a space added, renamed or newly visible). Nothing was changed. To keep the fleet where it is, set "
            f"the initial_space param to {entry['name']!r}; to move it, set it to {first['name']!r}."
        )
    return entry, "pinned"


def plan_fleets(
    spaces: Sequence[Mapping[str, Any]],
    pools_of: Callable[[str], Sequence[Mapping[str, Any]]],
    *,
    clouds: Sequence[str],
    instance_count: Mapping[str, int],
    pool_name_template: str = DEFAULT_POOL_NAME_TEMPLATE,
    target_spaces: Iterable[str] | None = None,
    name_prefix: str = DEFAULT_NAME_PREFIX,
    server_url: str = "",
    pins: Mapping[str, Mapping[str, Any] | None] | None = None,
    initial_space: str | None = None,
    follow_pins: bool = False,
) -> list[FleetPlan]:
    """One fleet plan per cloud, sorted by cloud.

    ``spaces`` is in Octopus's order; ``pools_of(space_id)`` returns a space's worker pools and is called at most
    once per space, and only for spaces that can matter: every space until each cloud has met its first pool
    holder, the pinned and requested initial spaces, and the selected spaces. ``pins`` maps cloud → the
    deployment's pinned initial space (``{"id", "name", "pool_id"}``) from its ledger; ``initial_space`` is the
    param (a name or id) that moves it deliberately.
    """
    if not spaces:
        raise SharingError("Octopus returned no spaces: check that the API key's user can see at least one space")
    clouds = sorted(set(clouds))
    if not clouds:
        raise SharingError("clouds is empty: select at least one of " + ", ".join(SUPPORTED_CLOUDS))
    prefix = validate_prefix(name_prefix)
    names = pool_names(pool_name_template, clouds)
    for cloud in clouds:
        count = instance_count.get(cloud)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise SharingError(f"instance_count[{cloud!r}] must be an integer >= 0, got {count!r}")
    selected = resolve_targets(spaces, target_spaces)
    pins = dict(pins or {})
    requested = None
    if initial_space and str(initial_space).strip():
        requested = _find_space(spaces, str(initial_space))
        if requested is None:
            raise SharingError(f"initial_space {initial_space!r} names no space the API key can see")
    must_read = {p["id"] for p in pins.values() if p} | ({requested["Id"]} if requested else set())

    holders: dict[str, list[SpaceRef]] = {cloud: [] for cloud in clouds}
    without: dict[str, list[str]] = {cloud: [] for cloud in clouds}
    unreadable: list[SpaceRef] = []
    for space in spaces:
        space_id, space_name = space["Id"], space["Name"]
        wanted = selected is None or space_id in selected
        if not wanted and space_id not in must_read and all(holders.values()):
            continue
        try:
            pools = pools_of(space_id)
        except SpaceAccessError as exc:
            undecided = [names[c] for c in clouds if not holders[c]]
            if undecided:
                raise SharingError(
                    f"Cannot read the worker pools of space {space_name} ({space_id}): {exc}. It comes before "
                    f"the first space holding {', '.join(map(repr, undecided))}, so the initial space cannot be "
                    "decided. Grant the connection's user view access to it, or exclude it with target_spaces."
                ) from None
            if wanted:
                # Visited anyway, so that its own map index fails with the reason and can be re-run alone.
                unreadable.append({"id": space_id, "name": space_name, "pool_id": None, "error": str(exc)})
            continue
        for cloud in clouds:
            pool = next((p for p in pools if same_name(p.get("Name"), names[cloud])), None)
            if pool is None:
                if wanted:
                    without[cloud].append(space_name)
            elif pool.get("CanAddWorkers") is False or pool.get("WorkerPoolType") == "DynamicWorkerPool":
                if wanted:
                    without[cloud].append(f"{space_name} (pool is dynamic)")
            else:
                holders[cloud].append({"id": space_id, "name": space_name, "pool_id": pool["Id"]})

    plans: list[FleetPlan] = []
    for cloud in clouds:
        initial, pin = choose_initial_space(
            cloud,
            holders[cloud],
            pinned=pins.get(cloud),
            requested=requested,
            pool=names[cloud],
            prefix=prefix,
            follow_pin=follow_pins,
        )
        copies = [h for h in holders[cloud] if h["id"] != initial["id"]]
        plans.append(
            {
                "cloud": cloud,
                "prefix": prefix,
                "pool_name": names[cloud],
                "instance_count": instance_count[cloud],
                "name_prefix": fleet_name_prefix(prefix, cloud),
                "server_url": server_url,
                "initial_space": initial,
                "initial_selected": selected is None or initial["id"] in selected,
                "initial_pin": pin,
                "spaces": [h for h in copies if selected is None or h["id"] in selected] + list(unreadable),
                "spaces_without_pool": without[cloud],
                "spaces_not_selected": [h["name"] for h in copies if selected is not None and h["id"] not in selected],
            }
        )
    return plans


def spaces_to_visit(plans: Sequence[Mapping[str, Any]], *, include_initial: bool) -> list[SpaceVisit]:
    """The union of spaces the share step visits, in a stable order (by space id number).

    Each entry lists per cloud the pool to fill and the role: ``copy`` (remaining space: add the fleet) or
    ``initial`` (where the fleet registers itself: only pruned). Initial spaces are included only when
    ``include_initial`` (pruning) and ``target_spaces`` selects them, and only for the clouds whose initial
    space they are.
    """
    by_id: dict[str, SpaceVisit] = {}
    for plan in plans:
        entries = []
        if include_initial and plan.get("initial_selected", True):
            entries.append((plan["initial_space"], "initial"))
        entries += [(space, "copy") for space in plan["spaces"]]
        for space, role in entries:
            visit = by_id.setdefault(space["id"], {"id": space["id"], "name": space["name"], "pools": {}})
            visit["pools"][plan["cloud"]] = {"pool_id": space["pool_id"], "pool_name": plan["pool_name"], "role": role}
    return sorted(by_id.values(), key=lambda v: _id_number(v["id"]))


def check_map_length(count: int, limit: int, *, task_id: str) -> None:
    """Refuse, before anything is written, a run that maps more space indexes than Airflow allows.

    Airflow refuses to map an upstream list longer than ``[core] max_map_length`` (1024 by default; the
    Execution API checks it when the list is pushed) with a message that names neither the setting nor the
    numbers, after the fleets were built.
    """
    if count > limit:
        raise SharingError(
            f"{count} spaces to visit, one {task_id} index each, but Airflow maps at most {limit} "
            f"([core] max_map_length). Set AIRFLOW__CORE__MAX_MAP_LENGTH to at least {count} on every Airflow "
            "component (the api-server checks it, the workers read it here), or narrow target_spaces."
        )


def _id_number(resource_id: str) -> tuple[int, str]:
    prefix, _, number = resource_id.rpartition("-")
    return (int(number), prefix) if number.isdigit() else (0, resource_id)


# --------------------------------------------------------------------------- registration (wait)

#: The wait's first read again after this many seconds; the interval then doubles up to ``poll_interval``.
FIRST_POLL_SECONDS = 1.0


def next_poll_interval(waited: float, poll_interval: float) -> float:
    """Seconds until the wait reads the pool again, after ``waited`` seconds of waiting.

    Reads at 0, 1, 2, 4, 8 … seconds, then every ``poll_interval``: a fleet that registers within seconds of
    ``terraform apply`` (as a replaced or re-run fleet often does) is seen within a second or two, not a whole
    interval later, for a few extra reads while a slow fleet boots.
    """
    return min(poll_interval, max(FIRST_POLL_SECONDS, waited))


class Instance(TypedDict):
    name: str
    id: str


def _terraform_result(terraform_output: Any) -> dict[str, Any] | None:
    """``terraform_apply``'s XCom as a dict (a JSON line from older runs is decoded); ``None`` when absent."""
    if not terraform_output:
        return None
    if isinstance(terraform_output, str):
        import json

        return json.loads(terraform_output)
    return terraform_output


def instances_from(terraform_output: Any) -> list[Instance] | None:
    """The instances the cloud actually runs (``instances`` output of the module), from ``terraform_apply``'s XCom.

    ``None`` when the output is absent (a dry run plans only); a module with ``worker_names`` only gives names
    whose ids are the names themselves (no replacement can then be told apart).
    """
    terraform_output = _terraform_result(terraform_output)
    if terraform_output is None:
        return None
    outputs = terraform_output.get("outputs") or {}
    if "instances" in outputs:
        return [{"name": str(i["name"]), "id": str(i["id"])} for i in outputs["instances"] or []]
    if "worker_names" in outputs:
        # No per-instance id: a replacement cannot be told apart (id "" skips the ledger's instance checks).
        return [{"name": str(n), "id": ""} for n in outputs["worker_names"] or []]
    return None


def registered_before_from(terraform_output: Any) -> dict[str, str] | None:
    """What ``terraform_apply`` read in the initial pool before applying (see ``TerraformFleetOperator``)."""
    terraform_output = _terraform_result(terraform_output)
    if terraform_output is None:
        return None
    before = terraform_output.get("registered_before")
    return None if before is None else {str(k): str(v) for k, v in before.items()}


def instances_before_from(terraform_output: Any) -> list[Instance] | None:
    """The instances Terraform's state held before ``terraform_apply`` ran (``None`` when unknown)."""
    terraform_output = _terraform_result(terraform_output)
    if terraform_output is None:
        return None
    before = terraform_output.get("instances_before")
    return None if before is None else [{"name": str(i["name"]), "id": str(i["id"])} for i in before]


def registration_status(records: Sequence[Mapping[str, Any]], fleet_spec: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the fleet described by ``fleet_spec`` has registered, judged from one read of its initial pool.

    ``fleet_spec`` is JSON-able (it travels in a trigger's kwargs):

    * ``expected_count`` — the ``instance_count`` param: never more workers than this;
    * ``name_prefix`` — only to report look-alikes (records named like the fleet that are not in the inventory);
    * ``instances`` — ``[{"name", "id"}]`` the cloud runs (Terraform's inventory), or ``None`` when unknown;
    * ``previous`` — ``[{"name", "thumbprint", "instance_id"}]``, the fleet the ledger recorded last time, or
      ``None`` when it records none (first use, or the ledger was lost);
    * ``registered_before`` — with no ``previous``: ``{name: thumbprint}`` of the fleet-named records the initial
      pool held before this run's ``terraform apply`` (``None``: not read);
    * ``instances_before`` — the instances Terraform's state held before this run's apply (``None``: none known);
      with no ``previous``, only an instance this apply created must register again to count;
    * ``owned`` — the sealed thumbprints of the deployment's evidence (an adopted endpoint counts at once).

    A record counts for an instance only when it is a live polling record with exactly the instance's name and,
    if the ledger knew that name: a *replaced* instance (other id) must have re-registered with a new thumbprint
    (the old record stays Healthy until Octopus's next health check); an *unchanged* one must still have its
    recorded thumbprint (a record re-pointed by anyone else is suspicious, never shared).
    Returns ``{"done", "seen": {"workers", "waiting", "suspicious", "ignored"}, "summary"}``.
    """
    expected = int(fleet_spec["expected_count"])
    instances = fleet_spec.get("instances")
    previous = {p["name"].casefold(): p for p in fleet_spec.get("previous") or []}
    before = {n.casefold(): t.upper() for n, t in (fleet_spec.get("registered_before") or {}).items()}
    lost = fleet_spec.get("previous") is None
    adopted = {str(t).upper() for t in fleet_spec.get("owned") or []}
    kept_before = fleet_spec.get("instances_before")
    kept_ids = {str(i.get("id")) for i in kept_before or [] if i.get("id")}
    prefix = f"{fleet_spec['name_prefix']}-".casefold()
    by_name: dict[str, Mapping[str, Any]] = {}
    for record in records:
        by_name.setdefault((record.get("Name") or "").strip().casefold(), record)
    workers: list[dict[str, str]] = []
    waiting: list[str] = []
    suspicious: list[dict[str, str]] = []
    ignored: list[dict[str, str]] = []
    inventory = list(instances or [])[: max(expected, 0)] if instances is not None else []
    for instance in sorted(inventory, key=lambda i: i["name"]):
        record = by_name.get(instance["name"].casefold())
        if record is None:
            waiting.append(instance["name"])
            continue
        entry = _seen_entry(record)
        prior = previous.get(instance["name"].casefold())
        if not is_polling(record):
            suspicious.append({**entry, "why": "not a polling tentacle"})
        elif not entry["thumbprint"]:
            ignored.append({**entry, "why": "no thumbprint yet"})
            waiting.append(instance["name"])
        elif entry["health"] in STALE_HEALTH:
            ignored.append({**entry, "why": f"{entry['health']}: tentacle not connected"})
            waiting.append(instance["name"])
        elif (
            lost
            and instance["id"] not in kept_ids  # created by this run's apply (or the state knew no instances)
            and before.get(instance["name"].casefold()) == entry["thumbprint"]
            and entry["thumbprint"] not in adopted
        ):
            # No recorded fleet to compare with: a record that already carried this endpoint before the apply
            # may be a replaced instance's (Healthy until Octopus's next health check). Only a registration
            # made during this run proves the endpoint is the instance's now.
            ignored.append(
                {
                    **entry,
                    "why": "registered before this run's apply and the ledger records no fleet (lost or new): "
                    "waiting for the instance to register again, or adopt it (docs/ownership.md)",
                }
            )
            waiting.append(instance["name"])
        elif not instance["id"] or not prior:
            workers.append(_counted(instance, entry))
        elif prior.get("instance_id") != instance["id"] and prior["thumbprint"] == entry["thumbprint"]:
            ignored.append({**entry, "why": "record of the replaced instance: waiting for the new one to register"})
            waiting.append(instance["name"])
        elif prior.get("instance_id") == instance["id"] and prior["thumbprint"] != entry["thumbprint"]:
            suspicious.append(
                {
                    **entry,
                    "why": f"thumbprint changed from {prior['thumbprint'][:8]}… but the instance was not replaced",
                }
            )
            waiting.append(instance["name"])
        else:
            workers.append(_counted(instance, entry))
    names = {i["name"].casefold() for i in inventory}
    for record in records:
        name = (record.get("Name") or "").strip()
        if name.casefold().startswith(prefix) and name.casefold() not in names:
            suspicious.append({**_seen_entry(record), "why": "named like the fleet but not in the cloud's inventory"})
    wanted = min(expected, len(inventory))
    # An empty inventory where instances are expected is a cloud that runs nothing yet, not an empty fleet:
    # treating it as one would prune every copy.
    done = instances is not None and len(workers) >= wanted and (expected == 0 or bool(inventory))
    seen = {"workers": workers, "waiting": waiting, "suspicious": suspicious, "ignored": ignored}
    return {
        "done": done,
        "seen": seen,
        "summary": describe_registration(seen, wanted, inventory_known=instances is not None),
    }


def _counted(instance: Mapping[str, str], entry: Mapping[str, str]) -> dict[str, str]:
    return {
        "name": instance["name"],
        "thumbprint": entry["thumbprint"],
        "uri": entry["uri"],
        "instance_id": instance["id"],
    }


def _seen_entry(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        "name": (record.get("Name") or "").strip(),
        "thumbprint": thumbprint_of(record),
        "uri": (record.get("Endpoint") or {}).get("Uri") or "",
        "health": record.get("HealthStatus") or "Unknown",
    }


def describe_registration(seen: Mapping[str, Any], expected: int, *, inventory_known: bool = True) -> str:
    """One human line per record seen, for a sensor's progress log and timeout message."""
    if not inventory_known:
        return "the cloud's instance inventory is unknown (no Terraform outputs): nothing can be counted"
    lines = [f"{len(seen['workers'])} of {expected} workers of this fleet registered"]
    lines += [f"  + {w['name']} {w['thumbprint'][:8]}… {w['uri']}" for w in seen["workers"]]
    lines += [f"  . {n}: waiting for its registration" for n in seen.get("waiting", [])]
    lines += [f"  - {w['name']} {w['thumbprint'][:8]}… ignored: {w['why']}" for w in seen.get("ignored", [])]
    lines += [
        f"  ! {w['name']} {w['thumbprint'][:8]}… SUSPICIOUS, never shared: {w['why']}"
        for w in seen.get("suspicious", [])
    ]
    return "\n".join(lines)


def fleet_from(seen: Mapping[str, Any]) -> list[FleetWorker]:
    return [{"name": w["name"], "thumbprint": w["thumbprint"], "uri": w["uri"]} for w in seen["workers"]]


# --------------------------------------------------------------------------- sharing


def new_worker_body(space_id: str, worker: Mapping[str, str], pool_id: str, policy_id: str) -> dict[str, Any]:
    """The minimal POST body for a copy of a fleet worker: never copies server-managed fields."""
    return {
        "Name": worker["name"],
        "SpaceId": space_id,
        "IsDisabled": False,
        "MachinePolicyId": policy_id,
        "WorkerPoolIds": [pool_id],
        "Endpoint": {"CommunicationStyle": POLLING, "Uri": worker["uri"], "Thumbprint": worker["thumbprint"]},
    }


class _Writes:
    """One evolving body per record, whatever number of clouds touch it; then at most one write per record."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.originals = {r["Id"]: r for r in records}
        self.bodies: dict[str, dict[str, Any]] = {}
        self.touched: list[tuple[str, str, str, str]] = []  # (record id, cloud, outcome, reason), in order
        self.creates: list[dict[str, Any]] = []

    def body(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return self.bodies.get(record["Id"]) or copy.deepcopy(dict(record))

    def pools(self, record: Mapping[str, Any]) -> list[str]:
        return list(self.body(record).get("WorkerPoolIds") or [])

    def change(self, record: Mapping[str, Any], cloud: str, outcome: str, reason: str, **fields: Any) -> None:
        body = self.body(record)
        for key, value in fields.items():
            if key == "Endpoint":
                body["Endpoint"] = {**(body.get("Endpoint") or {}), **value}
            else:
                body[key] = value
        self.bodies[record["Id"]] = body
        self.touched.append((record["Id"], cloud, outcome, reason))

    def create(self, cloud: str, body: dict[str, Any], reason: str) -> None:
        self.creates.append({"op": "create", "cloud": cloud, "outcome": "added", "worker": body, "reason": reason})

    def actions(self) -> list[dict[str, Any]]:
        """The final writes: one per touched record (a delete when no pool is left), then the creates.

        The action's cloud and outcome are those of the first cloud that touched the record; the reasons of all.
        """
        actions: list[dict[str, Any]] = []
        for record_id in dict.fromkeys(t[0] for t in self.touched):
            body = self.bodies[record_id]
            touches = [t for t in self.touched if t[0] == record_id]
            _, cloud, outcome, _ = touches[0]
            reason = "; ".join(f"{t[1]}: {t[3]}" for t in touches)
            if body == self.originals[record_id]:
                continue
            if not body.get("WorkerPoolIds"):
                body = copy.deepcopy(dict(self.originals[record_id]))
                actions.append({"op": "delete", "cloud": cloud, "outcome": "pruned", "worker": body, "reason": reason})
            else:
                if outcome == "pruned":
                    outcome = "unshared"
                actions.append({"op": "update", "cloud": cloud, "outcome": outcome, "worker": body, "reason": reason})
        return actions + self.creates


def _thumbprints(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(e["thumbprint"]).upper() for e in entries if e.get("thumbprint")}


def plan_space(
    space: Mapping[str, Any],
    fleets: Mapping[str, Mapping[str, Any]],
    existing: Sequence[Mapping[str, Any]],
    *,
    prune: bool,
) -> dict[str, Any]:
    """Decide every write that makes ``space``'s shared pools hold exactly the current fleets, touching only ours.

    ``space`` is an entry of :func:`spaces_to_visit`; ``fleets`` maps cloud → :class:`Fleet` (clouds whose fleet
    is not ready are absent), whose ``owned`` holds only *verified* evidence (sealed thumbprints, see
    :mod:`octopus.ledger`); ``existing`` is this task try's own read of every worker of the space.
    Returns ``{"actions", "present": {cloud: n}, "errors": {cloud: [msg]}, "clashes": {cloud: [msg]},
    "not_run": [cloud], "foreign": {cloud: [name]}, "owned_remaining": {cloud: [OwnedRecord]},
    "ours_left": {cloud: n}, "notes": {cloud: [msg]}}``; creates carry ``MachinePolicyId: "<default>"`` (the
    caller looks the policy up only when a create is planned).

    A record is **ours** for a cloud when it is a polling record carrying a thumbprint of that cloud's evidence
    or current fleet — whatever its name. Per cloud (pool P):

    * copy role — each fleet worker: our record of its thumbprint is *present* (fixed by one PUT when outside
      P, disabled or its ``poll://`` URI is outdated; a name a space admin changed is left as they named it);
      a stale record of ours holding the worker's name is re-pointed in place (*replaced*, only with
      ``prune``); the name held by a record that is not ours is a *clash* (nothing written for that worker);
      else a minimal POST (*added*).
    * initial role — the fleet registered itself: nothing is added or repaired.
    * prune (``prune``, both roles) — records of ours in P that are not in the current fleet lose P: deleted when
      no pool is left (*pruned*), else PUT without P (*unshared*). Every other record in P is **foreign**: counted,
      listed, never touched.
    """
    records = [dict(r) for r in existing]
    writes = _Writes(records)
    present: dict[str, int] = {}
    errors: dict[str, list[str]] = {}
    clashes: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    foreign: dict[str, list[str]] = {}
    adoptable: dict[str, list[dict[str, str]]] = {}
    not_run: list[str] = []
    for cloud in sorted(space["pools"]):
        fleet = fleets.get(cloud)
        if fleet is None:
            not_run.append(cloud)
            continue
        visit = space["pools"][cloud]
        current = _thumbprints(fleet["workers"])
        owned = _thumbprints(fleet.get("owned") or []) | current
        present[cloud] = 0
        handled: set[str] = set()
        if visit["role"] == "copy":
            handled = _plan_copies(
                space, cloud, visit["pool_id"], fleet, records, owned, writes, present, clashes, notes, prune=prune
            )
        for record in records:
            key = record_key(record)
            if record["Id"] in handled or visit["pool_id"] not in writes.pools(record) or key in current:
                continue
            if prune and key in owned:
                others = [p for p in writes.pools(record) if p != visit["pool_id"]]
                writes.change(
                    record, cloud, "pruned", f"{record['Name']}: no longer in the fleet", WorkerPoolIds=others
                )
            elif key not in owned:
                foreign.setdefault(cloud, []).append(record.get("Name") or record["Id"])
                like = f"{fleet_name_prefix(fleet.get('prefix') or '', cloud)}-".casefold()
                if key and fleet.get("prefix") and (record.get("Name") or "").casefold().startswith(like):
                    adoptable.setdefault(cloud, []).append(
                        {"name": record["Name"], "thumbprint": key, "health": record.get("HealthStatus") or "Unknown"}
                    )
    actions = writes.actions()
    deleted = {a["worker"]["Id"] for a in actions if a["op"] == "delete"}
    remaining: dict[str, list[OwnedRecord]] = {}
    ours_left: dict[str, int] = {}
    for cloud, fleet in fleets.items():
        if cloud not in space["pools"]:
            continue
        current = _thumbprints(fleet["workers"])
        owned = _thumbprints(fleet.get("owned") or []) | current
        ours_left[cloud] = sum(1 for a in actions if a["op"] == "create" and a["cloud"] == cloud)
        for record in records:
            key = record_key(writes.body(record))  # a re-pointed record carries its new endpoint
            if key in owned and record["Id"] not in deleted:
                ours_left[cloud] += 1
                if key not in current:
                    remaining.setdefault(cloud, []).append({"name": record["Name"], "thumbprint": key})
    return {
        "actions": actions,
        "present": present,
        "errors": errors,
        "clashes": clashes,
        "notes": notes,
        "not_run": not_run,
        "foreign": {c: sorted(set(n)) for c, n in foreign.items()},
        "owned_remaining": remaining,
        "ours_left": ours_left,
        "adoptable": adoptable,
    }


def _plan_copies(
    space: Mapping[str, Any],
    cloud: str,
    pool_id: str,
    fleet: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    owned: set[str],
    writes: _Writes,
    present: dict[str, int],
    clashes: dict[str, list[str]],
    notes: dict[str, list[str]],
    *,
    prune: bool,
) -> set[str]:
    """The copy role of :func:`plan_space` for one cloud; returns the ids of the records it settled."""
    handled: set[str] = set()
    for worker in fleet["workers"]:
        thumbprint = worker["thumbprint"].upper()
        mine = [r for r in records if record_key(r) == thumbprint]
        if mine:
            record = next((r for r in mine if pool_id in writes.pools(r)), mine[0])
            handled.add(record["Id"])
            body = writes.body(record)
            if not same_name(record.get("Name"), worker["name"]):
                notes.setdefault(cloud, []).append(
                    f"{worker['name']}: renamed to {record.get('Name')!r} ({record['Id']}) in space {space['name']}; "
                    "still ours (same endpoint), left as named"
                )
            drift = []
            if pool_id not in writes.pools(record):
                drift.append(f"added to pool {pool_id}")
            if body.get("IsDisabled"):
                drift.append("was disabled")
            if (body.get("Endpoint") or {}).get("Uri") != worker["uri"]:
                drift.append(f"endpoint {(body.get('Endpoint') or {}).get('Uri')} -> {worker['uri']}")
            if drift:
                pools = writes.pools(record) + ([pool_id] if pool_id not in writes.pools(record) else [])
                writes.change(
                    record,
                    cloud,
                    "fixed",
                    f"{worker['name']}: " + ", ".join(drift),
                    WorkerPoolIds=pools,
                    IsDisabled=False,
                    Endpoint={"Uri": worker["uri"]},
                )
            else:
                present[cloud] += 1
            continue
        same_name_records = [r for r in records if same_name(r.get("Name"), worker["name"])]
        if same_name_records:
            record = same_name_records[0]
            ours = record_key(record) in owned
            if ours and prune:
                handled.add(record["Id"])
                pools = writes.pools(record) + ([pool_id] if pool_id not in writes.pools(record) else [])
                writes.change(
                    record,
                    cloud,
                    "replaced",
                    f"{worker['name']}: stale copy re-pointed",
                    WorkerPoolIds=pools,
                    IsDisabled=False,
                    Endpoint={"CommunicationStyle": POLLING, "Uri": worker["uri"], "Thumbprint": worker["thumbprint"]},
                    Thumbprint=worker["thumbprint"],
                    Uri=worker["uri"],
                )
                continue
            if ours:
                message = (
                    f"the name {worker['name']!r} is held in space {space['name']} by our stale copy "
                    f"{record['Id']}: enable prune_stale to re-point it"
                )
            else:
                message = (
                    f"the name {worker['name']!r} is taken in space {space['name']} by {record['Id']} (thumbprint "
                    f"{thumbprint_of(record) or 'none'}, pools {record.get('WorkerPoolIds')}), a machine this "
                    "deployment did not make: left alone, so this worker is not shared there. Rename or remove "
                    f"that machine in space {space['name']} (Infrastructure > Workers), then clear this index"
                )
            clashes.setdefault(cloud, []).append(message)
            continue
        writes.create(
            cloud, new_worker_body(space["id"], worker, pool_id, "<default>"), f"{worker['name']}: not in space"
        )
    return handled


# --------------------------------------------------------------------------- teardown


def plan_retire(
    space: Mapping[str, Any], fleets: Mapping[str, Mapping[str, Any]], existing: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Writes that remove the deployment's own records (its verified evidence) from ``space``'s shared pools.

    A record of ours that also belongs to other pools only loses the shared pool (*unshared*); every other record
    in a shared pool is foreign and untouched. Returns ``{"actions", "foreign": {cloud: [name]},
    "ours_left": {cloud: n}}`` (records of ours the space still holds once the actions are done: in other pools).
    """
    records = [dict(r) for r in existing]
    writes = _Writes(records)
    foreign: dict[str, list[str]] = {}
    for cloud in sorted(space["pools"]):
        fleet = fleets.get(cloud)
        if fleet is None:
            continue
        pool_id = space["pools"][cloud]["pool_id"]
        owned = _thumbprints(fleet.get("owned") or [])
        for record in records:
            if pool_id not in writes.pools(record):
                continue
            if record_key(record) in owned:
                others = [p for p in writes.pools(record) if p != pool_id]
                writes.change(record, cloud, "pruned", "retire", WorkerPoolIds=others)
            else:
                foreign.setdefault(cloud, []).append(record.get("Name") or record["Id"])
    actions = writes.actions()
    ours_left: dict[str, int] = {}
    notes: dict[str, list[str]] = {}
    for cloud in space["pools"]:
        pool_id = space["pools"][cloud]["pool_id"]
        owned = _thumbprints((fleets.get(cloud) or {}).get("owned") or [])
        ours = [r for r in records if record_key(r) in owned]
        ours_left[cloud] = sum(1 for r in ours if pool_id in writes.pools(r))
        notes[cloud] = [
            f"{r['Name']} ({r['Id']}) stays in other pools {writes.pools(r)}: someone else added it there"
            for r in ours
            if writes.pools(r) and pool_id not in writes.pools(r)
        ]
    return {
        "actions": actions,
        "foreign": {c: sorted(set(n)) for c, n in foreign.items()},
        "ours_left": ours_left,
        "notes": notes,
    }


# --------------------------------------------------------------------------- summary


def summarize(results: Iterable[Mapping[str, Any] | None], expected: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge per-space results into a spaces × clouds table of outcome counts.

    ``expected`` is the list of spaces the run mapped (``spaces_to_share``, or a retire phase's): a space of it
    with no result (its task failed before pushing one, or never ran) counts as failed for each of its clouds,
    the initial space's index included. A space whose only failures are clashes with a foreign machine holding
    our name is *blocked* (listed apart: no run of ours can fix it).
    """
    rows: dict[str, dict[str, Any]] = {}
    for result in results:
        if result:
            rows[result["space_id"]] = dict(result)
    for space in expected:
        if space["id"] not in rows:
            rows[space["id"]] = {
                "space_id": space["id"],
                "space_name": space["name"],
                "clouds": {c: {"failed": 1, "errors": ["task failed or did not run"]} for c in space["pools"]},
            }
    ordered = sorted(rows.values(), key=lambda r: _id_number(r["space_id"]))
    clouds = sorted({c for r in ordered for c in r["clouds"]})
    failed = [r["space_name"] for r in ordered if any(v.get("failed") for v in r["clouds"].values())]
    blocked = {
        r["space_name"]: [m for v in r["clouds"].values() for m in v.get("clashes") or []]
        for r in ordered
        if any(v.get("clashes") for v in r["clouds"].values())
        and all(
            not v.get("failed") or (v.get("clashes") and len(v.get("errors") or []) == 0) for v in r["clouds"].values()
        )
    }
    totals = {o: sum(r["clouds"].get(c, {}).get(o, 0) for r in ordered for c in clouds) for o in OUTCOMES}
    foreign = {r["space_name"]: sorted(r["foreign"]) for r in ordered if r.get("foreign")}
    adoptable = {
        r["space_name"]: [{**a, "cloud": c} for c, v in r["clouds"].items() for a in v.get("adoptable") or []]
        for r in ordered
        if any(v.get("adoptable") for v in r["clouds"].values())
    }
    return {
        "adoptable": adoptable,
        "spaces": ordered,
        "clouds": clouds,
        "failed_spaces": failed,
        "blocked_spaces": blocked,
        "totals": totals,
        "foreign": foreign,
    }


def compact_evidence(
    cloud: str,
    current: Sequence[Mapping[str, Any]],
    owned: Sequence[Mapping[str, Any]],
    recorded_spaces: Mapping[str, Mapping[str, Any]],
    results: Iterable[Mapping[str, Any] | None],
) -> tuple[list[str], list[str]]:
    """What the evidence of ``cloud`` may forget after a run: ``(thumbprints, space ids)`` proven gone.

    A space is forgotten only when this run read it (the whole space, every pool) and found no record of ours
    left there. An owned endpoint of an earlier fleet is forgotten only when every recorded space was read so
    and none still holds it. Whatever a run could not see — a space it could not read, did not visit (a
    ``target_spaces`` run, a pool renamed), or whose index failed before its read — stays.
    """
    read: dict[str, Mapping[str, Any]] = {}
    still: set[str] = set()
    for result in results:
        counts = ((result or {}).get("clouds") or {}).get(cloud) or {}
        if counts.get("read"):
            read[result["space_id"]] = counts
            still |= {str(r["thumbprint"]).upper() for r in (result.get("owned_remaining") or {}).get(cloud, [])}
    gone_spaces = [s for s in recorded_spaces if s in read and not read[s].get("ours_left")]
    if any(s not in read for s in recorded_spaces):
        return [], gone_spaces
    current_tps = {str(w["thumbprint"]).upper() for w in current}
    gone = [
        str(o["thumbprint"]).upper()
        for o in owned
        if str(o["thumbprint"]).upper() not in current_tps and str(o["thumbprint"]).upper() not in still
    ]
    return gone, gone_spaces


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as a fixed-width text table (spaces × clouds, then a total per cloud)."""
    clouds = summary["clouds"]

    def cell(counts: Mapping[str, Any] | None) -> str:
        if not counts:
            return "-"
        return ", ".join(f"{o} {counts[o]}" for o in OUTCOMES if counts.get(o)) or "nothing to do"

    header = ["space", *clouds]
    body = [
        [f"{row['space_name']} ({row['space_id']})", *(cell(row["clouds"].get(c)) for c in clouds)]
        for row in summary["spaces"]
    ]
    per_cloud = {
        c: {o: sum(r["clouds"].get(c, {}).get(o, 0) for r in summary["spaces"]) for o in OUTCOMES} for c in clouds
    }
    footer = ["total", *(cell(per_cloud[c]) for c in clouds)]
    widths = [max(len(r[i]) for r in [header, *body, footer]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, body), rule, line(footer)])
