"""Pure decisions of the worker-sharing DAGs: no I/O, no Airflow imports, unit-testable without a server.

Shapes travel over XCom as plain JSON-able dicts:

* a **fleet plan** (one per cloud, from ``get_spaces``)::

    {"cloud": "aws", "pool_name": "AWS Worker Pool TF", "instance_count": 2, "name_prefix": "octo-aws",
     "initial_space": {"id": "Spaces-1", "name": "Default", "pool_id": "WorkerPools-1"},
     "spaces": [{"id": "Spaces-2", "name": "Team A", "pool_id": "WorkerPools-7"}, ...],
     "spaces_without_pool": ["Sandbox"], ...}

* a **fleet** (one per cloud, from ``wait_for_workers``)::

    {"cloud": "aws", "space_id": "Spaces-1", "pool_id": "WorkerPools-1",
     "workers": [{"name": "octo-aws-i-0abc", "thumbprint": "0E80...", "uri": "poll://.../"}]}

* an **action** (one per write, from :func:`plan_space`): ``{"op": "create"|"update"|"delete", "cloud": ...,
  "outcome": "added"|"fixed"|"replaced"|"pruned"|"unshared", "worker": <resource or body>, "reason": ...}``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

SUPPORTED_CLOUDS: dict[str, str] = {"aws": "AWS", "azure": "Azure", "gcp": "GCP", "local": "Local"}
DEFAULT_POOL_NAME_TEMPLATE = "{cloud} Worker Pool TF"
POLLING = "TentacleActive"
STALE_HEALTH = frozenset({"Unavailable"})
SPACE_ID_PATTERN = re.compile(r"^Spaces-\d+$", re.IGNORECASE)

# Outcomes counted per space and cloud in the summary, in display order.
OUTCOMES = ("added", "present", "fixed", "replaced", "pruned", "unshared", "disabled", "failed", "not_run")


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
        name = template.format(cloud=SUPPORTED_CLOUDS[cloud])
    except (KeyError, IndexError, ValueError) as exc:
        raise SharingError(
            f"worker_pool_name template {template!r} is invalid ({exc!r}); "
            "use {cloud} as the only placeholder, e.g. '{cloud} Worker Pool TF'"
        ) from None
    if not name.strip():
        raise SharingError(f"worker_pool_name template {template!r} gives an empty pool name for {cloud!r}")
    return name.strip()


def same_name(a: str | None, b: str | None) -> bool:
    """Octopus compares names trimmed and case-insensitively."""
    return (a or "").strip().casefold() == (b or "").strip().casefold()


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


def plan_fleets(
    spaces: Sequence[Mapping[str, Any]],
    pools_of: Callable[[str], Sequence[Mapping[str, Any]]],
    *,
    clouds: Sequence[str],
    instance_count: Mapping[str, int],
    pool_name_template: str = DEFAULT_POOL_NAME_TEMPLATE,
    target_spaces: Iterable[str] | None = None,
    name_prefix: str = "octopus-shared",
    server_url: str = "",
) -> list[dict[str, Any]]:
    """One fleet plan per cloud, sorted by cloud.

    ``spaces`` is in Octopus's order (the initial space is the first holding the pool); ``pools_of(space_id)``
    returns a space's worker pools and is called at most once per space, and only for spaces that can matter:
    every space until each cloud has its initial space, then only the selected ones.
    """
    if not spaces:
        raise SharingError("Octopus returned no spaces: check that the API key's user can see at least one space")
    clouds = sorted(set(clouds))
    if not clouds:
        raise SharingError("clouds is empty: select at least one of " + ", ".join(SUPPORTED_CLOUDS))
    names = {cloud: pool_name(cloud, pool_name_template) for cloud in clouds}
    for cloud in clouds:
        count = instance_count.get(cloud)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise SharingError(f"instance_count[{cloud!r}] must be an integer >= 0, got {count!r}")
    selected = resolve_targets(spaces, target_spaces)

    plans: dict[str, dict[str, Any]] = {
        cloud: {
            "cloud": cloud,
            "pool_name": names[cloud],
            "instance_count": instance_count[cloud],
            "name_prefix": f"{name_prefix}-{cloud}",
            "server_url": server_url,
            "initial_space": None,
            "spaces": [],
            "spaces_without_pool": [],
            "spaces_not_selected": [],
        }
        for cloud in clouds
    }
    for space in spaces:
        space_id, space_name = space["Id"], space["Name"]
        wanted = selected is None or space_id in selected
        if not wanted and all(plan["initial_space"] for plan in plans.values()):
            for plan in plans.values():
                plan["spaces_not_selected"].append(space_name)
            continue
        try:
            pools = pools_of(space_id)
        except SpaceAccessError as exc:
            undecided = [names[c] for c, plan in plans.items() if plan["initial_space"] is None]
            if undecided:
                raise SharingError(
                    f"Cannot read the worker pools of space {space_name} ({space_id}): {exc}. It comes before "
                    f"the first space holding {', '.join(map(repr, undecided))}, so the initial space cannot be "
                    "decided. Grant the connection's user view access to it, or exclude it with target_spaces."
                ) from None
            if wanted:
                # Visited anyway, so that its own map index fails with the reason and can be re-run alone.
                for plan in plans.values():
                    plan["spaces"].append({"id": space_id, "name": space_name, "pool_id": None, "error": str(exc)})
            continue
        for cloud, plan in plans.items():
            pool = next((p for p in pools if same_name(p.get("Name"), names[cloud])), None)
            if pool is None:
                if wanted:
                    plan["spaces_without_pool"].append(space_name)
                continue
            if pool.get("CanAddWorkers") is False or pool.get("WorkerPoolType") == "DynamicWorkerPool":
                plan["spaces_without_pool"].append(f"{space_name} (pool is dynamic)")
                continue
            entry = {"id": space_id, "name": space_name, "pool_id": pool["Id"]}
            if plan["initial_space"] is None:
                plan["initial_space"] = entry
            elif wanted:
                plan["spaces"].append(entry)
            else:
                plan["spaces_not_selected"].append(space_name)
    missing = [names[c] for c, plan in plans.items() if plan["initial_space"] is None]
    if missing:
        raise SharingError(
            "No space holds the worker pool "
            + ", ".join(repr(n) for n in missing)
            + f" (searched {len(spaces)} spaces). Create the pool (static) in the space the workers should "
            "register into, or fix the worker_pool_name param."
        )
    return [plans[c] for c in clouds]


def spaces_to_visit(plans: Sequence[Mapping[str, Any]], *, include_initial: bool) -> list[dict[str, Any]]:
    """The union of spaces the share step visits, in a stable order (by space id number).

    Each entry lists per cloud the pool to fill and the role: ``copy`` (remaining space: add the fleet) or
    ``initial`` (where the fleet registers itself: only pruned). Initial spaces are included only when
    ``include_initial`` (pruning), and only for the clouds whose initial space they are.
    """
    by_id: dict[str, dict[str, Any]] = {}
    for plan in plans:
        entries = [(plan["initial_space"], "initial")] if include_initial else []
        entries += [(space, "copy") for space in plan["spaces"]]
        for space, role in entries:
            visit = by_id.setdefault(space["id"], {"id": space["id"], "name": space["name"], "pools": {}})
            visit["pools"][plan["cloud"]] = {"pool_id": space["pool_id"], "pool_name": plan["pool_name"], "role": role}
    return sorted(by_id.values(), key=lambda v: _id_number(v["id"]))


def _id_number(resource_id: str) -> tuple[int, str]:
    prefix, _, number = resource_id.rpartition("-")
    return (int(number), prefix) if number.isdigit() else (0, resource_id)


# --------------------------------------------------------------------------- registration


def match_fleet(
    workers: Sequence[Mapping[str, Any]],
    *,
    name_prefix: str,
    expected_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Which of a pool's worker records belong to the current fleet.

    A record belongs when it is a polling worker named like the fleet (``expected_names`` when the cloud knows
    them, else ``<name_prefix>-…``) and is not ``Unavailable`` — a record whose tentacle is gone belongs to an
    earlier fleet. Distinct thumbprints count once. Returns ``{"workers": [...], "ignored": [...]}``.
    """
    expected = {n.casefold() for n in expected_names}
    prefix = f"{name_prefix}-".casefold()
    members: dict[str, dict[str, str]] = {}
    ignored: list[dict[str, str]] = []
    for worker in workers:
        endpoint = worker.get("Endpoint") or {}
        name = (worker.get("Name") or "").strip()
        thumbprint = (endpoint.get("Thumbprint") or worker.get("Thumbprint") or "").upper()
        health = worker.get("HealthStatus") or "Unknown"
        entry = {"name": name, "thumbprint": thumbprint, "uri": endpoint.get("Uri") or "", "health": health}
        named_like_fleet = name.casefold() in expected if expected else name.casefold().startswith(prefix)
        if endpoint.get("CommunicationStyle") != POLLING:
            ignored.append({**entry, "why": "not a polling tentacle"})
        elif not named_like_fleet:
            ignored.append({**entry, "why": "not named like this fleet"})
        elif health in STALE_HEALTH:
            ignored.append({**entry, "why": f"{health}: tentacle gone (earlier fleet)"})
        elif not thumbprint:
            ignored.append({**entry, "why": "no thumbprint"})
        elif thumbprint not in members:
            members[thumbprint] = {k: entry[k] for k in ("name", "thumbprint", "uri")}
    return {"workers": sorted(members.values(), key=lambda w: w["name"]), "ignored": ignored}


def describe_registration(seen: Mapping[str, Any], expected: int) -> str:
    """One human line per record seen, for a sensor's progress log and timeout message."""
    lines = [f"{len(seen['workers'])} of {expected} workers of this fleet registered"]
    lines += [f"  + {w['name']} {w['thumbprint'][:8]}… {w['uri']}" for w in seen["workers"]]
    lines += [f"  - {w['name']} {w['thumbprint'][:8]}… ignored: {w['why']}" for w in seen["ignored"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- sharing


def _thumbprint(worker: Mapping[str, Any]) -> str:
    endpoint = worker.get("Endpoint") or {}
    return (endpoint.get("Thumbprint") or worker.get("Thumbprint") or "").upper()


def _is_polling(worker: Mapping[str, Any]) -> bool:
    return (worker.get("Endpoint") or {}).get("CommunicationStyle") == POLLING


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


def _updated(record: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(dict(record))
    body.update(changes)
    return body


def plan_space(
    space: Mapping[str, Any],
    fleets: Mapping[str, Mapping[str, Any]],
    existing: Sequence[Mapping[str, Any]],
    *,
    prune: bool,
) -> dict[str, Any]:
    """Decide every write that makes ``space`` hold exactly the current fleets in its shared pools.

    ``space`` is an entry of :func:`spaces_to_visit`; ``fleets`` maps cloud → fleet (clouds whose fleet is not
    ready are absent); ``existing`` are the space's polling worker records. Returns ``{"actions": [...],
    "present": {cloud: n}, "errors": {cloud: [message]}, "not_run": [cloud]}``. Creates carry a body without
    ``MachinePolicyId`` (``"<default>"``): the caller looks the policy up only when a create is planned.

    Rules per cloud (pool P, fleet thumbprints F):

    * copy role — each fleet worker: a record with its thumbprint in P is *present* (a PUT fixes it when it is
      disabled or its ``poll://`` URI is outdated); a record with its thumbprint outside P gets P added
      (*fixed*); otherwise a stale record of ours in P with the same name is re-pointed in place (*replaced*,
      only with ``prune``); a same-named record that is not ours is an error; else a minimal POST (*added*).
    * prune (``prune``): records in P whose thumbprint is not in F — copy role: all of them; initial role: only
      ``Unavailable`` ones — are deleted (*pruned*), or, when they belong to other pools too, only P is removed
      from their ``WorkerPoolIds`` (*unshared*). Other pools and non-polling workers are never touched.
    """
    records = [dict(r) for r in existing]
    actions: list[dict[str, Any]] = []
    present: dict[str, int] = {}
    errors: dict[str, list[str]] = {}
    not_run: list[str] = []
    # Several clouds can touch one record (e.g. a worker in two shared pools): keep one evolving body per id.
    pending_updates: dict[str, dict[str, Any]] = {}

    def record_body(record: Mapping[str, Any]) -> dict[str, Any]:
        return pending_updates.get(record["Id"]) or _updated(record)

    def queue_update(body: dict[str, Any], cloud: str, outcome: str, reason: str) -> None:
        first = body["Id"] not in pending_updates
        pending_updates[body["Id"]] = body
        if first:
            actions.append({"op": "update", "cloud": cloud, "outcome": outcome, "worker": body, "reason": reason})
        else:
            for action in actions:
                if action["op"] == "update" and action["worker"]["Id"] == body["Id"]:
                    action["worker"] = body
                    action["reason"] += f"; {reason}"

    for cloud in sorted(space["pools"]):
        pool_id, role = space["pools"][cloud]["pool_id"], space["pools"][cloud]["role"]
        fleet = fleets.get(cloud)
        if fleet is None:
            not_run.append(cloud)
            continue
        fleet_workers = list(fleet["workers"])
        fleet_thumbprints = {w["thumbprint"].upper() for w in fleet_workers}
        consumed: set[str] = set()
        present[cloud] = 0

        if role == "copy":
            for worker in fleet_workers:
                tp = worker["thumbprint"].upper()
                with_tp = [r for r in records if _is_polling(r) and _thumbprint(r) == tp]
                in_pool = [r for r in with_tp if pool_id in record_body(r).get("WorkerPoolIds", [])]
                if in_pool:
                    record = in_pool[0]
                    consumed.add(record["Id"])
                    body = record_body(record)
                    drift = []
                    if body.get("IsDisabled"):
                        drift.append("was disabled")
                    if (body.get("Endpoint") or {}).get("Uri") != worker["uri"]:
                        drift.append(f"endpoint {body.get('Endpoint', {}).get('Uri')} -> {worker['uri']}")
                    if drift:
                        body = _updated(body, IsDisabled=False)
                        body["Endpoint"] = {**(body.get("Endpoint") or {}), "Uri": worker["uri"]}
                        queue_update(body, cloud, "fixed", f"{worker['name']}: " + ", ".join(drift))
                    else:
                        present[cloud] += 1
                    continue
                if with_tp:
                    record = with_tp[0]
                    consumed.add(record["Id"])
                    body = record_body(record)
                    body = _updated(body, WorkerPoolIds=[*body.get("WorkerPoolIds", []), pool_id], IsDisabled=False)
                    body["Endpoint"] = {**(body.get("Endpoint") or {}), "Uri": worker["uri"]}
                    queue_update(body, cloud, "fixed", f"{worker['name']}: added to pool {pool_id}")
                    continue
                same = [r for r in records if same_name(r.get("Name"), worker["name"])]
                if same:
                    record = same[0]
                    ours = (
                        _is_polling(record)
                        and pool_id in record_body(record).get("WorkerPoolIds", [])
                        and _thumbprint(record) not in fleet_thumbprints
                    )
                    if ours and prune:
                        consumed.add(record["Id"])
                        body = _updated(record_body(record), IsDisabled=False)
                        body["Endpoint"] = {
                            **(body.get("Endpoint") or {}),
                            "CommunicationStyle": POLLING,
                            "Uri": worker["uri"],
                            "Thumbprint": worker["thumbprint"],
                        }
                        queue_update(body, cloud, "replaced", f"{worker['name']}: stale copy re-pointed")
                        continue
                    errors.setdefault(cloud, []).append(
                        f"the name {worker['name']!r} is taken by {record['Id']} (thumbprint "
                        f"{_thumbprint(record) or 'none'}, pools {record.get('WorkerPoolIds')}) in space "
                        f"{space['name']}: rename or remove that machine"
                        + (" (or enable prune_stale to replace our stale copy)" if ours and not prune else "")
                    )
                    continue
                actions.append(
                    {
                        "op": "create",
                        "cloud": cloud,
                        "outcome": "added",
                        "worker": new_worker_body(space["id"], worker, pool_id, "<default>"),
                        "reason": f"{worker['name']}: not in space",
                    }
                )

        if not prune:
            continue
        for record in records:
            if record["Id"] in consumed or not _is_polling(record):
                continue
            body = record_body(record)
            if pool_id not in body.get("WorkerPoolIds", []) or _thumbprint(record) in fleet_thumbprints:
                continue
            if role == "initial" and record.get("HealthStatus") not in STALE_HEALTH:
                continue
            others = [p for p in body.get("WorkerPoolIds", []) if p != pool_id]
            if others:
                queue_update(_updated(body, WorkerPoolIds=others), cloud, "unshared", f"{record['Name']}: stale")
            else:
                actions.append({"op": "delete", "cloud": cloud, "outcome": "pruned", "worker": body, "reason": "stale"})
    return {"actions": actions, "present": present, "errors": errors, "not_run": not_run}


# --------------------------------------------------------------------------- teardown


def fleet_identity(workers: Sequence[Mapping[str, Any]], *, name_prefix: str) -> list[dict[str, str]]:
    """All polling records named like the fleet, whatever their health: the fleet a teardown removes."""
    prefix = f"{name_prefix}-".casefold()
    found: dict[str, dict[str, str]] = {}
    for worker in workers:
        name = (worker.get("Name") or "").strip()
        if _is_polling(worker) and name.casefold().startswith(prefix) and _thumbprint(worker):
            found.setdefault(
                _thumbprint(worker),
                {"name": name, "thumbprint": _thumbprint(worker), "uri": worker["Endpoint"].get("Uri") or ""},
            )
    return sorted(found.values(), key=lambda w: w["name"])


def plan_retire(
    space: Mapping[str, Any], fleets: Mapping[str, Mapping[str, Any]], existing: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Deletes that remove the fleets' records (matched by thumbprint) from ``space``'s shared pools.

    A record that also belongs to other pools only loses the shared pool (*unshared*); anything else in the
    space is untouched.
    """
    actions: list[dict[str, Any]] = []
    bodies: dict[str, dict[str, Any]] = {}
    for cloud in sorted(space["pools"]):
        fleet = fleets.get(cloud)
        if fleet is None:
            continue
        pool_id = space["pools"][cloud]["pool_id"]
        thumbprints = {w["thumbprint"].upper() for w in fleet["workers"]}
        for record in existing:
            body = bodies.get(record["Id"]) or _updated(record)
            if not _is_polling(record) or _thumbprint(record) not in thumbprints:
                continue
            if pool_id not in body.get("WorkerPoolIds", []):
                continue
            others = [p for p in body["WorkerPoolIds"] if p != pool_id]
            body["WorkerPoolIds"] = others
            if record["Id"] in bodies:
                continue  # already planned by another cloud; the body above now drops this pool too
            bodies[record["Id"]] = body
            op, outcome = ("update", "unshared") if others else ("delete", "pruned")
            actions.append({"op": op, "cloud": cloud, "outcome": outcome, "worker": body, "reason": "retire"})
    for action in actions:
        if action["op"] == "update" and not action["worker"]["WorkerPoolIds"]:
            action.update(op="delete", outcome="pruned")
    return actions


# --------------------------------------------------------------------------- summary


def summarize(results: Iterable[Mapping[str, Any] | None], plans: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge per-space results into a spaces × clouds table of outcome counts.

    A space of the plans with no result (its task failed or never ran) counts as failed for each of its clouds.
    """
    rows: dict[str, dict[str, Any]] = {}
    for result in results:
        if result:
            rows[result["space_id"]] = dict(result)
    expected = spaces_to_visit(plans, include_initial=False)
    for space in expected:
        if space["id"] not in rows:
            rows[space["id"]] = {
                "space_id": space["id"],
                "space_name": space["name"],
                "clouds": {c: {"failed": 1, "errors": ["share task failed or did not run"]} for c in space["pools"]},
            }
    ordered = sorted(rows.values(), key=lambda r: _id_number(r["space_id"]))
    clouds = sorted({c for r in ordered for c in r["clouds"]})
    failed = [r["space_name"] for r in ordered if any(v.get("failed") for v in r["clouds"].values())]
    totals = {o: sum(r["clouds"].get(c, {}).get(o, 0) for r in ordered for c in clouds) for o in OUTCOMES}
    return {"spaces": ordered, "clouds": clouds, "failed_spaces": failed, "totals": totals}


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


# --------------------------------------------------------------------------- registration status (wait)


def registration_status(records: Sequence[Mapping[str, Any]], fleet_spec: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the fleet described by ``fleet_spec`` has registered, judged from one read of its initial pool.

    ``fleet_spec`` is JSON-able (it travels in a trigger's kwargs): ``expected_count``, ``name_prefix`` and
    ``expected_names``. Returns ``{"done": bool, "seen": <JSON-able, what the sensor pushes>, "summary": str}``.
    """
    seen = match_fleet(
        records, name_prefix=fleet_spec["name_prefix"], expected_names=fleet_spec.get("expected_names") or ()
    )
    expected = int(fleet_spec["expected_count"])
    return {
        "done": len(seen["workers"]) >= expected,
        "seen": {**seen, "records": list(records)},
        "summary": describe_registration(seen, expected),
    }
