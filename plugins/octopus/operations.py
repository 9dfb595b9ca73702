"""The I/O side of sharing: read a space, carry out :func:`octopus.sharing.plan_space`, report per cloud.

Used by the DAG tasks and directly by benchmarks. The per-space share and the writes of a plan are written once, as
operations over the API core (:mod:`octopus.api`): :func:`share_steps` and :func:`execute_steps` yield the core's
effects, so the sync :class:`~octopus.hooks.OctopusHook` (a worker: threads) and the async
:class:`~octopus.aio.AsyncOctopusClient` (the triggerer: coroutines, :mod:`octopus.aoperations`) drive the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from octopus import settings
from octopus.api import OctopusApi, Operation, Parallel, parallel_map
from octopus.exceptions import OctopusError, OctopusNotFoundError, OctopusPermissionError, OctopusValidationError
from octopus.sharing import SpaceAccessError, plan_fleets, plan_retire, plan_space, record_key, same_name

if TYPE_CHECKING:
    from octopus.hooks import OctopusHook

__all__ = [
    "DEFAULT_PARALLELISM",
    "DISCOVERY_PARALLELISM",
    "disable_space",
    "discover",
    "execute_actions",
    "execute_steps",
    "log_space_result",
    "parallel_map",
    "retire_space",
    "share_space",
    "share_steps",
    "space_verdict",
]

log = logging.getLogger(__name__)

DEFAULT_PARALLELISM: int = settings.default("space_parallelism")
#: Pool listings in flight during discovery (``get_spaces``: one read per space, nothing written).
DISCOVERY_PARALLELISM: int = settings.default("discovery_parallelism")


def discover(
    hook: OctopusHook,
    *,
    clouds: Sequence[str],
    instance_count: Mapping[str, int],
    pool_name_template: str,
    target_spaces: Sequence[str] | None,
    name_prefix: str,
    parallelism: int = DISCOVERY_PARALLELISM,
    pins: Mapping[str, Mapping[str, Any] | None] | None = None,
    initial_space: str | None = None,
    follow_pins: bool = False,
    policy: Any = None,
) -> list[dict[str, Any]]:
    """Fleet plans for ``clouds`` (see :func:`octopus.sharing.plan_fleets`): one request for the spaces, one per
    space that matters for its pools, fetched concurrently."""
    spaces = hook.list_spaces()
    pools: dict[str, list[dict[str, Any]]] = {}

    def prefetch(space_ids: Sequence[str]) -> None:
        missing = [s for s in space_ids if s not in pools]
        for space_id, result in zip(missing, parallel_map(list_pools, missing, parallelism), strict=True):
            pools[space_id] = result

    def list_pools(space_id: str) -> list[dict[str, Any]] | OctopusPermissionError:
        try:
            return hook.list_worker_pools(space_id)
        except OctopusPermissionError as exc:  # one unreadable space must not stop every other one
            return exc

    # Spaces whose pools plan_fleets may ask for: all of them without targets; with targets it stops early,
    # so fetch lazily in that case (each space at most once either way).
    if not target_spaces:
        prefetch([s["Id"] for s in spaces])
    else:
        pinned = {p["id"] for p in (pins or {}).values() if p}
        prefetch([s["Id"] for s in spaces if s["Id"] in pinned])

    def pools_of(space_id: str) -> list[dict[str, Any]]:
        if space_id not in pools:
            prefetch([space_id])
        if isinstance(pools[space_id], OctopusPermissionError):
            raise SpaceAccessError(str(pools[space_id]))
        return pools[space_id]

    return plan_fleets(
        spaces,
        pools_of,
        clouds=clouds,
        instance_count=instance_count,
        pool_name_template=pool_name_template,
        target_spaces=target_spaces,
        name_prefix=name_prefix,
        server_url=hook.server_url,
        pins=pins,
        initial_space=initial_space,
        follow_pins=follow_pins,
        policy=policy,
    )


def resolve_unknown_pools(api: OctopusApi, space: Mapping[str, Any]) -> Operation:
    """Fill in pool ids that discovery could not read (the space answered 403 then): one more read.

    Clouds whose pool the space turns out not to have are dropped from the visit.
    """
    if all(p["pool_id"] for p in space["pools"].values()):
        return dict(space)
    return resolve_pools(space, (yield from api.list_worker_pools(space["id"])))


def resolve_pools(space: Mapping[str, Any], pools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``space`` with the pool ids it lacked found in ``pools`` (its worker pools); clouds without one dropped."""
    resolved = {}
    for cloud, entry in space["pools"].items():
        if entry["pool_id"]:
            resolved[cloud] = entry
            continue
        match = next((p for p in pools if same_name(p.get("Name"), entry["pool_name"])), None)
        if match is not None and match.get("CanAddWorkers") is not False:
            resolved[cloud] = {**entry, "pool_id": match["Id"]}
        else:
            log.warning("Space %s has no static pool %r: nothing to share there", space["name"], entry["pool_name"])
    return {**space, "pools": resolved}


def _empty_counts() -> dict[str, Any]:
    outcomes = ("added", "present", "fixed", "replaced", "pruned", "unshared", "draining", "disabled", "foreign")
    outcomes += ("retryable_errors",)
    return dict.fromkeys(outcomes, 0)


def share_space(
    hook: OctopusHook,
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    *,
    prune: bool,
    dry_run: bool,
    parallelism: int = DEFAULT_PARALLELISM,
) -> dict[str, Any]:
    """Make ``space`` hold exactly the ready ``fleets`` in its shared pools; return the per-cloud outcome
    (:func:`share_steps` on the sync hook, the writes on up to ``parallelism`` threads)."""
    return hook.drive(share_steps(hook.api, space, fleets, prune=prune, dry_run=dry_run, parallelism=parallelism))


def share_steps(
    api: OctopusApi,
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    *,
    prune: bool,
    dry_run: bool,
    parallelism: int = DEFAULT_PARALLELISM,
) -> Operation:
    """The per-space share, as an operation of the API core (both share modes drive this one).

    Cost: one read of the space's workers (every communication style: a listening worker in a pool is foreign,
    listed), made here so that every write rests on a read of this same task try; the space's leases only when a
    record would leave a pool; the default machine policy only when a worker must be added; then at most one
    request per record. A failure of one write marks its cloud failed and the others go on; the caller decides
    whether a result with failures fails the task.
    """
    by_cloud = {fleet["cloud"]: fleet for fleet in fleets}
    space = yield from resolve_unknown_pools(api, space)
    existing = yield from api.list_workers(space["id"])
    plan = plan_space(space, by_cloud, existing, prune=prune)
    if removes_records(plan):
        hold_leased(plan, existing, (yield from leases_or_none(api, space["id"])))
    clouds = initial_counts(space, plan)
    planned = _describe(plan["actions"])
    if not dry_run and needs_policy(plan):
        try:
            policy_id = (yield from api.get_default_machine_policy(space["id"]))["Id"]
        except OctopusError as exc:
            drop_creates(plan, clouds, exc)
        else:
            assign_policy(plan, policy_id)
    result = yield from _carry_out(
        api, space, plan["actions"], clouds, planned, dry_run=dry_run, parallelism=parallelism
    )
    return _with_ownership(result, plan)


def initial_counts(space: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per cloud of ``space``: the counts ``plan`` settles without a write (present, foreign, errors, not run).

    ``read`` says the space was read whole by this try (what lets the evidence forget a record it no longer
    holds); ``ours_left`` how many records of ours it still holds once the planned writes are done.
    """
    clouds: dict[str, dict[str, Any]] = {}
    for cloud in space["pools"]:
        counts = clouds[cloud] = _empty_counts()
        counts["present"] = plan["present"].get(cloud, 0)
        counts["foreign"] = len(plan["foreign"].get(cloud, []))
        counts["errors"] = list(plan["errors"].get(cloud, []))
        counts["clashes"] = list(plan.get("clashes", {}).get(cloud, []))
        counts["blocked"] = len(counts["clashes"])
        counts["notes"] = list(plan.get("notes", {}).get(cloud, []))
        counts["adoptable"] = list(plan.get("adoptable", {}).get(cloud, []))
        counts["read"] = cloud not in plan["not_run"]
        counts["ours_left"] = plan.get("ours_left", {}).get(cloud, 0)
        if cloud in plan["not_run"]:
            counts["not_run"] = 1
            counts["errors"].append("fleet not ready (terraform_apply or wait_for_workers failed): nothing shared")
    return clouds


def removes_records(plan: Mapping[str, Any]) -> bool:
    """Whether ``plan`` takes a record out of a pool (a prune: delete or unshare): only then are leases read."""
    return any(a["op"] == "delete" or a["outcome"] == "unshared" for a in plan["actions"])


def hold_leased(
    plan: dict[str, Any], existing: Sequence[Mapping[str, Any]], leases: Sequence[Mapping[str, Any]] | None
) -> None:
    """Drain rather than remove: a record a step holds now is only disabled (*draining*), never deleted or
    unshared under the step; a later run removes it once no lease holds it (and Octopus refuses a leased delete
    anyway). ``existing`` is this try's read of the space's workers, ``leases`` its read of the space's
    ``workertaskleases`` (``None``: the server has none, before Octopus 2024.2: the refusal is then the only
    guard)."""
    held = {lease.get("WorkerId") for lease in leases or []}
    for action in plan["actions"]:
        worker = action["worker"]
        if worker.get("Id") in held and (action["op"] == "delete" or action["outcome"] == "unshared"):
            original = next((r for r in existing if r["Id"] == worker["Id"]), worker)
            action["op"] = "update"
            action["outcome"] = "draining"
            action["worker"] = {**original, "IsDisabled": True}
            action["reason"] += "; a step holds it: disabled now, removed once no step does"
            plan.setdefault("draining", []).append(
                {"name": worker.get("Name"), "thumbprint": record_key(worker), "cloud": action["cloud"]}
            )
            ours_left = plan.setdefault("ours_left", {})
            ours_left[action["cloud"]] = ours_left.get(action["cloud"], 0) + 1  # it stays, for now


def needs_policy(plan: Mapping[str, Any]) -> bool:
    """Whether ``plan`` creates a worker (only then is the space's default machine policy looked up)."""
    return any(a["op"] == "create" for a in plan["actions"])


def drop_creates(plan: dict[str, Any], clouds: dict[str, dict[str, Any]], exc: OctopusError) -> None:
    """The policy lookup failed: each creating cloud records why, and the creates are dropped from ``plan``."""
    for cloud in {a["cloud"] for a in plan["actions"] if a["op"] == "create"}:
        clouds[cloud]["errors"].append(f"default machine policy lookup failed: {exc}")
        clouds[cloud]["retryable_errors"] += int(exc.retryable)
    plan["actions"] = [a for a in plan["actions"] if a["op"] != "create"]


def assign_policy(plan: Mapping[str, Any], policy_id: str) -> None:
    for action in plan["actions"]:
        if action["op"] == "create":
            action["worker"]["MachinePolicyId"] = policy_id


def leases_or_none(api: OctopusApi, space_id: str) -> Operation:
    """The space's lease read, or ``None`` where the server has no ``workertaskleases`` (404: before Octopus 2024.2)."""
    try:
        return (yield from api.list_worker_task_leases(space_id))
    except OctopusNotFoundError:
        log.warning("This Octopus Server lists no worker task leases (before 2024.2): a refused delete is the guard")
        return None


def _with_ownership(result: dict[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    """Add what the summary lists as foreign and what the ledger must keep (records of ours that remain)."""
    result["foreign"] = sorted({n for names in plan["foreign"].values() for n in names})
    remaining = {c: list(v) for c, v in plan.get("owned_remaining", {}).items()}
    for held in plan.get("draining", []):
        remaining.setdefault(held["cloud"], []).append({"name": held["name"], "thumbprint": held["thumbprint"]})
    for cloud, counts in result["clouds"].items():
        for worker in counts.pop("kept", []):
            remaining.setdefault(cloud, []).append(worker)
    result["owned_remaining"] = remaining
    return result


def execute_actions(
    hook: OctopusHook,
    space_id: str,
    actions: Sequence[dict[str, Any]],
    clouds: dict[str, dict[str, Any]],
    parallelism: int = DEFAULT_PARALLELISM,
    *,
    tolerate_refusal: Callable[[Mapping[str, Any]], bool] | None = None,
) -> None:
    """:func:`execute_steps` on the sync hook (up to ``parallelism`` threads)."""
    hook.drive(execute_steps(hook.api, space_id, actions, clouds, parallelism, tolerate_refusal=tolerate_refusal))


def execute_steps(
    api: OctopusApi,
    space_id: str,
    actions: Sequence[dict[str, Any]],
    clouds: dict[str, dict[str, Any]],
    parallelism: int = DEFAULT_PARALLELISM,
    *,
    tolerate_refusal: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Operation:
    """Carry out planned writes concurrently, counting each outcome (or error) into ``clouds[cloud]``.

    A delete Octopus refuses (a busy worker) disables the record instead, to be retried on the next run; with
    ``tolerate_refusal`` (a teardown, after its drain) a refusal fails the record unless ``tolerate_refusal``
    says it is expected (a proven-stale lease). A delete of a record that is already gone counts as done; a lost
    POST whose retry meets our own record counts as added.
    """
    writes = [_write(api, space_id, action, tolerate_refusal) for action in actions]
    for action, outcome, note, retryable in (yield Parallel(writes, parallelism)):
        count_outcome(clouds, action, outcome, note, retryable)


def _write(
    api: OctopusApi,
    space_id: str,
    action: dict[str, Any],
    tolerate_refusal: Callable[[Mapping[str, Any]], bool] | None,
) -> Operation:
    """One planned write: ``(action, outcome, note, retryable)``; never raises an Octopus error."""
    worker = action["worker"]
    try:
        if action["op"] == "create":
            try:
                yield from api.create_worker(space_id, worker)
            except OctopusValidationError:
                # A POST whose answer was lost may have been applied; its retry then meets our own record.
                mine = yield from api.list_workers(space_id, thumbprint=worker["Endpoint"]["Thumbprint"])
                if not created_already(worker, mine):
                    raise
                return action, "added", f"{worker['Name']}: created by an earlier attempt", False
        elif action["op"] == "update":
            yield from api.update_worker(space_id, worker)
        else:
            try:
                yield from api.delete_worker(space_id, worker["Id"])
            except OctopusNotFoundError:
                pass  # already gone: the goal is reached
            except OctopusValidationError as exc:
                if not worker.get("IsDisabled"):
                    yield from api.update_worker(space_id, {**worker, "IsDisabled": True})
                if tolerate_refusal is not None and not tolerate_refusal(worker):
                    note = (
                        f"delete {worker['Name']} refused ({exc.error_message}): a step took it after the drain; "
                        "left disabled and in place, its instance is not destroyed. Clear this task to drain again"
                    )
                    return action, "failed", note, False
                note = f"{worker['Name']}: delete refused ({exc.error_message}); disabled"
                return action, "disabled", note, False
        return action, action["outcome"], None, False
    except OctopusError as exc:
        return action, "failed", f"{action['op']} {worker.get('Name')}: {exc}", exc.retryable


def count_outcome(
    clouds: dict[str, dict[str, Any]], action: Mapping[str, Any], outcome: str, note: str | None, retryable: bool
) -> None:
    """Count one carried-out action's ``outcome`` (or its error ``note``) into ``clouds[action's cloud]``."""
    counts = clouds[action["cloud"]]
    if action["op"] == "delete" and outcome in ("failed", "disabled"):
        # The record stays: the ledger must go on owning it, or the next run could never remove it.
        worker = action["worker"]
        counts.setdefault("kept", []).append(
            {"name": worker["Name"], "thumbprint": (worker.get("Endpoint") or {}).get("Thumbprint", "").upper()}
        )
        counts["ours_left"] = counts.get("ours_left", 0) + 1
    if outcome == "failed":
        counts["errors"].append(note)
        counts["retryable_errors"] += int(retryable)
    else:
        counts[outcome] += 1
        if note:
            counts.setdefault("notes", []).append(note)


def created_already(body: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``workers`` (those with ``body``'s thumbprint) hold the record a lost POST of ``body`` made."""
    pool_id = body["WorkerPoolIds"][0]
    return any(pool_id in w.get("WorkerPoolIds", []) and w.get("Name") == body["Name"] for w in workers)


def disable_space(
    hook: OctopusHook, space: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *, dry_run: bool
) -> list[dict[str, Any]]:
    """The first step of a drain: disable every record of ours in ``space`` (any pool), so no new step takes it.

    Returns the records (:class:`octopus.draining.DrainRecord`) the drain then watches. One read, then one PUT
    per record not yet disabled (none in a dry run). A space that no longer exists holds nothing.
    """
    try:
        existing = hook.list_workers(space["id"])
    except OctopusNotFoundError:
        log.warning("Space %s (%s) no longer exists: nothing to disable there", space["name"], space["id"])
        return []
    records = []
    for fleet in fleets:
        owned = {str(o["thumbprint"]).upper() for o in fleet.get("owned") or []}
        for record in existing:
            if record_key(record) in owned and fleet["cloud"] in space["pools"]:
                records.append((fleet["cloud"], record))
    drained: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cloud, record in records:
        if record["Id"] in seen:
            continue
        seen.add(record["Id"])
        if not record.get("IsDisabled") and not dry_run:
            hook.update_worker(space["id"], {**record, "IsDisabled": True})
        log.info(
            "%s %s (%s) in %s", "would disable" if dry_run else "disabled", record["Name"], record["Id"], space["name"]
        )
        drained.append(
            {
                "space_id": space["id"],
                "space_name": space["name"],
                "id": record["Id"],
                "name": record["Name"],
                "thumbprint": record_key(record),
                "cloud": cloud,
            }
        )
    return drained


def retire_space(
    hook: OctopusHook,
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    *,
    dry_run: bool,
    parallelism: int = DEFAULT_PARALLELISM,
    stale_ids: Iterable[str] = (),
) -> dict[str, Any]:
    """Remove the ``fleets``' own records (their ledgers' ``owned`` lists) from ``space``'s shared pools.

    One read, then at most one write per record; foreign records are counted and left alone.
    """
    try:
        space = hook.drive(resolve_unknown_pools(hook.api, space))
        existing = hook.list_workers(space["id"])  # every style: a listening worker in a pool is foreign, listed
    except OctopusNotFoundError:
        log.warning("Space %s (%s) no longer exists: nothing of ours can be left there", space["name"], space["id"])
        existing, gone = [], True
    else:
        gone = False
    plan = plan_retire(space, {f["cloud"]: f for f in fleets}, existing)
    clouds = {cloud: {**_empty_counts(), "errors": [], "read": True} for cloud in space["pools"]}
    for cloud, counts in clouds.items():
        counts["foreign"] = len(plan["foreign"].get(cloud, []))
        counts["ours_left"] = plan["ours_left"].get(cloud, 0)
        counts["notes"] = list(plan["notes"].get(cloud, []))
        if gone:
            counts["notes"].append(f"space {space['id']} no longer exists: confirmed gone")
    actions = plan["actions"]
    stale = set(stale_ids)
    result = hook.drive(
        _carry_out(
            hook.api,
            space,
            actions,
            clouds,
            _describe(actions),
            dry_run=dry_run,
            parallelism=parallelism,
            tolerate_refusal=lambda worker: worker["Id"] in stale,
        )
    )
    return _with_ownership(result, {**plan, "owned_remaining": {}})


def _describe(actions: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{a['op']} {a['worker'].get('Name')} ({a['cloud']}): {a['reason']}" for a in actions]


def _carry_out(
    api: OctopusApi,
    space: Mapping[str, Any],
    actions: Sequence[dict[str, Any]],
    clouds: dict[str, dict[str, Any]],
    planned: list[str],
    *,
    dry_run: bool,
    parallelism: int,
    tolerate_refusal: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Operation:
    """Count the planned writes (``dry_run``) or execute them, and build the space's result."""
    if dry_run:
        count_planned(actions, clouds)
    else:
        yield from execute_steps(api, space["id"], actions, clouds, parallelism, tolerate_refusal=tolerate_refusal)
    return _result(space, clouds, planned, dry_run=dry_run)


def count_planned(actions: Sequence[Mapping[str, Any]], clouds: dict[str, dict[str, Any]]) -> None:
    """A dry run: count each planned action as if it had succeeded."""
    for action in actions:
        clouds[action["cloud"]][action["outcome"]] += 1


def _result(space: Mapping[str, Any], clouds: dict[str, dict[str, Any]], planned: list[str], *, dry_run: bool):
    for counts in clouds.values():
        counts["failed"] = 1 if (counts["errors"] or counts.get("clashes")) and not counts.get("not_run") else 0
    return {
        "space_id": space["id"],
        "space_name": space["name"],
        "dry_run": dry_run,
        "planned": planned,
        "clouds": clouds,
    }


def log_space_result(logger: Any, result: Mapping[str, Any]) -> None:
    """The lines a space's index logs, on a worker and in the triggerer alike."""
    for line in result["planned"]:
        logger.info("%s: %s", "would" if result["dry_run"] else "planned", line)
    for cloud, counts in result["clouds"].items():
        shown = {
            k: v
            for k, v in counts.items()
            if v and k not in ("errors", "retryable_errors", "clashes", "notes", "read", "ours_left", "adoptable")
        }
        logger.info("%s / %s: %s", result["space_name"], cloud, shown)
        for note in counts.get("notes") or []:
            logger.info("%s / %s: %s", result["space_name"], cloud, note)
    if result.get("foreign"):
        logger.info("Foreign, left alone: %s", ", ".join(result["foreign"]))
    for cloud, entries in (result.get("evidence_rejected") or {}).items():
        logger.warning(
            "%s: %d ledger entr%s IGNORED, the seal does not verify: %s",
            cloud,
            len(entries),
            "y" if len(entries) == 1 else "ies",
            ", ".join(f"{e.get('name') or '?'} ({str(e.get('thumbprint') or '')[:8]}…)" for e in entries),
        )


def space_verdict(result: Mapping[str, Any], verb: str) -> tuple[str | None, bool]:
    """``(message, retryable)`` of a space's result: ``(None, False)`` when every cloud succeeded.

    Errors a retry cannot fix (4xx other than 429, a name taken by a foreign machine) are not retryable; others
    (5xx, 429, an unreachable server, after the client's own retries) are.
    """
    failures = {c: v for c, v in result["clouds"].items() if v.get("failed")}
    if not failures:
        return None, False
    message = f"{verb} space {result['space_name']} ({result['space_id']}) failed: " + "; ".join(
        f"{cloud}: {' | '.join([*v.get('errors', []), *v.get('clashes', [])])}" for cloud, v in sorted(failures.items())
    )
    return message, any(v.get("retryable_errors") for v in failures.values())
