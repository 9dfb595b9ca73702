"""Trigger that waits in the triggerer until a fleet's workers have registered in Octopus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from octopus import settings
from octopus.aio import AsyncOctopusClient
from octopus.sharing import next_poll_interval, registration_status


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
    :param fleet_spec: what "registered" means, as :func:`octopus.sharing.registration_status` takes it (the
        sensor's :meth:`~octopus.sensors.OctopusWorkersRegisteredSensor.fleet_spec`: plain JSON).
    :param poll_interval: seconds between reads.
    :param deadline: epoch seconds after which the wait gives up.
    """

    def __init__(
        self,
        *,
        octopus_conn_id: str,
        space_id: str,
        pool_id: str,
        fleet_spec: dict[str, Any],
        poll_interval: float = settings.default("poll_interval_seconds"),
        deadline: float,
    ) -> None:
        super().__init__()
        self.octopus_conn_id = octopus_conn_id
        self.space_id = space_id
        self.pool_id = pool_id
        self.fleet_spec = dict(fleet_spec)
        self.poll_interval = poll_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "octopus_conn_id": self.octopus_conn_id,
            "space_id": self.space_id,
            "pool_id": self.pool_id,
            "fleet_spec": self.fleet_spec,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
        }

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
