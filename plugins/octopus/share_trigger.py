"""Trigger that shares the fleets into one space, wholly in the triggerer (``share_to_space`` with
``start_from_trigger``): the ownership fences, one read, the plan, the writes, and the end of the task instance.

A share index then costs what its HTTP costs: no worker process, no DAG parse, no worker-side XCom round trips.
Every space of every run is a coroutine of the triggerer's one event loop.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.sdk.execution_time.xcom import XCom
from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSuccessEvent, TriggerEvent

from octopus import aoperations, ledger, operations, settings, tasks
from octopus.aio import AsyncOctopusClient
from octopus.coalesce import Coalescer
from octopus.exceptions import OctopusError
from octopus.sharing import DEFAULT_NAME_PREFIX, SharingError

#: Spaces one triggerer shares at once (all runs together), unless the trigger says otherwise: the start of a
#: trigger bypasses pools and ``max_active_tis_per_dagrun``, so this keeps Octopus's load as on workers.
DEFAULT_SPACES_AT_ONCE: int = settings.default("shares_at_once")


class _Gate:
    """Per event loop, while share triggers run: the slots of spaces shared at once, one open client per
    connection (one connection lookup, one HTTP pool, one pacing bucket), and the reads they share."""

    def __init__(self, slots: int) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.opening = asyncio.Lock()
        self.clients: dict[str, AsyncOctopusClient] = {}
        self.reads = Coalescer()
        self.active = 0

    async def idle(self) -> None:
        """The last share trigger ended: the next batch looks its connection up afresh and reads anew."""
        clients, self.clients = self.clients, {}
        self.reads.clear()
        for client in clients.values():
            await client.aclose()


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gate] = weakref.WeakKeyDictionary()


def _gate(slots: int) -> _Gate:
    loop = asyncio.get_running_loop()
    if loop not in _GATES:
        _GATES[loop] = _Gate(slots)
    return _GATES[loop]


class _UpstreamMissing(Exception):
    """An upstream XCom the share needs is not there: no retry brings it back."""


def _decoded(value: Any) -> Any:
    """A kwarg as rendered in the triggerer (a JSON string from ``| tojson``) or as given (tests, dag.test())."""
    return json.loads(value) if isinstance(value, str) else value


class OctopusShareSpaceTrigger(BaseTrigger):
    """
    Share the ready fleets into one space and end the task instance from the triggerer.

    Before the first write it checks, as the worker path does, that this run still holds each deployment's lease
    and that its fleet generation is current (the ledger, read through ``airflow.sdk.Variable`` from the
    triggerer). Ends with ``TaskSuccessEvent`` (XCom ``space_result``); on a retryable Octopus error it logs the
    error and yields ``TaskFailedEvent`` (Airflow then retries the index, again in the triggerer). An error no
    retry can fix (a fence refusal, a 4xx, a name taken by someone else, an upstream XCom missing) resumes the
    task on a worker with a ``{"status": "failed"}`` event, where ``execute_complete`` fails it without
    retries, as the worker path does.

    What a trigger reads through the triggerer's supervisor is shared by the share triggers of one triggerer:
    the upstream XComs once per run and try (a cleared index reads them again), each ledger once per read in
    flight (never a read that ended before the trigger asked), the connection once per batch.

    :param space: the space (an item of ``spaces_to_share``), or its JSON; ``None``: this index's item of
        ``upstream["spaces"]``'s XCom, read in the triggerer.
    :param fleets: the ``wait_for_workers`` XComs (a failed cloud's entry is ``None``), or their JSON; ``None``:
        ``run_settings["fleet_count"]`` XComs of ``upstream["fleets"]``, read in the triggerer.
    :param run_settings: ``{"dag_id", "run_id", "name_prefix", "dry_run", "prune_stale"[, "fleet_count"]}``,
        or its JSON.
    :param octopus_conn_id: Airflow connection of the Octopus server (the only thing of it that is serialized).
    :param parallelism: writes in flight within the space.
    :param spaces_at_once: spaces this triggerer shares at once; every share trigger of one triggerer also
        shares one client per connection, so one pacing bucket (``max_requests_per_minute`` holds for all of
        them together).
    :param upstream: the task ids ``{"spaces": ..., "fleets": ...}`` that ``space`` and ``fleets`` come from,
        taken from the DAG's own objects (``share_trigger_args(upstream=...)``); needed only when they are ``None``.
    """

    #: Where the fences read the ledger, and how they learn a lease holder's run state (tests replace them).
    store_factory: Any = ledger.VariableStore
    run_state: Any = staticmethod(tasks.run_state)

    def __init__(
        self,
        *,
        space: Mapping[str, Any] | str | None = None,
        fleets: Any = None,
        run_settings: Mapping[str, Any] | str,
        octopus_conn_id: str = settings.default("conn_id"),
        parallelism: int = aoperations.DEFAULT_PARALLELISM,
        spaces_at_once: int = DEFAULT_SPACES_AT_ONCE,
        upstream: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.fleets = fleets
        self.run_settings = run_settings
        self.octopus_conn_id = octopus_conn_id
        self.parallelism = parallelism
        self.spaces_at_once = spaces_at_once
        self.upstream = dict(upstream or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "space": self.space,
            "fleets": self.fleets,
            "run_settings": self.run_settings,
            "octopus_conn_id": self.octopus_conn_id,
            "parallelism": self.parallelism,
            "spaces_at_once": self.spaces_at_once,
            "upstream": self.upstream,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        settings = dict(_decoded(self.run_settings))
        dry_run = bool(settings.get("dry_run", False))
        gate = _gate(self.spaces_at_once)
        gate.active += 1
        try:
            event = await self._run(gate, settings, dry_run=dry_run)
        finally:
            gate.active -= 1
            if not gate.active:
                await gate.idle()
        yield event

    async def _run(self, gate: _Gate, settings: dict[str, Any], *, dry_run: bool) -> TriggerEvent:
        try:
            space, fleets = await self._upstream_values(gate, settings)
        except _UpstreamMissing as exc:
            self.log.error("%s", exc)
            return TriggerEvent({"status": "failed", "message": str(exc), "result": None})
        ready = tasks._ready_fleets(fleets)
        async with gate.slots:  # what Octopus sees: at most spaces_at_once spaces at a time
            try:
                docs = await self.acheck_fences(gate, space, ready, settings, dry_run=dry_run)
                result = await self._share(gate, space, ready, docs, settings, dry_run=dry_run)
            except (SharingError, ledger.LeaseError, ledger.EvidenceError) as exc:
                message = f"Sharing into space {space['name']} ({space['id']}) refused: {exc}"
                self.log.error("%s", message)
                return TriggerEvent({"status": "failed", "message": message, "result": None})
        return await self._end(result)

    async def _upstream_values(self, gate: _Gate, settings: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """The space and the fleets: as given, or this index's upstream XComs (read once for every index)."""
        space, fleets = _decoded(self.space), _decoded(self.fleets)
        if space is not None and fleets is not None:
            return dict(space), list(fleets)
        ti = self.task_instance
        if ti is None:
            raise _UpstreamMissing("a share trigger started without a task instance needs 'space' and 'fleets'")
        if set(self.upstream) != {"spaces", "fleets"}:
            raise _UpstreamMissing(
                f"a share trigger started from the scheduler needs upstream={{'spaces': ..., 'fleets': ...}} (the "
                f"task ids of the DAG's spaces list and registration wait), got {self.upstream!r}: build "
                "start_trigger_args with octopus.share_operator.share_trigger_args(conn_id, upstream=...)"
            )
        if space is None:
            spaces = await self._pull(gate, ti, self.upstream["spaces"], -1)
            if not isinstance(spaces, list) or not 0 <= ti.map_index < len(spaces):
                raise _UpstreamMissing(
                    f"index {ti.map_index} has no space in the XCom of {self.upstream['spaces']!r} (found "
                    f"{type(spaces).__name__}{f' of {len(spaces)}' if isinstance(spaces, list) else ''}): clear "
                    f"{self.upstream['spaces']!r} and its downstream tasks to re-run them"
                )
            space = copy.deepcopy(spaces[ti.map_index])  # the list is shared by every index: hand out a copy
        if fleets is None:
            count = int(settings.get("fleet_count") or 0)
            pulled = await asyncio.gather(*(self._pull(gate, ti, self.upstream["fleets"], i) for i in range(count)))
            fleets = copy.deepcopy(list(pulled))
        return dict(space), fleets

    async def _pull(self, gate: _Gate, ti: Any, task_id: str, map_index: int) -> Any:
        """One upstream XCom, read once per (run, try) by every share trigger of this triggerer."""
        key = ("xcom", ti.dag_id, ti.run_id, ti.try_number, task_id, map_index)
        return await gate.reads.get(
            key,
            lambda: XCom.aget_one(
                key="return_value", dag_id=ti.dag_id, task_id=task_id, run_id=ti.run_id, map_index=map_index
            ),
            keep=True,
        )

    async def acheck_fences(
        self,
        gate: _Gate,
        space: Mapping[str, Any],
        fleets: list[dict[str, Any]],
        settings: Mapping[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, ledger.LedgerDoc]:
        """:func:`octopus.ledger.check_fence` for each of the space's deployments (lease, epoch, fleet generation).

        Returns each ledger as read once the lease was confirmed. One fence of a run and cloud is evaluated for
        every trigger that asks while it is in flight, never reused once it has ended. A dry run only reads.
        """
        store = type(self).store_factory()
        ti = self.task_instance
        me = {
            "dag_id": settings["dag_id"],
            "run_id": settings["run_id"],
            "task": f"{ti.task_id}[{ti.map_index}]" if ti is not None else "share_to_space",
        }
        prefix = settings.get("name_prefix") or DEFAULT_NAME_PREFIX
        by_cloud = {f["cloud"]: f for f in fleets}
        clouds = [cloud for cloud in sorted(space["pools"]) if cloud in by_cloud]

        def read(cloud: str) -> Any:
            generation = by_cloud[cloud].get("generation")
            if dry_run:
                call = functools.partial(ledger.load, store, prefix, cloud)
            else:
                call = functools.partial(
                    ledger.check_fence, store, prefix, cloud, me, type(self).run_state, generation=generation
                )
            # a thread: the Task SDK's sync Variable calls bridge back to this loop from there
            key = ("fence", dry_run, settings["dag_id"], settings["run_id"], prefix, cloud, generation)
            return gate.reads.get(key, functools.partial(asyncio.to_thread, call))

        docs = await asyncio.gather(*(read(cloud) for cloud in clouds))
        return {cloud: copy.deepcopy(doc) for cloud, doc in zip(clouds, docs, strict=True)}

    async def _client(self, gate: _Gate) -> AsyncOctopusClient:
        """A client of its own (request count, retry log) on the connection, pool and bucket of this loop's."""
        async with gate.opening:
            shared = gate.clients.get(self.octopus_conn_id)
            if shared is None:
                shared = AsyncOctopusClient(
                    self.octopus_conn_id, pool_size=max(1, self.spaces_at_once) * max(1, self.parallelism)
                )
                await shared.__aenter__()
                gate.clients[self.octopus_conn_id] = shared
        return await shared.borrow()

    async def _share(
        self,
        gate: _Gate,
        space: dict[str, Any],
        ready: list[dict[str, Any]],
        docs: Mapping[str, Any],
        settings: Mapping[str, Any],
        *,
        dry_run,
    ) -> dict[str, Any]:
        client: AsyncOctopusClient | None = None
        rejected: dict[str, Any] = {}
        try:
            client = await self._client(gate)
            prepared, rejected = ledger.fleets_for_share(ready, docs, await client.evidence_signer(), dry_run=dry_run)
            result = await aoperations.share_space(
                client,
                space,
                prepared,
                prune=bool(settings.get("prune_stale", True)),
                dry_run=dry_run,
                parallelism=self.parallelism,
            )
        except OctopusError as exc:  # the first read (or the connection) failed: every cloud failed alike
            result = tasks._failed_result(space, exc, dry_run=dry_run)
        finally:
            if client is not None:
                await client.aclose()
        if rejected:
            result["evidence_rejected"] = rejected
        result["requests"] = client.request_count if client is not None else 0
        return result

    async def _end(self, result: dict[str, Any]) -> TriggerEvent:
        """Log the result as the worker path does, and the event that ends (or resumes) the task instance."""
        operations.log_space_result(self.log, result)
        self.log.info("%d Octopus requests", result["requests"])
        message, retryable = operations.space_verdict(result, "Sharing into")
        if message is None:
            return await self._end_task(TaskSuccessEvent, result)
        self.log.error("%s", message)
        if retryable:
            return await self._end_task(TaskFailedEvent, result)
        return TriggerEvent({"status": "failed", "message": message, "result": result})

    async def _end_task(self, event: type[TaskSuccessEvent | TaskFailedEvent], result: dict[str, Any]) -> TriggerEvent:
        """The end event, with ``space_result`` pushed as a worker pushes it.

        In the triggerer the XCom goes through the Task SDK's ``XCom.aset`` (the triggerer's comms, then the
        Execution API, as from a worker). Not the event's ``xcoms``: Airflow 3.3.2 stores those through the ORM's
        ``XComModel.set``, which JSON-encodes the value once more (``models/trigger.py``
        ``_push_xcoms_if_necessary``), so downstream tasks would pull a string. Not ``ti.xcom_push`` either: the
        triggerer's task instance carries a ``SerializedMappedOperator``, which lacks ``returns_dag_result``.
        Without a task instance (unit tests) the result travels in the event.
        """
        ti = self.task_instance
        if ti is None:
            return event(xcoms={tasks.SPACE_RESULT_KEY: result})
        await XCom.aset(
            key=tasks.SPACE_RESULT_KEY,
            value=result,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index,
        )
        return event()
