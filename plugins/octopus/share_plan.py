"""The share plan: the writes that make one space's shared pools hold exactly the fleets (ownership by evidence)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from octopus.naming import POLLING, fleet_name_prefix, record_key, same_name, thumbprint_of
from octopus.shapes import Fleet, OwnedRecord, SpaceVisit


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


class RecordWrites:
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


def thumbprint_set(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(e["thumbprint"]).upper() for e in entries if e.get("thumbprint")}


def plan_space(
    space: SpaceVisit,
    fleets: Mapping[str, Fleet],
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
    * withdraw role — a space the access policy denies: nothing is added; every record of ours in P is pruned
      (whatever ``prune`` says; the caller holds a copy a step is running on, see ``operations.hold_leased``).
    * prune (``prune``, both roles) — records of ours in P that are not in the current fleet lose P: deleted when
      no pool is left (*pruned*), else PUT without P (*unshared*). Every other record in P is **foreign**: counted,
      listed, never touched.
    """
    records = [dict(r) for r in existing]
    writes = RecordWrites(records)
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
        withdraw = visit["role"] == "withdraw"
        current = set() if withdraw else thumbprint_set(fleet["workers"])
        owned = thumbprint_set(fleet.get("owned") or []) | thumbprint_set(fleet["workers"])
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
            if (prune or withdraw) and key in owned:
                others = [p for p in writes.pools(record) if p != visit["pool_id"]]
                why = "the access policy denies this space" if withdraw else "no longer in the fleet"
                writes.change(record, cloud, "pruned", f"{record['Name']}: {why}", WorkerPoolIds=others)
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
        current = set() if space["pools"][cloud]["role"] == "withdraw" else thumbprint_set(fleet["workers"])
        owned = thumbprint_set(fleet.get("owned") or []) | thumbprint_set(fleet["workers"])
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
    writes: RecordWrites,
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
        if worker.get("leaving"):
            # An outdated instance of a rebuild: drain_outdated takes it out; re-enabling or adding it here would
            # only hand new steps to a worker that is about to leave.
            handled.update(r["Id"] for r in mine)
            present[cloud] += 1 if any(pool_id in writes.pools(r) for r in mine) else 0
            continue
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
