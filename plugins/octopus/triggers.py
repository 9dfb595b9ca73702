"""Trigger that waits in the triggerer until a fleet's workers have registered in Octopus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from octopus.sharing import describe_registration, match_fleet


def check_registration(
    octopus_conn_id: str,
    space_id: str,
    pool_id: str,
    name_prefix: str,
    expected_names: Sequence[str],
) -> dict[str, Any]:
    """Read the pool's members (all pages) once and match them against the fleet (blocking).

    The raw records come back too (``records``), so that pruning the initial pool needs no second read.
    """
    from octopus.hooks import OctopusHook

    hook = OctopusHook(octopus_conn_id=octopus_conn_id)
    workers = hook.list_workers(space_id, worker_pool_id=pool_id)
    return {**match_fleet(workers, name_prefix=name_prefix, expected_names=expected_names), "records": workers}


class OctopusWorkersRegisteredTrigger(BaseTrigger):
    """
    Poll an initial space's pool until ``expected_count`` workers of the fleet are registered.

    Yields one event: ``{"status": "success", "seen": ...}`` when enough workers are there,
    ``{"status": "timeout", "seen": ..., "message": ...}`` at ``deadline`` (epoch seconds), or
    ``{"status": "error", "message": ...}`` when Octopus keeps failing. Serializes no secret: only the
    connection id travels.

    :param octopus_conn_id: Airflow connection of the Octopus server.
    :param space_id: the initial space.
    :param pool_id: the pool the fleet registers into.
    :param expected_count: how many distinct workers make the fleet complete.
    :param name_prefix: fleet naming (``<prefix>-…``) when the cloud names its instances.
    :param expected_names: exact worker names, when Terraform knows them.
    :param poll_interval: seconds between reads.
    :param deadline: epoch seconds after which the wait gives up.
    """

    def __init__(
        self,
        *,
        octopus_conn_id: str,
        space_id: str,
        pool_id: str,
        expected_count: int,
        name_prefix: str,
        expected_names: Sequence[str] = (),
        poll_interval: float = 30.0,
        deadline: float,
    ) -> None:
        super().__init__()
        self.octopus_conn_id = octopus_conn_id
        self.space_id = space_id
        self.pool_id = pool_id
        self.expected_count = expected_count
        self.name_prefix = name_prefix
        self.expected_names = list(expected_names)
        self.poll_interval = poll_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "octopus_conn_id": self.octopus_conn_id,
                "space_id": self.space_id,
                "pool_id": self.pool_id,
                "expected_count": self.expected_count,
                "name_prefix": self.name_prefix,
                "expected_names": self.expected_names,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        check = sync_to_async(check_registration)
        seen: dict[str, Any] = {"workers": [], "ignored": []}
        while True:
            try:
                seen = await check(
                    self.octopus_conn_id, self.space_id, self.pool_id, self.name_prefix, self.expected_names
                )
            except Exception as exc:  # the hook already retried transient faults; report, don't crash
                yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                return
            if len(seen["workers"]) >= self.expected_count:
                yield TriggerEvent({"status": "success", "seen": seen})
                return
            self.log.info("%s", describe_registration(seen, self.expected_count))
            remaining = self.deadline - time.time()
            if remaining <= 0:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "seen": seen,
                        "message": describe_registration(seen, self.expected_count),
                    }
                )
                return
            await asyncio.sleep(min(self.poll_interval, remaining))
