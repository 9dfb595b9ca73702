"""Airflow hook for the Octopus Deploy REST API (spaces, worker pools, workers, machine policies).

All Octopus REST logic of this package lives here. The hook builds on the HTTP provider's ``HttpHook`` for
connection handling, but keeps **one** ``requests.Session`` per hook instance (keep-alive), retries transient
failures with tenacity, can pace itself under the server's rate limit, pages every list to the end, and turns
every failure into a typed :mod:`octopus.exceptions` error that never contains the API key.

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

import email.utils
import html
import json as jsonlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import requests
import requests.adapters
import tenacity
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.exceptions import AirflowNotFoundException

from octopus.exceptions import (
    OctopusAuthenticationError,
    OctopusConfigurationError,
    OctopusError,
    OctopusNotFoundError,
    OctopusPermissionError,
    OctopusRateLimitError,
    OctopusServerError,
    OctopusUnavailableError,
    OctopusValidationError,
)
from octopus.ledger import Signer
from octopus.pacing import TokenBucket, pacing_share

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["OctopusHook", "RetryEvent"]

_SPACE_ID = re.compile(r"Spaces-\d+")
_WORKER_ID = re.compile(r"Workers-\d+")
TASK_STATES = ("New", "Queued", "Executing", "Cancelling", "Success", "Failed", "Canceled", "TimedOut")
_TASK_ID = re.compile(r"ServerTasks-\d+")
_WORKER_POOL_ID = re.compile(r"WorkerPools-\d+")
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]+")
_COMM_STYLE = re.compile(r"[A-Za-z]+")
_URI_TEMPLATE_EXPR = re.compile(r"\{[^}]*\}")
_APIKEY_QUERY = re.compile(r"(?i)(api_?key=)[^&#\s'\"]+")
_HTML_BLOCK = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
_HTML_TAG = re.compile(r"(?s)<[^>]*>")
_SNIPPET_CHARS = 200

#: Extras this hook consumes; HttpHook would otherwise send them as HTTP headers.
_OWN_EXTRAS = (
    "page_size",
    "max_requests_per_minute",
    "max_attempts",
    "max_retry_seconds",
    "retry_initial_wait",
    "retry_max_wait",
    "timeout",
    "verify",
    "verify_ssl",
    "evidence_secret",  # a secret of the package's own: never sent anywhere
)

_DEFAULTS: dict[str, Any] = {
    "page_size": 1000,
    "max_requests_per_minute": None,
    "max_attempts": 6,
    "max_retry_seconds": 120.0,
    "retry_initial_wait": 0.5,
    "retry_max_wait": 30.0,
    "timeout": 30.0,
}

_STATUS_ERRORS: dict[int, type[OctopusError]] = {
    400: OctopusValidationError,
    401: OctopusAuthenticationError,
    403: OctopusPermissionError,
    404: OctopusNotFoundError,
    409: OctopusValidationError,
    429: OctopusRateLimitError,
}
_STATUS_HINTS = {
    401: "check the API key in the connection's password, and that its user is enabled",
    403: "grant the API key's user this permission in the space",
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class RetryEvent:
    """One retry the hook made: which request, why, and how long it waited before the next attempt."""

    method: str
    path: str
    attempt: int
    reason: str
    wait_seconds: float
    retry_after: float | None


@dataclass(frozen=True)
class _Settings:
    page_size: int
    max_requests_per_minute: float | None
    max_attempts: int
    max_retry_seconds: float
    retry_initial_wait: float
    retry_max_wait: float
    timeout: float


def _config_error(conn_id: str, problem: str) -> OctopusConfigurationError:
    return OctopusConfigurationError(f"connection {conn_id!r}: {problem}")


def _parse_number(conn_id: str, name: str, value: Any, *, integer: bool, minimum: float, strict: bool) -> Any:
    """Parse a setting from an extra (maybe a string) or a kwarg; ``strict``: ``> minimum``, else ``>=``."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    kind = "an integer" if integer else "a number"
    problem = f"{name} must be {kind} {bound}, got {value!r}"
    if isinstance(value, bool):
        raise _config_error(conn_id, problem)
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise _config_error(conn_id, problem) from None
    if not math.isfinite(number) or (integer and not number.is_integer()):
        raise _config_error(conn_id, problem)
    if number < minimum or (strict and number == minimum):
        raise _config_error(conn_id, problem)
    return int(number) if integer else number


def _parse_verify(conn_id: str, value: Any) -> bool | str:
    """``verify`` extra: a bool, a true/false string, or the path of a CA bundle (file or directory)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        if value.strip() and Path(value.strip()).exists():
            return value.strip()
    raise _config_error(
        conn_id,
        f"extra 'verify' must be true, false or the path of an existing CA bundle, got {value!r}",
    )


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _html_to_text(text: str) -> str:
    text = _HTML_BLOCK.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    return " ".join(html.unescape(text).split())


def _snippet(text: str) -> str:
    text = _html_to_text(text)
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


def _parse_retry_after(value: str | None, now: Callable[[], datetime]) -> float | None:
    """``Retry-After`` as seconds (RFC 9110: delay-seconds or an HTTP-date); None if absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now()).total_seconds())


class _StopAfterFailuresExceptRateLimits(tenacity.stop.stop_base):
    """Stop after ``max_attempts`` attempts, not counting those answered 429.

    A 429 is the server pacing us, not failing: many concurrent requests may each meet several while the
    limit lasts, so they are bounded by the time budget (``max_retry_seconds``) alone.
    """

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.rate_limited = 0

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is not None and isinstance(outcome.exception(), OctopusRateLimitError):
            self.rate_limited += 1
        return retry_state.attempt_number - self.rate_limited >= self.max_attempts


class _WaitAtLeastRetryAfter(tenacity.wait.wait_base):
    """Backoff with jitter, but never shorter than the ``Retry-After`` the server sent with the failure."""

    def __init__(self, backoff: tenacity.wait.wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait


def retry_policy(settings: Any, before_sleep: Any) -> dict[str, Any]:
    """tenacity arguments shared by the sync hook and the async client: which errors, how long, how often.

    Retries only errors marked ``retryable`` (5xx, 429, connection faults), with exponential backoff and jitter
    but never sooner than ``Retry-After``; bounded by ``max_attempts`` (429s do not count) and by
    ``max_retry_seconds``.
    """
    return {
        "stop": _StopAfterFailuresExceptRateLimits(settings.max_attempts)
        | tenacity.stop_before_delay(settings.max_retry_seconds),
        "wait": _WaitAtLeastRetryAfter(
            tenacity.wait_exponential_jitter(
                initial=settings.retry_initial_wait, max=settings.retry_max_wait, jitter=settings.retry_initial_wait
            )
        ),
        "retry": tenacity.retry_if_exception(lambda error: getattr(error, "retryable", False)),
        "before_sleep": before_sleep,
        "reraise": True,
    }


class OctopusHook(HttpHook):
    """
    Talk to the Octopus Deploy REST API; every method returns Octopus's resources as plain dicts.

    All space-scoped calls use the ``/api/{spaceId}/...`` routes, so ``space_id`` must look like ``Spaces-1``.
    List methods return every item (all pages) in the server's order. Errors are
    :class:`~octopus.exceptions.OctopusError` subclasses; bad arguments raise ``ValueError``/``TypeError``.

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
    default_conn_name = "octopus_default"
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
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1 (tasks sharing the API key), got {concurrency!r}")
        if pacing is not None and concurrency != 1:
            raise ValueError(
                "pass either pacing (a bucket shared by every hook of the key) or concurrency (each hook paces "
                f"itself at a share of the limit), not both; got concurrency={concurrency}"
            )
        self.concurrency = concurrency
        self.octopus_conn_id = octopus_conn_id
        overrides = {
            "page_size": page_size,
            "max_requests_per_minute": max_requests_per_minute,
            "max_attempts": max_attempts,
            "max_retry_seconds": max_retry_seconds,
            "retry_initial_wait": retry_initial_wait,
            "retry_max_wait": retry_max_wait,
            "timeout": timeout,
        }
        self._overrides = {key: value for key, value in overrides.items() if value is not None}
        # Validate keyword arguments now, so a typo fails where the hook is built.
        self._resolve_settings({})
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._settings: _Settings | None = None
        self._shared_bucket = pacing
        self._bucket: TokenBucket | None = pacing
        self._api_key: str | None = None
        self._origin = ""
        self._prefix = ""
        self._request_count = 0
        self._count_lock = threading.Lock()
        #: Every retry made by this hook, oldest first (method, path, reason, wait); never contains secrets.
        self.retry_events: list[RetryEvent] = []

    # ------------------------------------------------------------------ configuration and session

    @property
    def request_count(self) -> int:
        """HTTP requests actually sent by this hook so far, retries included."""
        return self._request_count

    @property
    def server_url(self) -> str:
        """The server's base URL (scheme, host, port and path prefix; never the API key)."""
        self.get_conn()
        return self.base_url

    @property
    def pacing(self) -> TokenBucket | None:
        """The client-side token bucket, when ``max_requests_per_minute`` is set."""
        self.get_conn()
        return self._bucket

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

    def _resolve_settings(self, extras: Mapping[str, Any]) -> _Settings:
        conn_id = self.octopus_conn_id
        # A null extra (an empty field of the connection form) or a blank URI-form value means the default.
        given = {k: v for k, v in extras.items() if k in _DEFAULTS and not _is_unset(v)}
        raw = {**_DEFAULTS, **given, **self._overrides}
        rate = raw["max_requests_per_minute"]
        if isinstance(rate, str) and not rate.strip():
            rate = None
        settings = _Settings(
            page_size=_parse_number(conn_id, "page_size", raw["page_size"], integer=True, minimum=0, strict=True),
            max_requests_per_minute=None
            if rate is None
            else _parse_number(conn_id, "max_requests_per_minute", rate, integer=False, minimum=0, strict=True),
            max_attempts=_parse_number(
                conn_id, "max_attempts", raw["max_attempts"], integer=True, minimum=1, strict=False
            ),
            max_retry_seconds=_parse_number(
                conn_id, "max_retry_seconds", raw["max_retry_seconds"], integer=False, minimum=0, strict=False
            ),
            retry_initial_wait=_parse_number(
                conn_id,
                "retry_initial_wait",
                raw["retry_initial_wait"],
                integer=False,
                minimum=0,
                strict=False,
            ),
            retry_max_wait=_parse_number(
                conn_id, "retry_max_wait", raw["retry_max_wait"], integer=False, minimum=0, strict=False
            ),
            timeout=_parse_number(conn_id, "timeout", raw["timeout"], integer=False, minimum=0, strict=True),
        )
        return settings

    def _set_base_url(self, connection: Connection) -> None:
        """Validate host/schema/port and derive the base URL (``scheme://host[:port][/prefix]``)."""
        conn_id = self.octopus_conn_id
        host = (connection.host or "").strip()
        if not host:
            raise _config_error(
                conn_id, "has no host; set it to the Octopus server URL, e.g. https://octopus.example.com"
            )
        if "://" not in host:
            host = f"{(connection.schema or 'https').strip().lower()}://{host}"
        parts = urlsplit(host)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise _config_error(
                conn_id,
                f"unsupported URL scheme {scheme!r} in host; use https:// (or http:// for a local server)",
            )
        if parts.username or parts.password:
            raise _config_error(
                conn_id, "host must not contain credentials; put the API key in the connection's password"
            )
        if parts.query or parts.fragment:
            raise _config_error(conn_id, "host must not contain a query string or fragment")
        if not parts.hostname:
            raise _config_error(conn_id, f"host {host!r} has no server name")
        try:
            url_port = parts.port
        except ValueError:
            raise _config_error(conn_id, f"host {host!r} has an invalid port") from None
        netloc = parts.netloc
        if connection.port:
            if url_port is not None and url_port != connection.port:
                raise _config_error(conn_id, f"port {connection.port} conflicts with port {url_port} in host {host!r}")
            if url_port is None:
                netloc = f"{netloc}:{connection.port}"
        prefix = parts.path.rstrip("/")
        # ".../api" is the API root, not a path prefix: accept it rather than requesting /api/api/...
        if prefix.lower().endswith("/api"):
            prefix = prefix[: -len("/api")]
        self._origin = f"{scheme}://{netloc}"
        self._prefix = prefix
        self.base_url = self._origin + prefix
        self._base_url_initialized = True

    def _load_connection(self) -> Connection:
        try:
            connection = self.get_connection(self.octopus_conn_id)
        except AirflowNotFoundException:
            env = f"AIRFLOW_CONN_{self.octopus_conn_id.upper()}"
            raise _config_error(
                self.octopus_conn_id,
                f"is not defined; create it in Airflow or set the environment variable {env}",
            ) from None
        self._set_base_url(connection)
        key = (connection.password or "").strip()
        if not key:
            raise _config_error(
                self.octopus_conn_id, "has no API key; set the connection's password to an Octopus API key"
            )
        if any(ord(char) < 33 or ord(char) > 126 for char in key):
            raise _config_error(
                self.octopus_conn_id, "API key (password) contains spaces, control or non-ASCII characters"
            )
        extras = connection.extra_dejson
        if not isinstance(extras, Mapping):
            raise _config_error(self.octopus_conn_id, "extra must be a JSON object")
        settings = self._resolve_settings(extras)
        verify_value = next(
            (extras[k] for k in ("verify", "verify_ssl") if k in extras and not _is_unset(extras[k])), True
        )
        self._verify = _parse_verify(self.octopus_conn_id, verify_value)
        self._api_key = key
        evidence = extras.get("evidence_secret")
        self._evidence_secret = evidence.strip() if isinstance(evidence, str) and evidence.strip() else key
        self._settings = settings
        if self._shared_bucket is None and settings.max_requests_per_minute is not None:
            self._bucket = pacing_share(settings.max_requests_per_minute, self.concurrency)
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
                for name in _OWN_EXTRAS:
                    session.headers.pop(name, None)
                if headers:
                    session.headers.update(headers)
                session.auth = None
                session.verify = self._verify
                session.headers["Accept"] = "application/json"
                session.headers["X-Octopus-ApiKey"] = self._api_key
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
        return Signer(self._evidence_secret)

    def test_connection(self) -> tuple[bool, str]:
        """Check URL and key with ``GET /api`` and ``GET /api/users/me`` (the Airflow UI's Test button)."""
        try:
            root = self._request("GET", "/api")
            self._request("GET", "/api/users/me")
        except OctopusError as error:
            return False, str(error)
        version = root.get("Version", "?") if isinstance(root, dict) else "?"
        return True, f"Connected to Octopus Deploy {version} at {self.server_url}"

    # ------------------------------------------------------------------ text hygiene

    def _scrub(self, text: str) -> str:
        """Remove the API key (and any ``apikey=`` query value) from text bound for logs or errors."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return _APIKEY_QUERY.sub(r"\1***", text)

    # ------------------------------------------------------------------ HTTP core

    def _url(self, path: str, params: Mapping[str, Any] | None) -> tuple[str, str]:
        """Return (absolute URL, display path) for a server-relative path or a link from a response."""
        path = _URI_TEMPLATE_EXPR.sub("", path)
        parts = urlsplit(path)
        if parts.scheme or parts.netloc:
            origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
            if origin != self._origin.lower():
                raise OctopusError(f"refusing to follow a link to another server: {self._scrub(origin)}")
            url = path
            path = path[len(origin) :]
            if self._prefix and path.startswith(self._prefix + "/"):
                path = path[len(self._prefix) :]
        else:
            if not path.startswith("/"):
                path = "/" + path
            # Octopus links start with /api; a server behind a virtual directory may include the prefix.
            if self._prefix and path.startswith(self._prefix + "/"):
                path = path[len(self._prefix) :]
            url = self.base_url + path
        if params:
            query = urlencode({k: v for k, v in params.items() if v is not None}, safe=",")
            joiner = "&" if "?" in url else "?"
            url, path = f"{url}{joiner}{query}", f"{path}{joiner}{query}"
        return url, self._scrub(path)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one logical request (with retries) and return the decoded JSON body, or None if empty."""
        session = self.get_conn()
        settings = self._settings
        assert settings is not None
        url, display = self._url(path, params)
        attempts = 0

        def attempt() -> requests.Response:
            nonlocal attempts
            attempts += 1
            return self._send_once(session, method, url, display, json)

        retrying = tenacity.Retrying(**retry_policy(settings, lambda state: self._log_retry(method, display, state)))
        try:
            response = retrying(attempt)
        except OctopusError as error:
            if attempts > 1:
                error.set_attempts(attempts)
            raise
        return self._decode(method, display, response)

    def _send_once(
        self, session: requests.Session, method: str, url: str, display: str, body: Any
    ) -> requests.Response:
        if self._bucket is not None:
            self._bucket.acquire()
        with self._count_lock:
            self._request_count += 1
        started = time.monotonic()
        try:
            response = session.request(method, url, json=body, timeout=self._settings.timeout, allow_redirects=False)
        except requests.Timeout as error:
            raise self._transport_error("timeout", error, method, display) from None
        except requests.ConnectionError as error:
            tls = isinstance(error, requests.exceptions.SSLError)
            raise self._transport_error("unreachable", error, method, display, tls=tls) from None
        except requests.RequestException as error:
            raise self._transport_error("other", error, method, display) from None
        self.log.debug(
            "Octopus %s %s -> %s in %.0f ms",
            method,
            display,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        if 200 <= response.status_code < 300:
            return response
        raise self._error_from_response(method, display, response)

    def _transport_error(
        self, kind: str, error: Exception, method: str, display: str, *, tls: bool = False
    ) -> OctopusError:
        """The typed error for a request that got no HTTP answer (shared with the async client), key scrubbed."""
        what = f"({type(error).__name__}: {self._scrub(str(error))})"
        if kind == "timeout":
            return OctopusUnavailableError(
                f"no response from {self.base_url} within {self._settings.timeout:g} s {what}",
                method=method,
                path=display,
            )
        if kind == "unreachable":
            unavailable = OctopusUnavailableError(
                f"could not reach {self.base_url} {what}", method=method, path=display
            )
            # A TLS failure (bad certificate, wrong CA) will not heal by retrying.
            unavailable.retryable = not tls
            return unavailable
        return OctopusError(f"request failed {what}", method=method, path=display)

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
        parts = urlsplit(url)
        display = self._scrub(parts.path + (f"?{parts.query}" if parts.query else ""))
        origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        if origin != self._origin.lower():
            raise OctopusError(
                f"refusing to send the API key to {self._scrub(origin)}: it is not the connection's server "
                f"{self._origin}",
                method=method,
                path=display,
            )
        if extra_options.get("allow_redirects"):
            self.log.warning("Ignoring allow_redirects for Octopus: redirects are never followed (API key)")
        if self._bucket is not None:
            self._bucket.acquire()
        with self._count_lock:
            self._request_count += 1
        settings = session.merge_environment_settings(
            url, proxies=session.proxies, stream=session.stream, verify=session.verify, cert=session.cert
        )
        assert self._settings is not None  # set by get_conn(), which run() calls first
        response = session.send(prepped_request, timeout=self._settings.timeout, allow_redirects=False, **settings)
        if response.is_redirect or response.is_permanent_redirect:
            raise self._error_from_response(method, display, response)
        if extra_options.get("check_response", True) and response.status_code >= 400:
            raise self._error_from_response(method, display, response)
        return response

    def _error_from_response(self, method: str, display: str, response: requests.Response) -> OctopusError:
        status = response.status_code
        error_message: str | None = None
        errors: list[str] = []
        detail = ""
        text = response.text or ""
        content_type = response.headers.get("Content-Type", "")
        try:
            body = jsonlib.loads(text) if text.strip() else None
        except ValueError:
            body = None
            detail = (
                f"; the server answered with a non-JSON body ({content_type or 'no content type'}): {_snippet(text)!r}"
            )
        if isinstance(body, dict):
            if isinstance(body.get("ErrorMessage"), str):
                error_message = body["ErrorMessage"]
            raw_errors = body.get("Errors")
            if isinstance(raw_errors, list):
                errors = [self._scrub(str(item)) for item in raw_errors]
            if error_message is None and not errors:
                detail = f"; body: {_snippet(text)!r}"
        elif body is not None:
            detail = f"; body: {_snippet(text)!r}"
        elif not text.strip():
            detail = "; empty body"
        retry_after = None
        if status == 429 or status >= 500:
            retry_after = _parse_retry_after(response.headers.get("Retry-After"), lambda: datetime.now(timezone.utc))
        summary = response.reason or "error"
        hint = _STATUS_HINTS.get(status)
        if status in _STATUS_ERRORS:
            cls = _STATUS_ERRORS[status]
        elif status >= 500:
            cls = OctopusServerError
        elif 300 <= status < 400:
            cls = OctopusError
            summary += f" to {response.headers.get('Location', '?')}"
            hint = (
                "redirects are not followed, so the API key never leaves this server; "
                "set the connection's host to the server's final base URL"
            )
        else:
            cls = OctopusError
        if retry_after is not None:
            summary += f" (Retry-After {retry_after:g} s)"
        return cls(
            self._scrub(summary + detail),
            method=method,
            path=display,
            status=status,
            error_message=self._scrub(error_message) if error_message else None,
            errors=errors,
            retry_after=retry_after,
            hint=hint,
        )

    def _log_retry(self, method: str, display: str, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.upcoming_sleep
        reason = self._scrub(error.detail if isinstance(error, OctopusError) else repr(error))
        retry_after = getattr(error, "retry_after", None)
        self.retry_events.append(RetryEvent(method, display, state.attempt_number, reason, wait, retry_after))
        self.log.warning(
            "Octopus %s %s failed (%s); retrying in %.2f s (attempt %d; at most %d besides 429s, within %.0f s)",
            method,
            display,
            reason,
            wait,
            state.attempt_number + 1,
            self._settings.max_attempts,
            self._settings.max_retry_seconds,
        )

    def _decode(self, method: str, display: str, response: requests.Response) -> Any:
        text = response.text
        if not text.strip():
            return None
        try:
            return response.json()
        except ValueError:
            content_type = response.headers.get("Content-Type", "") or "no content type"
            raise OctopusError(
                self._scrub(
                    f"expected JSON, but the server answered with a non-JSON body ({content_type}): "
                    f"{_snippet(text)!r}; is the host the Octopus server's base URL?"
                ),
                method=method,
                path=display,
                status=response.status_code,
            ) from None

    def _get_list(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """GET an endpoint answering a bare JSON array (the ``/all`` endpoints)."""
        body = self._request("GET", path, params=params)
        if not isinstance(body, list):
            raise OctopusError(
                f"expected a JSON array, got {type(body).__name__}",
                method="GET",
                path=self._url(path, params)[1],
            )
        return body

    def _get_paged(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """GET every page of a paged collection, following ``Links["Page.Next"]`` until the last page."""
        self.get_conn()
        assert self._settings is not None
        query = {**(params or {}), "take": self._settings.page_size}
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        next_path: str | None = path
        while next_path is not None:
            url, display = self._url(next_path, query)
            if url in seen:
                raise OctopusError("the server's Page.Next link repeats a page already read", path=display)
            seen.add(url)
            page = self._request("GET", next_path, params=query)
            if not isinstance(page, dict) or not isinstance(page.get("Items"), list):
                raise OctopusError(
                    f"expected a paged collection with Items[], got {type(page).__name__}",
                    method="GET",
                    path=display,
                )
            items.extend(page["Items"])
            links = page.get("Links") if isinstance(page.get("Links"), dict) else {}
            next_link = next((value for key, value in links.items() if key.lower() == "page.next"), None)
            # Like Octopus.Client: stop on an empty page even if a Next link is present.
            next_path = next_link if isinstance(next_link, str) and next_link and page["Items"] else None
            query = None  # Page.Next repeats the request's filters and take.
        return items

    # ------------------------------------------------------------------ argument checks

    @staticmethod
    def _check_id(name: str, value: Any, pattern: re.Pattern[str], example: str) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{name} must look like {example!r}, got {value!r}")
        return value

    # ------------------------------------------------------------------ public API

    def get_space(self, space_id: str) -> dict[str, Any]:
        """Return one space (``GET /api/spaces/{id}``)."""
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return self._request("GET", f"/api/spaces/{space_id}")

    def list_spaces(self) -> list[dict[str, Any]]:
        """Return every space the key's user can see, sorted by name (one request, ``/api/spaces/all``)."""
        return self._get_list("/api/spaces/all")

    def list_worker_pools(self, space_id: str) -> list[dict[str, Any]]:
        """Return every worker pool of a space in ``SortOrder`` (one request, ``.../workerpools/all``)."""
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return self._get_list(f"/api/{space_id}/workerpools/all")

    def list_workers(
        self,
        space_id: str,
        worker_pool_id: str | None = None,
        thumbprint: str | None = None,
        comm_styles: str | Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """
        Return every worker of a space matching all given filters, sorted by name (all pages).

        :param space_id: e.g. ``Spaces-1``.
        :param worker_pool_id: only workers in this pool (``workerPoolIds``), e.g. ``WorkerPools-21``.
        :param thumbprint: only workers whose Tentacle has this certificate thumbprint (hex).
        :param comm_styles: only these communication styles, e.g. ``"TentacleActive"`` (polling) or a list.
        """
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        params: dict[str, str] = {}
        if worker_pool_id is not None:
            params["workerPoolIds"] = self._check_id("worker_pool_id", worker_pool_id, _WORKER_POOL_ID, "WorkerPools-1")
        if thumbprint is not None:
            params["thumbprint"] = self._check_id("thumbprint", thumbprint, _THUMBPRINT, "0E80575D3BD8...")
        if comm_styles is not None:
            styles = [comm_styles] if isinstance(comm_styles, str) else list(comm_styles)
            if not styles:
                raise ValueError("comm_styles must name at least one communication style, got an empty list")
            for style in styles:
                self._check_id("comm_styles item", style, _COMM_STYLE, "TentacleActive")
            params["commStyles"] = ",".join(styles)
        return self._get_paged(f"/api/{space_id}/workers", params)

    def list_worker_task_leases(self, space_id: str) -> list[dict[str, Any]]:
        """Every worker task lease of a space (``GET /api/{spaceId}/workertaskleases``, all pages; Octopus 2024.2+).

        Items: ``Id, Name, WorkerId, WorkerPoolId, ServerTaskId, SpaceId, TakenAt, Exclusive``. A worker shared
        into N spaces is N records: it is busy while a lease in any space holds one of them.
        """
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return self._get_paged(f"/api/{space_id}/workertaskleases")

    def list_tasks(self, space_id: str, *, states: Sequence[str] = ("Queued", "Executing")) -> list[dict[str, Any]]:
        """A space's server tasks in these states (``GET /api/{spaceId}/tasks?states=...``, all pages), newest first.

        ``Queued`` + ``Executing`` is the scaler's leading signal of demand; leases are the load itself.
        """
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        unknown = sorted(set(states) - set(TASK_STATES))
        if unknown or not states:
            raise ValueError(f"states must be a non-empty subset of {list(TASK_STATES)}, got {list(states)!r}")
        return self._get_paged(f"/api/{space_id}/tasks", {"states": ",".join(states)})

    def get_task(self, space_id: str, task_id: str) -> dict[str, Any]:
        """One server task (``GET /api/{spaceId}/tasks/{id}``): its ``State``, ``IsCompleted`` and times."""
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        self._check_id("task_id", task_id, _TASK_ID, "ServerTasks-1")
        return self._request("GET", f"/api/{space_id}/tasks/{task_id}")

    def get_worker(self, space_id: str, worker_id: str) -> dict[str, Any]:
        """Return one worker; :class:`~octopus.exceptions.OctopusNotFoundError` if it does not exist."""
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        self._check_id("worker_id", worker_id, _WORKER_ID, "Workers-1")
        return self._request("GET", f"/api/{space_id}/workers/{worker_id}")

    def list_machine_policies(self, space_id: str) -> list[dict[str, Any]]:
        """Return every machine policy of a space, sorted by name (one request)."""
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        return self._get_list(f"/api/{space_id}/machinepolicies/all")

    def get_default_machine_policy(self, space_id: str) -> dict[str, Any]:
        """Return the space's default machine policy (``IsDefault``); OctopusNotFoundError if it has none."""
        policies = self.list_machine_policies(space_id)
        for policy in policies:
            if isinstance(policy, dict) and policy.get("IsDefault") is True:
                return policy
        raise OctopusNotFoundError(
            f"space {space_id} has no default machine policy among its {len(policies)} policies",
            method="GET",
            path=f"/api/{space_id}/machinepolicies/all",
        )

    def create_worker(self, space_id: str, worker: Mapping[str, Any]) -> dict[str, Any]:
        """
        Create a worker in a space and return it as stored (``POST``, 201).

        ``worker`` needs at least ``Name``, ``Endpoint``, ``WorkerPoolIds`` and ``IsDisabled``; ``SpaceId`` is
        set to ``space_id`` when absent and must match it when present. Retried on 5xx/connection errors: the
        worker may then exist already, so look it up by thumbprint before calling again.
        """
        body = self._worker_body(space_id, worker)
        return self._request("POST", f"/api/{space_id}/workers", json=body)

    def update_worker(self, space_id: str, worker: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a worker's writable fields (``PUT`` to its ``Id``) and return it as stored."""
        body = self._worker_body(space_id, worker)
        worker_id = self._check_id("worker['Id']", body.get("Id"), _WORKER_ID, "Workers-1")
        return self._request("PUT", f"/api/{space_id}/workers/{worker_id}", json=body)

    def delete_worker(self, space_id: str, worker_id: str, *, missing_ok: bool = False) -> None:
        """
        Delete a worker from a space.

        A 404 on a *retry* counts as success: the earlier attempt whose response was lost may have deleted it.

        :param missing_ok: treat "already gone" (404) as success, e.g. when re-running a cleanup.
        """
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        self._check_id("worker_id", worker_id, _WORKER_ID, "Workers-1")
        try:
            self._request("DELETE", f"/api/{space_id}/workers/{worker_id}")
        except OctopusNotFoundError as error:
            if not (missing_ok or error.attempts > 1):
                raise
            self.log.info("Octopus worker %s in %s is already gone (%s)", worker_id, space_id, error.detail)

    def _worker_body(self, space_id: str, worker: Mapping[str, Any]) -> dict[str, Any]:
        self._check_id("space_id", space_id, _SPACE_ID, "Spaces-1")
        if not isinstance(worker, Mapping):
            raise TypeError(f"worker must be a dict (an Octopus WorkerResource), got {type(worker).__name__}")
        body = dict(worker)
        body_space = body.setdefault("SpaceId", space_id)
        if body_space != space_id:
            raise ValueError(f"worker['SpaceId'] is {body_space!r} but the request targets space {space_id!r}")
        return body
