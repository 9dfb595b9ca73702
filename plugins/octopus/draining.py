"""Draining: take a worker out of service without killing a deployment step (pure decisions, no I/O).

Octopus never makes a step wait for a worker, and a step whose worker vanishes fails. So whatever removes one of
our workers first **disables** its records (no new step is given to it, where Octopus honours that), then waits
until **no lease in any space holds it** — read twice, a poll apart — and only then deletes the records and
removes the instance. A worker shared into N spaces is N records: it is busy while any of them holds a lease.

Stale leases exist (they survive some cancelled tasks until a server restart): a lease whose server task has
completed and that was taken longer ago than a threshold is *stale* — reported, never waited on forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypedDict

from octopus import settings

#: A lease whose task has completed is stale once it is this old (its task could still be finishing before).
DEFAULT_STALE_AFTER_SECONDS: float = settings.seconds("stale_lease_minutes")
#: How long a drain waits for the steps on a worker to end before it fails (the ``drain_timeout_minutes`` param).
DEFAULT_DRAIN_TIMEOUT_MINUTES: float = settings.default("drain_timeout_minutes")
#: Seconds between the two reads that must both find no lease.
DEFAULT_SETTLE_SECONDS: float = settings.default("drain_settle_seconds")


class DrainRecord(TypedDict):
    """One record of ours being taken out of service, as ``disable_records`` leaves it."""

    space_id: str
    space_name: str
    id: str
    name: str
    thumbprint: str
    cloud: str


class Hold(TypedDict):
    """A lease that holds one of the records being drained."""

    space_id: str
    worker_id: str
    worker: str
    task: str
    taken_at: str
    stale: bool


def parse_octopus_date(value: str | None) -> datetime | None:
    """Octopus dates (``2026-12-06T01:10:26.736+00:00``) as aware datetimes; ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def holds(
    leases_by_space: Mapping[str, Sequence[Mapping[str, Any]]],
    records: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The leases (with the record they hold) that hold any of ``records`` (``{"space_id", "id", "name"}``)."""
    by_key = {(r["space_id"], r["id"]): r for r in records}
    found = []
    for space_id, leases in leases_by_space.items():
        for lease in leases:
            record = by_key.get((space_id, lease.get("WorkerId")))
            if record is not None:
                found.append({"lease": dict(lease), "record": dict(record)})
    return found


def classify(
    held: Sequence[Mapping[str, Any]],
    tasks: Mapping[str, Mapping[str, Any]],
    *,
    now: datetime,
    stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
) -> list[Hold]:
    """Each hold, stale or not: stale when its task has completed and the lease is older than ``stale_after``.

    A lease whose task could not be read, or whose age is unknown, is never stale: the drain waits for it.
    """
    result: list[Hold] = []
    for item in held:
        lease, record = item["lease"], item["record"]
        task = tasks.get(lease.get("ServerTaskId") or "") or {}
        taken = parse_octopus_date(lease.get("TakenAt"))
        old = taken is not None and (now - taken).total_seconds() >= stale_after
        result.append(
            {
                "space_id": record["space_id"],
                "worker_id": record["id"],
                "worker": record.get("name") or record["id"],
                "task": lease.get("ServerTaskId") or "?",
                "taken_at": lease.get("TakenAt") or "",
                "stale": bool(task.get("IsCompleted")) and old,
            }
        )
    return result


def describe_holds(holds_: Sequence[Hold], spaces: Mapping[str, str] | None = None) -> str:
    """One line per hold, for the log and for a timeout's message."""
    spaces = spaces or {}
    lines = []
    for hold in sorted(holds_, key=lambda h: (h["worker"], h["space_id"], h["task"])):
        where = spaces.get(hold["space_id"], hold["space_id"])
        kind = "STALE lease (its task has completed)" if hold["stale"] else "running"
        lines.append(f"{hold['worker']} in {where}: {hold['task']} since {hold['taken_at'] or '?'} ({kind})")
    return "; ".join(lines)


def drain_verdict(first: Sequence[Hold], second: Sequence[Hold] | None) -> str:
    """``"busy"`` while a non-stale lease holds a record; ``"settling"`` after one clear read; ``"drained"``
    once two reads a poll apart both found none (stale leases do not count)."""
    if any(not h["stale"] for h in first):
        return "busy"
    if second is None:
        return "settling"
    if any(not h["stale"] for h in second):
        return "busy"
    return "drained"


def _natural(name: str) -> tuple[Any, ...]:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def choose_leaving(workers: Sequence[Mapping[str, Any]], keep: int) -> list[dict[str, str]]:
    """The instances that leave when the fleet shrinks to ``keep``: the package picks them, never the cloud.

    The newest instances go first (the highest-numbered names, in natural order): the ones that have had the least
    time to be given long-running steps, and the ones a count-indexed module such as the local cloud drops.
    """
    if keep >= len(workers):
        return []
    ordered = sorted(workers, key=lambda w: _natural(w["name"]), reverse=True)
    return [{"name": w["name"], "thumbprint": str(w["thumbprint"]).upper()} for w in ordered[: len(workers) - keep]]


# ---- What a drain waited for: kept across the sensor's pokes (each poke of a rescheduled sensor is a new process)


def note_holds(
    log: Mapping[str, Any] | None, holds_: Sequence[Hold], now: datetime, workers: Iterable[str] = ()
) -> dict[str, Any]:
    """The drain's log with one more read of ``workers`` (the workers being drained): per worker, the steps seen
    holding it and when a read first found it free again after the last one that found it held.

    ``{"started": iso, "workers": {worker: {"tasks": [...], "last_held": iso, "free_at": iso | None}}}``; stale
    leases are not waited for, so they are not noted here (the result lists them apart).
    """
    stamp = now.isoformat()
    log = {"started": (log or {}).get("started") or stamp, "workers": dict((log or {}).get("workers") or {})}
    held = {h["worker"] for h in holds_ if not h["stale"]}
    for hold in holds_:
        if hold["stale"]:
            continue
        entry = dict(log["workers"].get(hold["worker"]) or {"tasks": []})
        entry["tasks"] = sorted({*entry["tasks"], hold["task"]})
        entry["last_held"], entry["free_at"] = stamp, None
        log["workers"][hold["worker"]] = entry
    for worker in set(workers) - held:
        entry = log["workers"].get(worker)
        if entry and not entry.get("free_at"):
            log["workers"][worker] = {**entry, "free_at": stamp}
    return log


def waited_per_worker(
    log: Mapping[str, Any] | None, workers: Iterable[str], now: datetime | None = None
) -> list[dict[str, Any]]:
    """Per worker being drained: how long the drain waited for it (from its first read until a read found it free
    after the last step on it ended; until ``now`` if none has yet; 0 when no read found a step on it) and for
    which steps. Sorted by worker name."""
    log = log or {}
    started = parse_octopus_date(log.get("started"))
    seen = log.get("workers") or {}
    result = []
    for worker in sorted(set(workers)):
        entry = seen.get(worker) or {}
        end = parse_octopus_date(entry.get("free_at")) or (now if entry.get("last_held") else None)
        waited = (end - started).total_seconds() if started and end else 0.0
        result.append(
            {"worker": worker, "waited_seconds": round(max(waited, 0.0), 1), "tasks": list(entry.get("tasks") or [])}
        )
    return result


def drain_label(
    cloud: str, what: str, state: str, *, count: int = 0, tasks: Sequence[str] = (), waited: float = 0
) -> str:
    """The grid's label of a per-cloud drain (its map index): ``aws: draining 2 (ServerTasks-12, …)``,
    ``aws: nothing leaves``, ``aws: drained 2 in 40s``. ``what`` names the instances (``leaving``, ``outdated``)."""
    if state == "nothing":
        return f"{cloud}: nothing {'leaves' if what == 'leaving' else what}"
    noun = f"{count} {what}" if what != "leaving" else str(count)
    if state == "busy":
        shown = ", ".join(list(tasks)[:2]) + (", …" if len(tasks) > 2 else "")
        return f"{cloud}: draining {noun}" + (f" ({shown})" if shown else "")
    if state == "forced":
        return f"{cloud}: FORCED {noun} after {waited:.0f}s"
    if state == "timeout":
        return f"{cloud}: drain of {noun} timed out after {waited:.0f}s"
    return f"{cloud}: drained {noun} in {waited:.0f}s"
