"""Trigger that waits in the triggerer until a fleet's workers have registered in Octopus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from octopus.aio import AsyncOctopusClient
from octopus.sharing import next_poll_interval, registration_status


def legacy_fleet_spec(expected_count: int, name_prefix: str, expected_names: Sequence[str]) -> dict[str, Any]:
    """The ``fleet_spec`` of a trigger serialized before ``fleet_spec`` existed (count, prefix, names).

    Known names become the inventory as :func:`octopus.sharing.instances_from` reads a ``worker_names``-only
    output (ids are the names); without names the inventory is unknown.
    """
    names = [str(name) for name in expected_names]
    return {
        "expected_count": int(expected_count),
        "name_prefix": name_prefix,
        "expected_names": names,
        "instances": [{"name": name, "id": name} for name in names] if names else None,
        "previous": [],
    }


def check_registration(
    octopus_conn_id: str,
    space_id: str,
    pool_id: str,
    name_prefix: str | None = None,
    expected_names: Sequence[str] = (),
    *,
    fleet_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the pool's members (all pages) once and judge them with ``registration_status`` (blocking).

    Returns what the read saw (``registration_status``'s ``seen``) plus ``done``, ``summary`` and the raw
    ``records``, so that pruning the initial pool needs no second read. Without ``fleet_spec`` the fleet is
    ``expected_names`` named ``<name_prefix>-…``.
    """
    from octopus.hooks import OctopusHook

    spec = fleet_spec if fleet_spec is not None else legacy_fleet_spec(len(expected_names), name_prefix, expected_names)
    with OctopusHook(octopus_conn_id=octopus_conn_id) as hook:
        records = hook.list_workers(space_id, worker_pool_id=pool_id)
    status = registration_status(records, spec)
    return {**status["seen"], "done": status["done"], "summary": status["summary"], "records": records}


class OctopusWorkersRegisteredTrigger(BaseTrigger):
    """
    Poll an initial space's pool until the fleet's workers are registered.

    Yields one event: ``{"status": "success", "seen": ...}`` when the fleet is complete,
    ``{"status": "timeout", "seen": ..., "message": ...}`` at ``deadline`` (epoch seconds), or
    ``{"status": "error", "message": ...}`` when Octopus keeps failing. Every read, retry and wait is a coroutine
    (:class:`~octopus.aio.AsyncOctopusClient`, one per run, closed before the event is yielded), so a slow or
    retrying Octopus never stalls other triggers. Serializes no secret: only the connection id travels.

    :param octopus_conn_id: Airflow connection of the Octopus server.
    :param space_id: the initial space.
    :param pool_id: the pool the fleet registers into.
    :param expected_count: how many distinct workers make the fleet complete.
    :param name_prefix: fleet naming (``<prefix>-…``) when the cloud names its instances.
    :param expected_names: exact worker names, when Terraform knows them.
    :param poll_interval: seconds between reads.
    :param deadline: epoch seconds after which the wait gives up.
    :param fleet_spec: what "registered" means, as :func:`octopus.sharing.registration_status` takes it; when
        given it wins over ``expected_count``/``name_prefix``/``expected_names`` (kept for serialized triggers).
    """

    def __init__(
        self,
        *,
        octopus_conn_id: str,
        space_id: str,
        pool_id: str,
        expected_count: int | None = None,
        name_prefix: str | None = None,
        expected_names: Sequence[str] = (),
        poll_interval: float = 30.0,
        deadline: float,
        fleet_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if fleet_spec is None and (expected_count is None or name_prefix is None):
            raise TypeError("OctopusWorkersRegisteredTrigger needs fleet_spec, or expected_count and name_prefix")
        self.octopus_conn_id = octopus_conn_id
        self.space_id = space_id
        self.pool_id = pool_id
        self._explicit_spec = fleet_spec is not None
        spec = dict(fleet_spec) if fleet_spec is not None else {}
        self.expected_count = int(spec.get("expected_count", expected_count))
        self.name_prefix = spec.get("name_prefix", name_prefix)
        self.expected_names = list(spec.get("expected_names", expected_names) or ())
        self.fleet_spec = spec or legacy_fleet_spec(self.expected_count, self.name_prefix, self.expected_names)
        self.poll_interval = poll_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "octopus_conn_id": self.octopus_conn_id,
            "space_id": self.space_id,
            "pool_id": self.pool_id,
            "expected_count": self.expected_count,
            "name_prefix": self.name_prefix,
            "expected_names": self.expected_names,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
        }
        if self._explicit_spec:
            kwargs["fleet_spec"] = self.fleet_spec
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event: dict[str, Any]
        octopus = AsyncOctopusClient(self.octopus_conn_id)
        started = time.monotonic()
        try:
            while True:
                try:
                    records = await octopus.list_workers(self.space_id, worker_pool_id=self.pool_id)
                    status = registration_status(records, self.fleet_spec)
                except Exception as exc:  # the client already retried transient faults; report, don't crash
                    event = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
                    break
                if status["done"]:
                    event = {"status": "success", "seen": status["seen"]}
                    break
                self.log.info("%s", status["summary"])
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    event = {"status": "timeout", "seen": status["seen"], "message": status["summary"]}
                    break
                interval = next_poll_interval(time.monotonic() - started, self.poll_interval)
                await asyncio.sleep(min(interval, remaining))
        finally:  # also when the triggerer cancels the wait
            await octopus.aclose()
        yield TriggerEvent(event)
