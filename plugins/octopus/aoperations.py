"""The async twin of :func:`octopus.operations.share_space`, for the share trigger: same reads, plan and counting.

Every decision is :func:`octopus.sharing.plan_space` and the pure helpers of :mod:`octopus.operations`; only the
I/O differs: :class:`~octopus.aio.AsyncOctopusClient` (the hook's retry, pacing, paging and error rules on
``httpx``), and a space's writes run as coroutines, at most ``parallelism`` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from octopus.exceptions import OctopusError, OctopusNotFoundError, OctopusValidationError
from octopus.operations import (
    DEFAULT_PARALLELISM,
    _describe,
    _result,
    _with_ownership,
    aleases_or_none,
    assign_policy,
    count_outcome,
    count_planned,
    created_already,
    drop_creates,
    hold_leased,
    initial_counts,
    needs_policy,
    removes_records,
    resolve_pools,
)
from octopus.sharing import plan_space

if TYPE_CHECKING:
    from octopus.aio import AsyncOctopusClient


async def gather_limited(fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any], parallelism: int) -> list[Any]:
    """``[await fn(i) for i in items]`` with up to ``parallelism`` in flight, results in order."""
    limit = asyncio.Semaphore(max(1, parallelism))

    async def one(item: Any) -> Any:
        async with limit:
            return await fn(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def resolve_unknown_pools(octopus: AsyncOctopusClient, space: Mapping[str, Any]) -> dict[str, Any]:
    """As :func:`octopus.operations.resolve_unknown_pools`: one more read only when discovery lacked a pool id."""
    if all(p["pool_id"] for p in space["pools"].values()):
        return dict(space)
    return resolve_pools(space, await octopus.list_worker_pools(space["id"]))


async def share_space(
    octopus: AsyncOctopusClient,
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    *,
    prune: bool,
    dry_run: bool,
    parallelism: int = DEFAULT_PARALLELISM,
) -> dict[str, Any]:
    """Make ``space`` hold exactly the ready ``fleets`` in its shared pools; return the per-cloud outcome.

    As :func:`octopus.operations.share_space`: one read of the space's workers (every communication style) by
    this try, the default machine policy only when a worker must be added, then at most one request per record.
    """
    by_cloud = {fleet["cloud"]: fleet for fleet in fleets}
    space = await resolve_unknown_pools(octopus, space)
    existing = await octopus.list_workers(space["id"])  # every style: a listening worker in a pool is foreign
    plan = plan_space(space, by_cloud, existing, prune=prune)
    if removes_records(plan):
        hold_leased(plan, existing, await aleases_or_none(lambda: octopus.list_worker_task_leases(space["id"])))
    clouds = initial_counts(space, plan)
    planned = _describe(plan["actions"])
    if not dry_run and needs_policy(plan):
        try:
            policy_id = (await octopus.get_default_machine_policy(space["id"]))["Id"]
        except OctopusError as exc:
            drop_creates(plan, clouds, exc)
        else:
            assign_policy(plan, policy_id)
    if dry_run:
        count_planned(plan["actions"], clouds)
    else:
        await execute_actions(octopus, space["id"], plan["actions"], clouds, parallelism)
    return _with_ownership(_result(space, clouds, planned, dry_run=dry_run), plan)


async def execute_actions(
    octopus: AsyncOctopusClient,
    space_id: str,
    actions: Sequence[dict[str, Any]],
    clouds: dict[str, dict[str, Any]],
    parallelism: int = DEFAULT_PARALLELISM,
) -> None:
    """As :func:`octopus.operations.execute_actions`: a refused delete disables the record (kept in the ledger),
    a delete of a record already gone counts as done, a lost POST's retry that meets our record counts as added."""

    async def run(action: dict[str, Any]) -> tuple[dict[str, Any], str, str | None, bool]:
        worker = action["worker"]
        try:
            if action["op"] == "create":
                try:
                    await octopus.create_worker(space_id, worker)
                except OctopusValidationError:
                    mine = await octopus.list_workers(space_id, thumbprint=worker["Endpoint"]["Thumbprint"])
                    if not created_already(worker, mine):
                        raise
                    return action, "added", f"{worker['Name']}: created by an earlier attempt", False
            elif action["op"] == "update":
                await octopus.update_worker(space_id, worker)
            else:
                try:
                    await octopus.delete_worker(space_id, worker["Id"])
                except OctopusNotFoundError:
                    pass  # already gone: the goal is reached
                except OctopusValidationError as exc:
                    if not worker.get("IsDisabled"):
                        await octopus.update_worker(space_id, {**worker, "IsDisabled": True})
                    note = f"{worker['Name']}: delete refused ({exc.error_message}); disabled"
                    return action, "disabled", note, False
            return action, action["outcome"], None, False
        except OctopusError as exc:
            return action, "failed", f"{action['op']} {worker.get('Name')}: {exc}", exc.retryable

    for action, outcome, note, retryable in await gather_limited(run, list(actions), parallelism):
        count_outcome(clouds, action, outcome, note, retryable)
