"""The retire plan: the writes that take the deployment's own records out of one space's shared pools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from octopus.naming import record_key
from octopus.shapes import Fleet, SpaceVisit
from octopus.share_plan import RecordWrites, thumbprint_set


def plan_retire(
    space: SpaceVisit, fleets: Mapping[str, Fleet], existing: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Writes that remove the deployment's own records (its verified evidence) from ``space``'s shared pools.

    A record of ours that also belongs to other pools only loses the shared pool (*unshared*); every other record
    in a shared pool is foreign and untouched. Returns ``{"actions", "foreign": {cloud: [name]},
    "ours_left": {cloud: n}}`` (records of ours the space still holds once the actions are done: in other pools).
    """
    records = [dict(r) for r in existing]
    writes = RecordWrites(records)
    foreign: dict[str, list[str]] = {}
    for cloud in sorted(space["pools"]):
        fleet = fleets.get(cloud)
        if fleet is None:
            continue
        pool_id = space["pools"][cloud]["pool_id"]
        owned = thumbprint_set(fleet.get("owned") or [])
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
        owned = thumbprint_set((fleets.get(cloud) or {}).get("owned") or [])
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
