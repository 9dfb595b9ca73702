"""Async Octopus Deploy client for triggers: the asynchronous transport of the Octopus API core on ``httpx``.

Routes, paging, id checks, typed errors, retries and pacing are :mod:`octopus.api`'s, the same code the sync
:class:`~octopus.hooks.OctopusHook` carries out; this client only carries out the core's effects: sends with
``httpx``, waits (backoff, ``Retry-After``, pacing) with ``asyncio.sleep``, so one slow or retrying Octopus never
delays another coroutine in the same loop, and runs parallel operations as coroutines. Same connection
(``octopus_default``, type ``http`` or ``octopus``; see :mod:`octopus.hooks`), fetched with
``BaseHook.aget_connection`` (sync lookups block the triggerer's event loop), same extras (other extras become
headers), and the key only ever in the ``X-Octopus-ApiKey`` header. Redirects are refused, naming the target.

Use one client per trigger run or task, as an async context manager; it owns one ``httpx.AsyncClient``::

    async with AsyncOctopusClient("octopus_default") as octopus:
        workers = await octopus.list_workers("Spaces-1", worker_pool_id="WorkerPools-2")
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from airflow.providers.http.hooks.http import _process_extra_options_from_connection
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from octopus.api import (
    OWN_EXTRAS,
    Connect,
    OctopusApi,
    Operation,
    Pace,
    Parallel,
    Request,
    Response,
    Send,
    Sleep,
    Step,
    Transport,
    Unreachable,
    bind_operations,
    config_error,
    missing_connection,
    tuning_overrides,
)
from octopus.exceptions import OctopusError
from octopus.hooks import OctopusHook
from octopus.ledger import Signer
from octopus.pacing import TokenBucket

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["AsyncOctopusClient", "driven", "gather_limited"]

log = logging.getLogger(__name__)


async def gather_limited(fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any], parallelism: int) -> list[Any]:
    """``[await fn(i) for i in items]`` with up to ``parallelism`` in flight, results in order."""
    limit = asyncio.Semaphore(max(1, parallelism))

    async def one(item: Any) -> Any:
        async with limit:
            return await fn(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def driven(operation: Callable[..., Operation], name: str | None = None) -> Callable[..., Awaitable[Any]]:
    """A coroutine function running ``operation`` (a function of the core's :class:`~octopus.api.OctopusApi` and
    arguments, returning an operation) on the client passed first: a method, or a module function over a client."""

    async def run(client: AsyncOctopusClient, *args: Any, **kwargs: Any) -> Any:
        return await client.drive(operation(client.api, *args, **kwargs))

    functools.update_wrapper(run, operation)
    if name is not None:
        run.__name__ = run.__qualname__ = name
    return run


@bind_operations(driven)
class AsyncOctopusClient(Transport):
    """
    Talk to the Octopus Deploy REST API from a coroutine; every method returns Octopus's resources as plain dicts.

    The calls are those of :class:`~octopus.hooks.OctopusHook` (the core's :data:`octopus.api.OPERATIONS`, same
    names, signatures and docstrings), awaited; :meth:`drive` runs any other operation written over the core.
    Arguments are the hook's (and override the connection's extras the same way). The connection is looked up on
    first use (or on ``async with``); a closed client cannot be reused.

    :param octopus_conn_id: Airflow connection of the Octopus server.
    :param pacing: a :class:`~octopus.pacing.TokenBucket` shared with other clients or hooks of the same user.
    :param transport: an ``httpx.AsyncBaseTransport`` (tests); default: httpx's own.
    :param pool_size: connections kept to the server (httpx's defaults when not given): size it for the
        requests in flight of every client that :meth:`borrow` s this one.
    """

    def __init__(
        self,
        octopus_conn_id: str = OctopusHook.default_conn_name,
        *,
        page_size: int | None = None,
        max_requests_per_minute: float | None = None,
        max_attempts: int | None = None,
        max_retry_seconds: float | None = None,
        retry_initial_wait: float | None = None,
        retry_max_wait: float | None = None,
        timeout: float | None = None,
        pacing: TokenBucket | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        pool_size: int | None = None,
    ) -> None:
        overrides = tuning_overrides(locals())
        # Validates the keyword arguments now, as the hook does.
        self._api = OctopusApi(octopus_conn_id, overrides, pacing=pacing, log=log)
        self.octopus_conn_id = octopus_conn_id
        self.log = log
        self._transport = transport
        self._connection: Connection | None = None
        self._client: httpx.AsyncClient | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False
        self._borrowed = False
        self._pool_size = pool_size

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran (``async with`` calls it)."""
        return self._closed

    @property
    def server_url(self) -> str:
        """The server's base URL (known once the client is open)."""
        return self._api.base_url

    @property
    def pacing(self) -> TokenBucket | None:
        """The client-side token bucket, when ``max_requests_per_minute`` is set (known once open)."""
        return self._api.bucket

    async def _aclient(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("this AsyncOctopusClient is closed; create a new one")
        if self._client is not None:
            return self._client
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is None:
                self._client = await self._open()
        return self._client

    async def _open(self) -> httpx.AsyncClient:
        try:
            connection = await BaseHook.aget_connection(self.octopus_conn_id)
        except AirflowNotFoundException:
            raise missing_connection(self.octopus_conn_id) from None
        api = self._api
        api.configure(connection)  # the core's checks and messages
        self._connection = connection
        header_extras, merged = _process_extra_options_from_connection(connection, {})
        headers = {str(k): str(v) for k, v in header_extras.items() if k not in OWN_EXTRAS}
        headers.update(api.headers())
        if merged.get("cert"):
            raise config_error(self.octopus_conn_id, "extra 'cert' is not supported by the async Octopus client")
        mounts = None
        proxies = merged.get("proxy")
        if proxies:
            if not isinstance(proxies, Mapping):
                raise config_error(self.octopus_conn_id, "extra 'proxies' must map URL schemes to proxy URLs")
            mounts = {
                f"{scheme.split('://')[0]}://": httpx.AsyncHTTPTransport(proxy=url, verify=api.verify)
                for scheme, url in proxies.items()
            }
        assert api.settings is not None
        return httpx.AsyncClient(
            headers=headers,
            verify=api.verify,
            timeout=httpx.Timeout(api.settings.timeout),
            follow_redirects=False,
            trust_env=bool(merged.get("trust_env", True)),
            transport=self._transport,
            mounts=mounts,
            limits=(
                httpx.Limits(max_connections=self._pool_size, max_keepalive_connections=self._pool_size)
                if self._pool_size
                else httpx.Limits()  # httpx's defaults
            ),
        )

    async def evidence_signer(self) -> Signer:
        """As :meth:`octopus.hooks.OctopusHook.evidence_signer`, on this client's connection (opened if needed)."""
        await self._aclient()
        return self._api.signer()

    async def borrow(self) -> AsyncOctopusClient:
        """A client on this one's connection, HTTP pool and pacing bucket, with its own request count and retry
        log; closing it leaves this one open. Opens this client first if needed (one connection lookup)."""
        http = await self._aclient()
        twin = AsyncOctopusClient(self.octopus_conn_id, **self._api.overrides, pacing=self.pacing)
        twin._api.configure(self._connection)  # the same checks, on the connection already fetched
        twin._connection, twin._client, twin._borrowed = self._connection, http, True
        return twin

    async def aclose(self) -> None:
        """Close the HTTP client and its pooled connections."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None and not self._borrowed:
            await client.aclose()

    async def __aenter__(self) -> AsyncOctopusClient:
        await self._aclient()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ the transport

    async def drive(self, operation: Operation) -> Any:
        """Run one operation of the API core (:mod:`octopus.api`) on this client and return its result."""
        step = Step(operation)
        while not step.done:
            step.send(await self._perform(step.effect))
        return step.value

    async def _perform(self, effect: Any) -> Any:
        if isinstance(effect, Send):
            return await self._send(effect.request)
        if isinstance(effect, Connect):
            try:
                await self._aclient()
            except OctopusError as error:  # raised inside the operation, where it may be caught
                return error
        elif isinstance(effect, Parallel):
            return await gather_limited(self.drive, effect.operations, effect.limit)
        elif isinstance(effect, Pace | Sleep):
            wait = effect.bucket.reserve() if isinstance(effect, Pace) else effect.seconds
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            raise TypeError(f"not an effect of octopus.api: {effect!r}")
        return None

    async def _send(self, request: Request) -> Response | Unreachable:
        client = await self._aclient()
        try:
            raw = await client.request(request.method, request.url, json=request.json)
        except httpx.TimeoutException as error:
            return Unreachable("timeout", error)
        except httpx.TransportError as error:
            return Unreachable("unreachable", error, tls=_is_tls_error(error))
        except httpx.HTTPError as error:
            return Unreachable("other", error)
        return Response(raw.status_code, raw.reason_phrase, raw.headers, raw.text)


def _is_tls_error(error: BaseException) -> bool:
    """Whether an httpx transport error was caused by TLS (certificate, handshake): retrying will not help."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
