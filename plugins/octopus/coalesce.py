"""One read for many coroutines: concurrent callers asking for the same key share one call.

In the triggerer every Task SDK call (an XCom read, a Variable read) is one request to the triggerer's
supervisor, which serves one request per turn of its loop (``airflow/sdk/execution_time/supervisor.py``
``length_prefixed_frame_reader`` reads one frame per ``select``; the loop then does its own database work), so
a hundred share triggers each reading the same XCom queue behind each other. :class:`Coalescer` makes them ask
once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

__all__ = ["Coalescer"]


class _LeaderCancelled(Exception):
    """The coroutine doing a shared call was cancelled: a waiter makes the call itself."""


class Coalescer:
    """
    Share one call per key between concurrent callers.

    A caller whose key has a call in flight waits for that call's result (or exception) instead of making its
    own. A finished call's result is reused only for keys passed with ``keep=True``, until :meth:`clear` (or
    until ``max_kept`` newer results pushed it out): callers that need a value read no earlier than they asked
    pass ``keep=False``.

    The call runs in the first caller's own task (so it may use that task's context, e.g. greenback's portal);
    when that task is cancelled, a waiting caller makes the call again.
    """

    def __init__(self, max_kept: int = 256) -> None:
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}
        self._kept: dict[Hashable, Any] = {}  # oldest first
        self._max_kept = max_kept
        #: calls actually made, by the key's first element (``("xcom", ...)`` counts as ``"xcom"``)
        self.calls: dict[Any, int] = {}

    async def get(self, key: Hashable, call: Callable[[], Awaitable[Any]], *, keep: bool = False) -> Any:
        """The result of ``call()``, or of the call another caller is making for ``key``."""
        while True:
            if keep and key in self._kept:
                return self._kept[key]
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, call, keep=keep)
            try:
                return await asyncio.shield(flight)
            except _LeaderCancelled:
                continue

    async def _lead(self, key: Hashable, call: Callable[[], Awaitable[Any]], *, keep: bool) -> Any:
        flight: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        kind = key[0] if isinstance(key, tuple) and key else key
        self.calls[kind] = self.calls.get(kind, 0) + 1
        try:
            result = await call()
        except asyncio.CancelledError:
            flight.set_exception(_LeaderCancelled())
            raise
        except BaseException as error:
            flight.set_exception(error)
            raise
        else:
            if keep:
                self._kept[key] = result
                while len(self._kept) > self._max_kept:
                    del self._kept[next(iter(self._kept))]
            flight.set_result(result)
            return result
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if flight.done() and not flight.cancelled():
                flight.exception()  # retrieved: asyncio must not log it when nobody was waiting

    def clear(self) -> None:
        """Forget kept results (calls in flight still finish for their waiters)."""
        self._kept.clear()
