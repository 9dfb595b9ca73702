"""Async Octopus Deploy client for triggers: the rules of :class:`~octopus.hooks.OctopusHook` on ``httpx``.

Same connection (``octopus_default``, type ``http`` or ``octopus``; see :mod:`octopus.hooks`), same base URL and
path-prefix handling, same extras (``timeout``, ``verify``, ``page_size``, ``max_requests_per_minute``,
``max_attempts``, ``max_retry_seconds``; other extras become headers), same retries (tenacity, exponential backoff
with jitter, never shorter than ``Retry-After``, 429s bounded by the time budget only), same pacing (the hook's
token bucket, awaited instead of slept), same paging (``Page.Next`` to the end), same typed errors, and the key
only ever in the ``X-Octopus-ApiKey`` header. Redirects are refused, naming the target.

Validation, URL building and error building are the hook's own code, not copies: :class:`_HookRules` is an
``OctopusHook`` that never sends a request; it is fed the connection fetched with ``BaseHook.aget_connection``
(sync connection lookups block the triggerer's event loop). Waits (backoff, ``Retry-After``, pacing) are
``asyncio.sleep``, so one slow or retrying Octopus never delays another coroutine in the same loop.

Use one client per trigger run or task, as an async context manager; it owns one ``httpx.AsyncClient``::

    async with AsyncOctopusClient("octopus_default") as octopus:
        workers = await octopus.list_workers("Spaces-1", worker_pool_id="WorkerPools-2")
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import tenacity
from airflow.providers.http.hooks.http import _process_extra_options_from_connection
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from octopus.exceptions import OctopusError, OctopusNotFoundError
from octopus.hooks import (
    _COMM_STYLE,
    _OWN_EXTRAS,
    _SPACE_ID,
    _THUMBPRINT,
    _WORKER_ID,
    _WORKER_POOL_ID,
    OctopusHook,
    RetryEvent,
    _config_error,
    retry_policy,
)
from octopus.ledger import Signer
from octopus.pacing import TokenBucket

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["AsyncOctopusClient"]


class _HookRules(OctopusHook):
    """An ``OctopusHook`` used only for its rules (settings, URLs, errors, retry log); it sends nothing."""

    def __init__(self, octopus_conn_id: str, **kwargs: Any) -> None:
        super().__init__(octopus_conn_id, **kwargs)
        self._prefetched: Connection | None = None

    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]
        if self._prefetched is None:
            raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")
        return self._prefetched


class _Response:
    """The ``requests.Response`` attributes the hook's error and JSON decoding read, over an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.reason = response.reason_phrase
        self.text = response.text

    def json(self) -> Any:
        return self._response.json()


class AsyncOctopusClient:
    """
    Talk to the Octopus Deploy REST API from a coroutine; every method returns Octopus's resources as plain dicts.

    Arguments are those of :class:`~octopus.hooks.OctopusHook` (and override the connection's extras the same
    way). The connection is looked up on first use (or on ``async with``); a closed client cannot be reused.

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
        # Validates the keyword arguments now, as the hook does.
        self._rules = _HookRules(
            octopus_conn_id,
            page_size=page_size,
            max_requests_per_minute=max_requests_per_minute,
            max_attempts=max_attempts,
            max_retry_seconds=max_retry_seconds,
            retry_initial_wait=retry_initial_wait,
            retry_max_wait=retry_max_wait,
            timeout=timeout,
            pacing=pacing,
        )
        self.octopus_conn_id = octopus_conn_id
        self.log = self._rules.log
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False
        self._borrowed = False
        self._request_count = 0
        self._pool_size = pool_size

    # ------------------------------------------------------------------ lifecycle

    @property
    def request_count(self) -> int:
        """HTTP requests actually sent so far, retries included."""
        return self._request_count

    @property
    def retry_events(self) -> list[RetryEvent]:
        """Every retry made so far, oldest first; never contains secrets."""
        return self._rules.retry_events

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran (``async with`` calls it)."""
        return self._closed

    @property
    def server_url(self) -> str:
        """The server's base URL (known once the client is open)."""
        return self._rules.base_url

    @property
    def pacing(self) -> TokenBucket | None:
        """The client-side token bucket, when ``max_requests_per_minute`` is set (known once open)."""
        return self._rules._bucket

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
        rules = self._rules
        try:
            rules._prefetched = await BaseHook.aget_connection(self.octopus_conn_id)
        except AirflowNotFoundException:
            rules._prefetched = None
        connection = rules._load_connection()  # the hook's checks and messages
        header_extras, merged = _process_extra_options_from_connection(connection, {})
        headers = {str(k): str(v) for k, v in header_extras.items() if k not in _OWN_EXTRAS}
        headers["Accept"] = "application/json"
        headers["X-Octopus-ApiKey"] = rules._api_key
        if merged.get("cert"):
            raise _config_error(self.octopus_conn_id, "extra 'cert' is not supported by the async Octopus client")
        mounts = None
        proxies = merged.get("proxy")
        if proxies:
            if not isinstance(proxies, Mapping):
                raise _config_error(self.octopus_conn_id, "extra 'proxies' must map URL schemes to proxy URLs")
            mounts = {
                f"{scheme.split('://')[0]}://": httpx.AsyncHTTPTransport(proxy=url, verify=rules._verify)
                for scheme, url in proxies.items()
            }
        return httpx.AsyncClient(
            headers=headers,
            verify=rules._verify,
            timeout=httpx.Timeout(rules._settings.timeout),
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
        return Signer(self._rules._evidence_secret)

    async def borrow(self) -> AsyncOctopusClient:
        """A client on this one's connection, HTTP pool and pacing bucket, with its own request count and retry
        log; closing it leaves this one open. Opens this client first if needed (one connection lookup)."""
        http = await self._aclient()
        twin = AsyncOctopusClient(self.octopus_conn_id, **self._rules._overrides, pacing=self.pacing)
        twin._rules._prefetched = self._rules._prefetched
        twin._rules._load_connection()  # the same checks, on the connection already fetched
        twin._client, twin._borrowed = http, True
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

    # ------------------------------------------------------------------ HTTP core

    async def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> Any:
        """Send one logical request (with retries) and return the decoded JSON body, or None if empty."""
        client = await self._aclient()
        rules = self._rules
        settings = rules._settings
        url, display = rules._url(path, params)
        attempts = 0
        retrying = tenacity.AsyncRetrying(
            **retry_policy(settings, lambda state: rules._log_retry(method, display, state))
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await self._send_once(client, method, url, display, json)
        except OctopusError as error:
            if attempts > 1:
                error.set_attempts(attempts)
            raise
        return rules._decode(method, display, response)

    async def _send_once(self, client: httpx.AsyncClient, method: str, url: str, display: str, body: Any) -> _Response:
        rules = self._rules
        if rules._bucket is not None:
            wait = rules._bucket.reserve()
            if wait > 0:
                await asyncio.sleep(wait)
        self._request_count += 1
        started = time.monotonic()
        try:
            raw = await client.request(method, url, json=body)
        except httpx.TimeoutException as error:
            raise rules._transport_error("timeout", error, method, display) from None
        except httpx.TransportError as error:
            raise rules._transport_error("unreachable", error, method, display, tls=_is_tls_error(error)) from None
        except httpx.HTTPError as error:
            raise rules._transport_error("other", error, method, display) from None
        response = _Response(raw)
        self.log.debug(
            "Octopus %s %s -> %s in %.0f ms", method, display, raw.status_code, (time.monotonic() - started) * 1000
        )
        if 200 <= raw.status_code < 300:
            return response
        raise rules._error_from_response(method, display, response)

    async def _get_list(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """GET an endpoint answering a bare JSON array (the ``/all`` endpoints)."""
        body = await self._request("GET", path, params=params)
        if not isinstance(body, list):
            raise OctopusError(
                f"expected a JSON array, got {type(body).__name__}",
                method="GET",
                path=self._rules._url(path, params)[1],
            )
        return body

    async def _get_paged(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """GET every page of a paged collection, following ``Links["Page.Next"]`` until the last page."""
        await self._aclient()
        rules = self._rules
        query: Mapping[str, Any] | None = {**(params or {}), "take": rules._settings.page_size}
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        next_path: str | None = path
        while next_path is not None:
            url, display = rules._url(next_path, query)
            if url in seen:
                raise OctopusError("the server's Page.Next link repeats a page already read", path=display)
            seen.add(url)
            page = await self._request("GET", next_path, params=query)
            if not isinstance(page, dict) or not isinstance(page.get("Items"), list):
                raise OctopusError(
                    f"expected a paged collection with Items[], got {type(page).__name__}", method="GET", path=display
                )
            items.extend(page["Items"])
            links = page.get("Links") if isinstance(page.get("Links"), dict) else {}
            next_link = next((value for key, value in links.items() if key.lower() == "page.next"), None)
            # Like Octopus.Client: stop on an empty page even if a Next link is present.
            next_path = next_link if isinstance(next_link, str) and next_link and page["Items"] else None
            query = None  # Page.Next repeats the request's filters and take.
        return items

    # ------------------------------------------------------------------ public API (as OctopusHook's)

    async def get_space(self, space_id: str) -> dict[str, Any]:
        """Return one space (``GET /api/spaces/{id}``)."""
        _check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return await self._request("GET", f"/api/spaces/{space_id}")

    async def list_spaces(self) -> list[dict[str, Any]]:
        """Return every space the key's user can see, sorted by name (one request, ``/api/spaces/all``)."""
        return await self._get_list("/api/spaces/all")

    async def list_worker_pools(self, space_id: str) -> list[dict[str, Any]]:
        """Return every worker pool of a space in ``SortOrder`` (one request, ``.../workerpools/all``)."""
        _check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return await self._get_list(f"/api/{space_id}/workerpools/all")

    async def list_workers(
        self,
        space_id: str,
        worker_pool_id: str | None = None,
        thumbprint: str | None = None,
        comm_styles: str | Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Return every worker of a space matching all given filters, sorted by name (all pages).

        Arguments as :meth:`octopus.hooks.OctopusHook.list_workers`.
        """
        _check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        params: dict[str, str] = {}
        if worker_pool_id is not None:
            params["workerPoolIds"] = _check_id("worker_pool_id", worker_pool_id, _WORKER_POOL_ID, "WorkerPools-1")
        if thumbprint is not None:
            params["thumbprint"] = _check_id("thumbprint", thumbprint, _THUMBPRINT, "0E80575D3BD8...")
        if comm_styles is not None:
            styles = [comm_styles] if isinstance(comm_styles, str) else list(comm_styles)
            if not styles:
                raise ValueError("comm_styles must name at least one communication style, got an empty list")
            for style in styles:
                _check_id("comm_styles item", style, _COMM_STYLE, "TentacleActive")
            params["commStyles"] = ",".join(styles)
        return await self._get_paged(f"/api/{space_id}/workers", params)

    async def list_worker_task_leases(self, space_id: str) -> list[dict[str, Any]]:
        """As :meth:`octopus.hooks.OctopusHook.list_worker_task_leases`."""
        _check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return await self._get_paged(f"/api/{space_id}/workertaskleases")

    async def get_worker(self, space_id: str, worker_id: str) -> dict[str, Any]:
        """Return one worker; :class:`~octopus.exceptions.OctopusNotFoundError` if it does not exist."""
        _check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        _check_id("worker_id", worker_id, _WORKER_ID, "Workers-1")
        return await self._request("GET", f"/api/{space_id}/workers/{worker_id}")

    async def list_machine_policies(self, space_id: str) -> list[dict[str, Any]]:
        """Return every machine policy of a space, sorted by name (one request)."""
        _check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return await self._get_list(f"/api/{space_id}/machinepolicies/all")

    async def get_default_machine_policy(self, space_id: str) -> dict[str, Any]:
        """Return the space's default machine policy (``IsDefault``); OctopusNotFoundError if it has none."""
        policies = await self.list_machine_policies(space_id)
        for policy in policies:
            if isinstance(policy, dict) and policy.get("IsDefault") is True:
                return policy
        raise OctopusNotFoundError(
            f"space {space_id} has no default machine policy among its {len(policies)} policies",
            method="GET",
            path=f"/api/{space_id}/machinepolicies/all",
        )

    async def create_worker(self, space_id: str, worker: Mapping[str, Any]) -> dict[str, Any]:
        """Create a worker (``POST``); as :meth:`octopus.hooks.OctopusHook.create_worker` (look up before retrying)."""
        body = self._rules._worker_body(space_id, worker)
        return await self._request("POST", f"/api/{space_id}/workers", json=body)

    async def update_worker(self, space_id: str, worker: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a worker's writable fields (``PUT`` to its ``Id``) and return it as stored."""
        body = self._rules._worker_body(space_id, worker)
        worker_id = _check_id("worker['Id']", body.get("Id"), _WORKER_ID, "Workers-1")
        return await self._request("PUT", f"/api/{space_id}/workers/{worker_id}", json=body)

    async def delete_worker(self, space_id: str, worker_id: str, *, missing_ok: bool = False) -> None:
        """Delete a worker; a 404 on a retry (or with ``missing_ok``) counts as success, as in the hook."""
        _check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        _check_id("worker_id", worker_id, _WORKER_ID, "Workers-1")
        try:
            await self._request("DELETE", f"/api/{space_id}/workers/{worker_id}")
        except OctopusNotFoundError as error:
            if not (missing_ok or error.attempts > 1):
                raise
            self.log.info("Octopus worker %s in %s is already gone (%s)", worker_id, space_id, error.detail)


_check_id = OctopusHook._check_id


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
