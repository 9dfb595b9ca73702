"""Airflow hook for the Octopus Deploy REST API (spaces, worker pools, workers, machine policies).

The hook is the synchronous transport of the Octopus API core (:mod:`octopus.api`, which holds the routes, paging,
errors, retries and pacing, written once for this hook and :class:`octopus.aio.AsyncOctopusClient`). It builds on
the HTTP provider's ``HttpHook`` for connection handling and keeps **one** ``requests.Session`` per hook instance
(keep-alive); it carries out the core's effects: sends with ``requests``, sleeps with ``time.sleep``, runs
parallel operations on threads. Every failure is a typed :mod:`octopus.exceptions` error that never contains the
API key.

Connection: type ``octopus`` (registered by this package's provider entry point, with its own form in the UI)
or, as existing deployments define it, type ``http``; both are read the same way. For example::

    AIRFLOW_CONN_OCTOPUS_DEFAULT='{"conn_type": "octopus", "host": "https://octopus.example.com",
                                   "password": "API-XXXXXXXX", "extra": {"max_requests_per_minute": 180}}'

* ``host``: the server's base URL, scheme included; a path prefix (``https://example.com/octopus``) works.
  Without a scheme, ``schema`` (``http``/``https``) is used, default ``https``. ``port`` is honoured.
* ``password``: the API key, sent only as the ``X-Octopus-ApiKey`` header (never in a URL, log or error).
* ``extra`` (all optional; strings such as ``"30"`` or ``"false"`` from URI-form connections are accepted):

  ===========================  ==========  ==========================================================
  key                          default     meaning
  ===========================  ==========  ==========================================================
  ``verify``                   ``true``    TLS verification: true/false, or a CA bundle path
  ``timeout``                  ``30``      seconds per HTTP request (connect and read)
  ``page_size``                ``1000``    ``take`` for paged lists
  ``max_requests_per_minute``  (none)      the key's rate limit, shared by ``concurrency`` hooks; unset = none
  ``max_attempts``             ``6``       attempts per request, first one included
  ``max_retry_seconds``        ``120``     total time budget for one request's retries
  ===========================  ==========  ==========================================================

  Other extras are sent as HTTP headers, as ``HttpHook`` does; a ``null`` extra (an empty field of the
  connection form) means the default. Keyword arguments of the same names (plus
  ``retry_initial_wait``/``retry_max_wait``) override the extras.

Retries: connection errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff and jitter,
waiting at least as long as the server's ``Retry-After``; 4xx other than 429 never are. A POST whose
connection dropped or that got a 5xx may already have been applied by the server and is still retried:
callers that create resources should look them up again (by thumbprint) before creating, as the sharing
DAG's upsert does.
Redirects are not followed (``requests`` would forward the API key header to whatever host a redirect names);
they raise an error naming the target so the connection can be fixed. This holds for the inherited
``HttpHook.run()`` too, which also refuses URLs outside the connection's server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests
import requests.adapters
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.exceptions import AirflowNotFoundException

from octopus import settings
from octopus.api import (
    OWN_EXTRAS,
    TASK_STATES,
    Connect,
    OctopusApi,
    Operation,
    Pace,
    Parallel,
    Request,
    Response,
    RetryEvent,
    Send,
    Sleep,
    Step,
    Transport,
    Unreachable,
    bind_operations,
    missing_connection,
    parallel_map,
    retry_policy,
    tuning_overrides,
)
from octopus.exceptions import OctopusError
from octopus.ledger import Signer
from octopus.pacing import TokenBucket

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["TASK_STATES", "OctopusHook", "RetryEvent", "retry_policy"]

#: Extras the hook consumes (kept importable here; defined in :mod:`octopus.api`).
_OWN_EXTRAS = OWN_EXTRAS


def _driven(operation: Callable[..., Operation]) -> Callable[..., Any]:
    def method(self: OctopusHook, *args: Any, **kwargs: Any) -> Any:
        return self.drive(operation(self.api, *args, **kwargs))

    return method


def _response(response: requests.Response) -> Response:
    return Response(response.status_code, response.reason or "", response.headers, response.text)


@bind_operations(_driven)
class OctopusHook(Transport, HttpHook):
    """
    Talk to the Octopus Deploy REST API; every method returns Octopus's resources as plain dicts.

    All space-scoped calls use the ``/api/{spaceId}/...`` routes, so ``space_id`` must look like ``Spaces-1``.
    List methods return every item (all pages) in the server's order. Errors are
    :class:`~octopus.exceptions.OctopusError` subclasses; bad arguments raise ``ValueError``/``TypeError``.
    The calls are the core's (:data:`octopus.api.OPERATIONS`, same names, signatures and docstrings):
    ``list_spaces``, ``get_space``, ``list_worker_pools``, ``list_workers``, ``get_worker``, ``create_worker``,
    ``update_worker``, ``delete_worker``, ``list_machine_policies``, ``get_default_machine_policy``,
    ``list_worker_task_leases``, ``list_tasks``, ``get_task``, ``test_connection``; :meth:`drive` runs any other
    operation written over the core.

    The hook is safe to share between threads (one session, a locked counter, a thread-safe pacing bucket).
    Use it as a context manager, or call :meth:`close`, to release its connections early.

    :param octopus_conn_id: Airflow connection id (type ``octopus`` or ``http``; see the module docstring).
    :param page_size: ``take`` for paged lists (overrides the extra).
    :param max_requests_per_minute: the API key's rate limit; enables client-side pacing (overrides the extra).
    :param concurrency: how many hooks (tasks) use the key at the same time; each paces itself at
        ``max_requests_per_minute / concurrency`` so that together they stay under the limit. Default 1.
    :param max_attempts: attempts per request including the first (overrides the extra).
    :param max_retry_seconds: total retry budget per request, waits included (overrides the extra).
    :param retry_initial_wait: first backoff wait in seconds (doubles each retry, plus jitter).
    :param retry_max_wait: cap of one backoff wait (``Retry-After`` may exceed it, within the total budget).
    :param timeout: seconds per HTTP request (overrides the extra).
    :param pacing: a :class:`~octopus.pacing.TokenBucket` to take a token from before every request, instead
        of one built from ``max_requests_per_minute``; share one between hooks of the same Octopus user
        (then ``concurrency`` must stay 1: the shared bucket already holds the whole limit).
    :param pool_size: keep-alive connections kept to the server (``requests`` keeps 10): size it for the
        threads sharing this hook, or connections beyond 10 are opened and dropped for every request.
    :param kwargs: passed to ``HttpHook`` (``tcp_keep_alive``, ``adapter``, ...).
    """

    conn_name_attr = "octopus_conn_id"
    default_conn_name = settings.default("conn_id")
    # The connection type this hook registers (octopus.provider_info); it reads "http" connections the same way.
    conn_type = "octopus"
    hook_name = "Octopus Deploy"

    def __init__(
        self,
        octopus_conn_id: str = default_conn_name,
        *,
        page_size: int | None = None,
        max_requests_per_minute: float | None = None,
        max_attempts: int | None = None,
        max_retry_seconds: float | None = None,
        retry_initial_wait: float | None = None,
        retry_max_wait: float | None = None,
        timeout: float | None = None,
        pacing: TokenBucket | None = None,
        concurrency: int = 1,
        pool_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(method="GET", http_conn_id=octopus_conn_id, **kwargs)
        if pool_size is not None:
            self._size_pool(pool_size)
        overrides = tuning_overrides(locals())
        # Validates the keyword arguments now, so a typo fails where the hook is built.
        self._api = OctopusApi(octopus_conn_id, overrides, pacing=pacing, concurrency=concurrency, log=self.log)
        self.concurrency = concurrency
        self.octopus_conn_id = octopus_conn_id
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    # ------------------------------------------------------------------ configuration and session

    @property
    def server_url(self) -> str:
        """The server's base URL (scheme, host, port and path prefix; never the API key)."""
        self.get_conn()
        return self.base_url

    @property
    def pacing(self) -> TokenBucket | None:
        """The client-side token bucket, when ``max_requests_per_minute`` is set."""
        self.get_conn()
        return self._api.bucket

    def _size_pool(self, pool_size: int) -> None:
        """Keep ``pool_size`` connections: HttpHook's own adapter (TCP keep-alive unless off), with a bigger pool."""
        from requests_toolbelt.adapters.socket_options import SocketOptionsAdapter

        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an integer >= 1, got {pool_size!r}")
        if self.adapter is not None:  # the caller's own adapter decides
            return
        if self.keep_alive_adapter is not None:
            self.keep_alive_adapter = SocketOptionsAdapter(
                socket_options=self.keep_alive_adapter.socket_options, pool_maxsize=pool_size
            )
        else:
            self.adapter = requests.adapters.HTTPAdapter(pool_maxsize=pool_size)

    def _set_base_url(self, connection: Connection) -> None:
        """Validate host/schema/port and derive the base URL (``scheme://host[:port][/prefix]``): the core's rules,
        also for the inherited ``run()`` (``url_from_endpoint`` calls this)."""
        self._api.set_base_url(connection)
        self.base_url = self._api.base_url
        self._base_url_initialized = True

    def _load_connection(self) -> Connection:
        try:
            connection = self.get_connection(self.octopus_conn_id)
        except AirflowNotFoundException:
            raise missing_connection(self.octopus_conn_id) from None
        self._api.configure(connection)
        self._set_base_url(connection)
        return connection

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """
        Return this hook's single ``requests.Session``, creating and validating it on first use.

        The connection is looked up and checked (host, scheme, API key, extras) before any request; problems
        raise :class:`~octopus.exceptions.OctopusConfigurationError`. ``headers``/``extra_options`` exist for
        ``HttpHook`` compatibility and only apply when the session is created.
        """
        with self._session_lock:
            if self._session is None:
                connection = self._load_connection()
                session = requests.Session()
                if connection.extra:
                    session = self._configure_session_from_extra(session, connection, extra_options or {})
                session = self._configure_session_from_mount_adapters(session)
                for name in OWN_EXTRAS:
                    session.headers.pop(name, None)
                if headers:
                    session.headers.update(headers)
                session.auth = None
                session.verify = self._api.verify
                session.headers.update(self._api.headers())
                self._session = session
            return self._session

    def close(self) -> None:
        """Close the session and its pooled connections (a later call opens a new one)."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self) -> OctopusHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def evidence_signer(self) -> Signer:
        """What seals and verifies the deployment ledgers' evidence: keyed by this connection's secret.

        The connection's ``evidence_secret`` extra when set (so rotating the API key keeps the evidence), else its
        API key: whoever can edit Airflow Variables but not this connection cannot forge ownership.
        """
        self.get_conn()
        return self._api.signer()

    # ------------------------------------------------------------------ the transport

    def drive(self, operation: Operation) -> Any:
        """Run one operation of the API core (:mod:`octopus.api`) on this hook and return its result."""
        step = Step(operation)
        while not step.done:
            step.send(self._perform(step.effect))
        return step.value

    def _perform(self, effect: Any) -> Any:
        if isinstance(effect, Send):
            return self._send(effect.request)
        if isinstance(effect, Connect):
            try:
                self.get_conn()
            except OctopusError as error:  # raised inside the operation, where it may be caught
                return error
        elif isinstance(effect, Pace):
            effect.bucket.acquire()
        elif isinstance(effect, Sleep):
            time.sleep(effect.seconds)
        elif isinstance(effect, Parallel):
            return parallel_map(self.drive, effect.operations, effect.limit)
        else:
            raise TypeError(f"not an effect of octopus.api: {effect!r}")
        return None

    def _send(self, request: Request) -> Response | Unreachable:
        session = self.get_conn()
        assert self._api.settings is not None
        try:
            response = session.request(
                request.method,
                request.url,
                json=request.json,
                timeout=self._api.settings.timeout,
                allow_redirects=False,
            )
        except requests.Timeout as error:
            return Unreachable("timeout", error)
        except requests.ConnectionError as error:
            return Unreachable("unreachable", error, tls=isinstance(error, requests.exceptions.SSLError))
        except requests.RequestException as error:
            return Unreachable("other", error)
        return _response(response)

    def run_and_check(
        self,
        session: requests.Session,
        prepped_request: requests.PreparedRequest,
        extra_options: dict[Any, Any],
    ) -> requests.Response:
        """
        Send a request prepared by the inherited :meth:`HttpHook.run` (which sends the API key header too).

        Unlike ``HttpHook``, never follows a redirect and never sends to another server than the connection's:
        both raise :class:`~octopus.exceptions.OctopusError` naming the target, before the key can leave. Paced
        and counted like the hook's own requests; with ``check_response`` (the default) a failure raises the
        typed error of its status. Prefer the hook's methods, which also retry and page.
        """
        method = (prepped_request.method or self.method).upper()
        url = prepped_request.url or ""
        display, refused = self._api.outside_server(method, url)
        if refused is not None:
            raise refused
        if extra_options.get("allow_redirects"):
            self.log.warning("Ignoring allow_redirects for Octopus: redirects are never followed (API key)")
        if self._api.bucket is not None:
            self._api.bucket.acquire()
        self._api.count_request()
        settings = session.merge_environment_settings(
            url, proxies=session.proxies, stream=session.stream, verify=session.verify, cert=session.cert
        )
        assert self._api.settings is not None  # set by get_conn(), which run() calls first
        response = session.send(prepped_request, timeout=self._api.settings.timeout, allow_redirects=False, **settings)
        failed = extra_options.get("check_response", True) and response.status_code >= 400
        if response.is_redirect or response.is_permanent_redirect or failed:
            raise self._api.error_from_response(method, display, _response(response))
        return response
