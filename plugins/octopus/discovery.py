"""Discovery: which spaces hold each cloud's pool, the pinned initial space, the spaces a run visits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from octopus.access_policy import AccessPolicy, allows, explain
from octopus.errors import SharingError, SpaceAccessError
from octopus.naming import (
    DEFAULT_NAME_PREFIX,
    DEFAULT_POOL_NAME_TEMPLATE,
    SUPPORTED_CLOUDS,
    fleet_name_prefix,
    pool_names,
    same_name,
    validate_prefix,
)
from octopus.shapes import FleetPlan, SpaceRef, SpaceVisit


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
    policy: AccessPolicy | None = None,
) -> list[FleetPlan]:
    """One fleet plan per cloud, sorted by cloud.

    ``spaces`` is in Octopus's order; ``pools_of(space_id)`` returns a space's worker pools and is called at most
    once per space, and only for spaces that can matter: every space until each cloud has met its first pool
    holder, the pinned and requested initial spaces, and the selected spaces. ``pins`` maps cloud → the
    deployment's pinned initial space (``{"id", "name", "pool_id"}``) from its ledger; ``initial_space`` is the
    param (a name or id) that moves it deliberately. ``policy`` (the access policy) keeps denied spaces out of
    ``spaces``: each is listed in ``spaces_denied``, where the share withdraws our copies (drained, never added).
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
    denied: dict[str, list[SpaceRef]] = {cloud: [] for cloud in clouds}
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
            elif policy is not None and not allows(policy, space):
                if wanted:
                    denied[cloud].append({"id": space_id, "name": space_name, "pool_id": pool["Id"]})
            else:
                holders[cloud].append({"id": space_id, "name": space_name, "pool_id": pool["Id"]})

    plans: list[FleetPlan] = []
    for cloud in clouds:
        pinned = pins.get(cloud)
        refused = next((d for d in denied[cloud] if pinned and d["id"] == pinned.get("id")), None)
        if refused is None and requested is not None and policy is not None and not allows(policy, requested):
            refused = {"id": requested["Id"], "name": requested["Name"], "pool_id": None}
        if refused is not None:
            raise SharingError(
                f"The {cloud} fleet's initial space {refused['name']} ({refused['id']}) is denied by the access "
                f"policy ({explain(policy, {'Id': refused['id'], 'Name': refused['name']})}): the fleet registers "
                "there. Allow it, or move the fleet first with the initial_space param to a space the policy allows."
            )
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
                "spaces_denied": denied[cloud],
            }
        )
    return plans


def spaces_to_visit(plans: Sequence[Mapping[str, Any]], *, include_initial: bool) -> list[SpaceVisit]:
    """The union of spaces the share step visits, in a stable order (by space id number).

    Each entry lists per cloud the pool to fill and the role: ``copy`` (remaining space: add the fleet) or
    ``initial`` (where the fleet registers itself: only pruned) or ``withdraw`` (a space the access policy denies:
    every copy of ours is pruned, none added). Initial spaces are included only when
    ``include_initial`` (pruning) and ``target_spaces`` selects them, and only for the clouds whose initial
    space they are.
    """
    by_id: dict[str, SpaceVisit] = {}
    for plan in plans:
        entries = []
        if include_initial and plan.get("initial_selected", True):
            entries.append((plan["initial_space"], "initial"))
        entries += [(space, "copy") for space in plan["spaces"]]
        entries += [(space, "withdraw") for space in plan.get("spaces_denied") or []]
        for space, role in entries:
            visit = by_id.setdefault(space["id"], {"id": space["id"], "name": space["name"], "pools": {}})
            visit["pools"][plan["cloud"]] = {"pool_id": space["pool_id"], "pool_name": plan["pool_name"], "role": role}
    return sorted(by_id.values(), key=lambda v: id_order(v["id"]))


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


def id_order(resource_id: str) -> tuple[int, str]:
    prefix, _, number = resource_id.rpartition("-")
    return (int(number), prefix) if number.isdigit() else (0, resource_id)
