"""The Octopus Deploy REST API, written once, without I/O: the core under the sync hook and the async client.

Everything the package knows about Octopus's API lives here: routes, query building, id checks, paging
(``Links["Page.Next"]`` to the end), the typed errors of :mod:`octopus.exceptions` (``ErrorMessage``/``Errors[]``,
``Retry-After``, hints, the API key scrubbed), the retry policy (tenacity: which errors, how long, how often), pacing
(:mod:`octopus.pacing`) and the connection's validation. None of it sends a request or sleeps.

Each API call is an *operation*: a generator that yields :data:`Effect` descriptions (:class:`Connect`,
:class:`Pace`, :class:`Send`, :class:`Sleep`, :class:`Parallel`) and is sent back what carrying each out produced,
so the same code drives both transports (a "sans-I/O" core):

* :class:`octopus.hooks.OctopusHook` carries effects out with ``requests`` and ``time.sleep`` (threads for
  :class:`Parallel`);
* :class:`octopus.aio.AsyncOctopusClient` with ``httpx`` and ``asyncio.sleep`` (coroutines for :class:`Parallel`).

A transport answers :class:`Send` with a :class:`Response` (any HTTP status) or an :class:`Unreachable` (no HTTP
answer: timeout, refused, TLS); it never raises for those. Both transports expose the operations of
:data:`OPERATIONS` as methods of the same names and signatures (:func:`bind_operations`), and run any other
operation written over this core (a composite such as :func:`octopus.operations.share_steps`) with ``drive()``.
"""

from __future__ import annotations

import email.utils
import functools
import html
import json as jsonlib
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import tenacity

from octopus import settings
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

__all__ = [
    "OPERATIONS",
    "TASK_STATES",
    "Connect",
    "OctopusApi",
    "Operation",
    "Pace",
    "Parallel",
    "Request",
    "Response",
    "RetryEvent",
    "Send",
    "Sleep",
    "Step",
    "Transport",
    "Unreachable",
    "bind_operations",
    "parallel_map",
    "retry_policy",
]

SPACE_ID = re.compile(r"Spaces-\d+")
WORKER_ID = re.compile(r"Workers-\d+")
TASK_ID = re.compile(r"ServerTasks-\d+")
WORKER_POOL_ID = re.compile(r"WorkerPools-\d+")
THUMBPRINT = re.compile(r"[0-9A-Fa-f]+")
COMM_STYLE = re.compile(r"[A-Za-z]+")
TASK_STATES = ("New", "Queued", "Executing", "Cancelling", "Success", "Failed", "Canceled", "TimedOut")
_URI_TEMPLATE_EXPR = re.compile(r"\{[^}]*\}")
_APIKEY_QUERY = re.compile(r"(?i)(api_?key=)[^&#\s'\"]+")
_HTML_BLOCK = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
_HTML_TAG = re.compile(r"(?s)<[^>]*>")
_SNIPPET_CHARS = 200

#: The connection's tuning extras, each also a keyword argument of both transports.
TUNING = (
    "page_size",
    "max_requests_per_minute",
    "max_attempts",
    "max_retry_seconds",
    "retry_initial_wait",
    "retry_max_wait",
    "timeout",
)

#: Extras the package consumes; the HTTP provider would otherwise send them as HTTP headers.
OWN_EXTRAS = (
    *TUNING,
    "verify",
    "verify_ssl",
    "evidence_secret",  # a secret of the package's own: never sent anywhere
)

#: The tuning extras' declared defaults (octopus.settings).
DEFAULTS: dict[str, Any] = {name: settings.default(name) for name in TUNING}


def tuning_overrides(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A transport's tuning keyword arguments (its ``locals()``), as the core's overrides (``None``: not given)."""
    return {name: arguments[name] for name in TUNING}


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


# ---------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Request:
    """One HTTP request to send: absolute ``url``; ``display`` is the server-relative path for logs and errors."""

    method: str
    url: str
    display: str
    json: Any = None


@dataclass(frozen=True)
class Response:
    """What a transport got back (any status); ``headers`` is the transport's case-insensitive mapping."""

    status: int
    reason: str
    headers: Mapping[str, str]
    text: str


@dataclass(frozen=True)
class Unreachable:
    """No HTTP answer: ``kind`` is ``timeout``, ``unreachable`` (``tls``: a certificate/handshake failure) or
    ``other``; ``error`` is the transport's own exception (its text is scrubbed before it reaches an error)."""

    kind: str
    error: BaseException
    tls: bool = False


@dataclass(frozen=True)
class Connect:
    """Open the transport (look the connection up and :meth:`OctopusApi.configure` the core) unless it is open;
    answer None, or the :class:`~octopus.exceptions.OctopusError` that opening raised."""


@dataclass(frozen=True)
class Pace:
    """Take a token from ``bucket`` before a request: the sync hook blocks, the async client awaits."""

    bucket: TokenBucket


@dataclass(frozen=True)
class Send:
    """Send ``request`` once; answer with a :class:`Response` or an :class:`Unreachable`."""

    request: Request


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` (a retry's backoff) without holding up other work of the transport."""

    seconds: float


@dataclass(frozen=True)
class Parallel:
    """Run ``operations`` with at most ``limit`` at once; answer with their results, in order. An operation that
    raises makes the whole effect raise (write operations that must not, catch their errors themselves)."""

    operations: Sequence[Generator[Any, Any, Any]]
    limit: int = 1


Effect = Connect | Pace | Send | Sleep | Parallel
#: What every operation is: a generator of effects returning the call's result.
Operation = Generator[Effect, Any, Any]


class Step:
    """Steps one operation: ``effect`` is what it waits for; :meth:`send` hands back the outcome of carrying it
    out. Once ``done``, ``value`` is the operation's result (its exceptions propagate from :meth:`send`)."""

    def __init__(self, operation: Operation) -> None:
        self._operation = operation
        self.done = False
        self.value: Any = None
        self.effect: Any = None
        self.send(None)

    def send(self, outcome: Any) -> None:
        try:
            self.effect = self._operation.send(outcome)
        except StopIteration as stop:
            self.done, self.value, self.effect = True, stop.value, None


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], parallelism: int) -> list[Any]:
    """``[fn(i) for i in items]`` on up to ``parallelism`` threads, results in order."""
    if parallelism <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(parallelism, len(items))) as pool:
        return list(pool.map(fn, items))


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RetryEvent:
    """One retry made: which request, why, and how long it waited before the next attempt."""

    method: str
    path: str
    attempt: int
    reason: str
    wait_seconds: float
    retry_after: float | None


@dataclass(frozen=True)
class Settings:
    page_size: int
    max_requests_per_minute: float | None
    max_attempts: int
    max_retry_seconds: float
    retry_initial_wait: float
    retry_max_wait: float
    timeout: float


def config_error(conn_id: str, problem: str) -> OctopusConfigurationError:
    return OctopusConfigurationError(f"connection {conn_id!r}: {problem}")


def missing_connection(conn_id: str) -> OctopusConfigurationError:
    """The error for a connection Airflow does not know, naming the environment variable that would define it."""
    env = f"AIRFLOW_CONN_{conn_id.upper()}"
    return config_error(conn_id, f"is not defined; create it in Airflow or set the environment variable {env}")


def _parse_number(conn_id: str, name: str, value: Any, *, integer: bool, minimum: float, strict: bool) -> Any:
    """Parse a setting from an extra (maybe a string) or a kwarg; ``strict``: ``> minimum``, else ``>=``."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    kind = "an integer" if integer else "a number"
    problem = f"{name} must be {kind} {bound}, got {value!r}"
    if isinstance(value, bool):
        raise config_error(conn_id, problem)
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise config_error(conn_id, problem) from None
    if not math.isfinite(number) or (integer and not number.is_integer()):
        raise config_error(conn_id, problem)
    if number < minimum or (strict and number == minimum):
        raise config_error(conn_id, problem)
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
    raise config_error(
        conn_id,
        f"extra 'verify' must be true, false or the path of an existing CA bundle, got {value!r}",
    )


def is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def resolve_settings(conn_id: str, extras: Mapping[str, Any], overrides: Mapping[str, Any]) -> Settings:
    """The settings of one client: defaults, then the connection's extras, then keyword arguments."""
    # A null extra (an empty field of the connection form) or a blank URI-form value means the default.
    given = {k: v for k, v in extras.items() if k in DEFAULTS and not is_unset(v)}
    raw = {**DEFAULTS, **given, **overrides}
    rate = raw["max_requests_per_minute"]
    if isinstance(rate, str) and not rate.strip():
        rate = None

    def number(name: str, *, integer: bool = False, minimum: float = 0, strict: bool = False) -> Any:
        return _parse_number(conn_id, name, raw[name], integer=integer, minimum=minimum, strict=strict)

    return Settings(
        page_size=number("page_size", integer=True, strict=True),
        max_requests_per_minute=None
        if rate is None
        else _parse_number(conn_id, "max_requests_per_minute", rate, integer=False, minimum=0, strict=True),
        max_attempts=number("max_attempts", integer=True, minimum=1),
        max_retry_seconds=number("max_retry_seconds"),
        retry_initial_wait=number("retry_initial_wait"),
        retry_max_wait=number("retry_max_wait"),
        timeout=number("timeout", strict=True),
    )


# ---------------------------------------------------------------------------------------------- retries


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
    """tenacity arguments of every request: which errors, how long, how often.

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


# ---------------------------------------------------------------------------------------------- text hygiene


def _html_to_text(text: str) -> str:
    text = _HTML_BLOCK.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    return " ".join(html.unescape(text).split())


def _snippet(text: str) -> str:
    text = _html_to_text(text)
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


def check_id(name: str, value: Any, pattern: re.Pattern[str], example: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{name} must look like {example!r}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- the core


@dataclass
class _Counter:
    value: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self) -> None:
        with self.lock:
            self.value += 1


class OctopusApi:
    """
    The Octopus API without a transport: configuration, URL building, errors, retries, pacing and every call.

    A transport owns one and carries out its operations' effects. Safe to share between threads (a locked request
    counter, a thread-safe pacing bucket); the operations themselves hold no shared state.

    :param octopus_conn_id: the Airflow connection (for messages).
    :param overrides: keyword settings that override the connection's extras (``page_size``, ``timeout``, ...).
    :param pacing: a bucket shared with other clients of the same Octopus user; else one is built from
        ``max_requests_per_minute`` (divided by ``concurrency``) when the connection sets it.
    :param concurrency: how many clients share the key's rate limit (each paces at its share).
    :param log: where retries and debug lines go (the transport's logger).
    """

    def __init__(
        self,
        octopus_conn_id: str,
        overrides: Mapping[str, Any],
        *,
        pacing: TokenBucket | None = None,
        concurrency: int = 1,
        log: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1 (tasks sharing the API key), got {concurrency!r}")
        if pacing is not None and concurrency != 1:
            raise ValueError(
                "pass either pacing (a bucket shared by every hook of the key) or concurrency (each hook paces "
                f"itself at a share of the limit), not both; got concurrency={concurrency}"
            )
        self.octopus_conn_id = octopus_conn_id
        self.overrides = {key: value for key, value in overrides.items() if value is not None}
        # Validate keyword arguments now, so a typo fails where the client is built.
        resolve_settings(octopus_conn_id, {}, self.overrides)
        self.concurrency = concurrency
        self.log = log or logging.getLogger(__name__)
        self.shared_bucket = pacing
        self.bucket: TokenBucket | None = pacing
        self.settings: Settings | None = None
        self.verify: bool | str = True
        self.api_key: str | None = None
        self.evidence_secret: str | None = None
        self.origin = ""
        self.prefix = ""
        self.base_url = ""
        self._requests = _Counter()
        #: Every retry made, oldest first (method, path, reason, wait); never contains secrets.
        self.retry_events: list[RetryEvent] = []

    # ------------------------------------------------------------------ configuration

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._requests.value

    def count_request(self) -> None:
        self._requests.add()

    @property
    def configured(self) -> bool:
        return self.settings is not None

    def set_base_url(self, connection: Connection) -> None:
        """Validate host/schema/port and derive the base URL (``scheme://host[:port][/prefix]``)."""
        conn_id = self.octopus_conn_id
        host = (connection.host or "").strip()
        if not host:
            raise config_error(
                conn_id, "has no host; set it to the Octopus server URL, e.g. https://octopus.example.com"
            )
        if "://" not in host:
            host = f"{(connection.schema or 'https').strip().lower()}://{host}"
        parts = urlsplit(host)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise config_error(
                conn_id,
                f"unsupported URL scheme {scheme!r} in host; use https:// (or http:// for a local server)",
            )
        if parts.username or parts.password:
            raise config_error(
                conn_id, "host must not contain credentials; put the API key in the connection's password"
            )
        if parts.query or parts.fragment:
            raise config_error(conn_id, "host must not contain a query string or fragment")
        if not parts.hostname:
            raise config_error(conn_id, f"host {host!r} has no server name")
        try:
            url_port = parts.port
        except ValueError:
            raise config_error(conn_id, f"host {host!r} has an invalid port") from None
        netloc = parts.netloc
        if connection.port:
            if url_port is not None and url_port != connection.port:
                raise config_error(conn_id, f"port {connection.port} conflicts with port {url_port} in host {host!r}")
            if url_port is None:
                netloc = f"{netloc}:{connection.port}"
        prefix = parts.path.rstrip("/")
        # ".../api" is the API root, not a path prefix: accept it rather than requesting /api/api/...
        if prefix.lower().endswith("/api"):
            prefix = prefix[: -len("/api")]
        self.origin = f"{scheme}://{netloc}"
        self.prefix = prefix
        self.base_url = self.origin + prefix

    def configure(self, connection: Connection) -> None:
        """Check the connection (host, scheme, API key, extras) and take its settings; raises
        :class:`~octopus.exceptions.OctopusConfigurationError` naming what to fix, before any request."""
        conn_id = self.octopus_conn_id
        self.set_base_url(connection)
        key = (connection.password or "").strip()
        if not key:
            raise config_error(conn_id, "has no API key; set the connection's password to an Octopus API key")
        if any(ord(char) < 33 or ord(char) > 126 for char in key):
            raise config_error(conn_id, "API key (password) contains spaces, control or non-ASCII characters")
        extras = connection.extra_dejson
        if not isinstance(extras, Mapping):
            raise config_error(conn_id, "extra must be a JSON object")
        settings = resolve_settings(conn_id, extras, self.overrides)
        verify = next((extras[k] for k in ("verify", "verify_ssl") if k in extras and not is_unset(extras[k])), True)
        self.verify = _parse_verify(conn_id, verify)
        self.api_key = key
        evidence = extras.get("evidence_secret")
        self.evidence_secret = evidence.strip() if isinstance(evidence, str) and evidence.strip() else key
        if self.shared_bucket is None and settings.max_requests_per_minute is not None:
            self.bucket = pacing_share(settings.max_requests_per_minute, self.concurrency)
        self.settings = settings

    def headers(self) -> dict[str, str]:
        """The headers of every request: JSON, and the API key (only ever sent as this header)."""
        assert self.api_key is not None, "configure() first"
        return {"Accept": "application/json", "X-Octopus-ApiKey": self.api_key}

    def signer(self) -> Signer:
        """What seals and verifies the deployment ledgers' evidence: keyed by this connection's secret."""
        assert self.evidence_secret is not None, "configure() first"
        return Signer(self.evidence_secret)

    # ------------------------------------------------------------------ text and URLs

    def scrub(self, text: str) -> str:
        """Remove the API key (and any ``apikey=`` query value) from text bound for logs or errors."""
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return _APIKEY_QUERY.sub(r"\1***", text)

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """Return (absolute URL, display path) for a server-relative path or a link from a response."""
        path = _URI_TEMPLATE_EXPR.sub("", path)
        parts = urlsplit(path)
        if parts.scheme or parts.netloc:
            origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
            if origin != self.origin.lower():
                raise OctopusError(f"refusing to follow a link to another server: {self.scrub(origin)}")
            url = path
            path = path[len(origin) :]
            if self.prefix and path.startswith(self.prefix + "/"):
                path = path[len(self.prefix) :]
        else:
            if not path.startswith("/"):
                path = "/" + path
            # Octopus links start with /api; a server behind a virtual directory may include the prefix.
            if self.prefix and path.startswith(self.prefix + "/"):
                path = path[len(self.prefix) :]
            url = self.base_url + path
        if params:
            query = urlencode({k: v for k, v in params.items() if v is not None}, safe=",")
            joiner = "&" if "?" in url else "?"
            url, path = f"{url}{joiner}{query}", f"{path}{joiner}{query}"
        return url, self.scrub(path)

    def outside_server(self, method: str, url: str) -> tuple[str, OctopusError | None]:
        """(display path, the error refusing it when ``url`` is not on the connection's server, else None)."""
        parts = urlsplit(url)
        display = self.scrub(parts.path + (f"?{parts.query}" if parts.query else ""))
        origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        if origin == self.origin.lower():
            return display, None
        return display, OctopusError(
            f"refusing to send the API key to {self.scrub(origin)}: it is not the connection's server {self.origin}",
            method=method,
            path=display,
        )

    # ------------------------------------------------------------------ errors

    def error_from_response(self, method: str, display: str, response: Response) -> OctopusError:
        """The typed error of a non-2xx answer: Octopus's ``ErrorMessage``/``Errors[]``, ``Retry-After``, a hint."""
        status = response.status
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
                errors = [self.scrub(str(item)) for item in raw_errors]
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
            self.scrub(summary + detail),
            method=method,
            path=display,
            status=status,
            error_message=self.scrub(error_message) if error_message else None,
            errors=errors,
            retry_after=retry_after,
            hint=hint,
        )

    def transport_error(self, failure: Unreachable, method: str, display: str) -> OctopusError:
        """The typed error for a request that got no HTTP answer, key scrubbed."""
        error = failure.error
        what = f"({type(error).__name__}: {self.scrub(str(error))})"
        if failure.kind == "timeout":
            timeout = self.settings.timeout if self.settings else DEFAULTS["timeout"]
            return OctopusUnavailableError(
                f"no response from {self.base_url} within {timeout:g} s {what}", method=method, path=display
            )
        if failure.kind == "unreachable":
            unavailable = OctopusUnavailableError(
                f"could not reach {self.base_url} {what}", method=method, path=display
            )
            # A TLS failure (bad certificate, wrong CA) will not heal by retrying.
            unavailable.retryable = not failure.tls
            return unavailable
        return OctopusError(f"request failed {what}", method=method, path=display)

    def decode(self, method: str, display: str, response: Response) -> Any:
        """The JSON body of a 2xx answer (None when empty); a non-JSON body raises naming what came instead."""
        text = response.text
        if not text.strip():
            return None
        try:
            return jsonlib.loads(text)
        except ValueError:
            content_type = response.headers.get("Content-Type", "") or "no content type"
            raise OctopusError(
                self.scrub(
                    f"expected JSON, but the server answered with a non-JSON body ({content_type}): "
                    f"{_snippet(text)!r}; is the host the Octopus server's base URL?"
                ),
                method=method,
                path=display,
                status=response.status,
            ) from None

    def _log_retry(self, method: str, display: str, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.upcoming_sleep
        reason = self.scrub(error.detail if isinstance(error, OctopusError) else repr(error))
        retry_after = getattr(error, "retry_after", None)
        self.retry_events.append(RetryEvent(method, display, state.attempt_number, reason, wait, retry_after))
        assert self.settings is not None
        self.log.warning(
            "Octopus %s %s failed (%s); retrying in %.2f s (attempt %d; at most %d besides 429s, within %.0f s)",
            method,
            display,
            reason,
            wait,
            state.attempt_number + 1,
            self.settings.max_attempts,
            self.settings.max_retry_seconds,
        )

    # ------------------------------------------------------------------ one request, retried

    def sent(self, request: Request, answer: Response | Unreachable, started: float) -> Response:
        """Check what one send got back: a 2xx :class:`Response`, else raise its typed error."""
        if isinstance(answer, Unreachable):
            raise self.transport_error(answer, request.method, request.display)
        self.log.debug(
            "Octopus %s %s -> %s in %.0f ms",
            request.method,
            request.display,
            answer.status,
            (time.monotonic() - started) * 1000,
        )
        if 200 <= answer.status < 300:
            return answer
        raise self.error_from_response(request.method, request.display, answer)

    def connect(self) -> Operation:
        """Have the transport open (and this core configured); its configuration error is raised here."""
        error = yield Connect()
        if error is not None:
            raise error

    def _attempt(self, request: Request) -> Operation:
        if self.bucket is not None:
            yield Pace(self.bucket)
        self.count_request()
        started = time.monotonic()
        answer = yield Send(request)
        return self.sent(request, answer, started)

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Operation:
        """One logical request, retried by :func:`retry_policy`: returns the decoded JSON body (None if empty)."""
        yield from self.connect()
        assert self.settings is not None
        url, display = self.url(path, params)
        request = Request(method, url, display, json)
        retrying = tenacity.Retrying(
            **retry_policy(self.settings, lambda state: self._log_retry(method, display, state))
        )
        retrying.begin()
        state = tenacity.RetryCallState(retry_object=retrying, fn=None, args=(), kwargs={})
        attempts = 0
        try:
            while True:
                action = retrying.iter(retry_state=state)
                if isinstance(action, tenacity.DoAttempt):
                    attempts += 1
                    try:
                        response = yield from self._attempt(request)
                    except OctopusError:
                        state.set_exception(sys.exc_info())  # type: ignore[arg-type]
                    else:
                        state.set_result(response)
                elif isinstance(action, tenacity.DoSleep):
                    state.prepare_for_next_attempt()
                    yield Sleep(float(action))
                else:
                    break
        except OctopusError as error:
            if attempts > 1:
                error.set_attempts(attempts)
            raise
        return self.decode(method, display, action)

    def get_list(self, path: str, params: Mapping[str, Any] | None = None) -> Operation:
        """GET an endpoint answering a bare JSON array (the ``/all`` endpoints)."""
        body = yield from self.call("GET", path, params=params)
        if not isinstance(body, list):
            raise OctopusError(
                f"expected a JSON array, got {type(body).__name__}", method="GET", path=self.url(path, params)[1]
            )
        return body

    def get_paged(self, path: str, params: Mapping[str, Any] | None = None) -> Operation:
        """GET every page of a paged collection, following ``Links["Page.Next"]`` until the last page."""
        yield from self.connect()
        assert self.settings is not None
        query: Mapping[str, Any] | None = {**(params or {}), "take": self.settings.page_size}
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        next_path: str | None = path
        while next_path is not None:
            url, display = self.url(next_path, query)
            if url in seen:
                raise OctopusError("the server's Page.Next link repeats a page already read", path=display)
            seen.add(url)
            page = yield from self.call("GET", next_path, params=query)
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

    # ------------------------------------------------------------------ the calls (see OPERATIONS)

    def test_connection(self) -> Operation:
        """Check URL and key with ``GET /api`` and ``GET /api/users/me`` (the Airflow UI's Test button):
        ``(True, "Connected to Octopus Deploy <version> at <url>")`` or ``(False, <the error>)``."""
        try:
            root = yield from self.call("GET", "/api")
            yield from self.call("GET", "/api/users/me")
        except OctopusError as error:
            return False, str(error)
        version = root.get("Version", "?") if isinstance(root, dict) else "?"
        return True, f"Connected to Octopus Deploy {version} at {self.base_url}"

    def get_space(self, space_id: str) -> Operation:
        """Return one space (``GET /api/spaces/{id}``)."""
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        return (yield from self.call("GET", f"/api/spaces/{space_id}"))

    def list_spaces(self) -> Operation:
        """Return every space the key's user can see, sorted by name (one request, ``/api/spaces/all``)."""
        return (yield from self.get_list("/api/spaces/all"))

    def list_worker_pools(self, space_id: str) -> Operation:
        """Return every worker pool of a space in ``SortOrder`` (one request, ``.../workerpools/all``)."""
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        return (yield from self.get_list(f"/api/{space_id}/workerpools/all"))

    def list_workers(
        self,
        space_id: str,
        worker_pool_id: str | None = None,
        thumbprint: str | None = None,
        comm_styles: str | Iterable[str] | None = None,
    ) -> Operation:
        """
        Return every worker of a space matching all given filters, sorted by name (all pages).

        :param space_id: e.g. ``Spaces-1``.
        :param worker_pool_id: only workers in this pool (``workerPoolIds``), e.g. ``WorkerPools-21``.
        :param thumbprint: only workers whose Tentacle has this certificate thumbprint (hex).
        :param comm_styles: only these communication styles, e.g. ``"TentacleActive"`` (polling) or a list.
        """
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        params: dict[str, str] = {}
        if worker_pool_id is not None:
            params["workerPoolIds"] = check_id("worker_pool_id", worker_pool_id, WORKER_POOL_ID, "WorkerPools-1")
        if thumbprint is not None:
            params["thumbprint"] = check_id("thumbprint", thumbprint, THUMBPRINT, "0E80575D3BD8...")
        if comm_styles is not None:
            styles = [comm_styles] if isinstance(comm_styles, str) else list(comm_styles)
            if not styles:
                raise ValueError("comm_styles must name at least one communication style, got an empty list")
            for style in styles:
                check_id("comm_styles item", style, COMM_STYLE, "TentacleActive")
            params["commStyles"] = ",".join(styles)
        return (yield from self.get_paged(f"/api/{space_id}/workers", params))

    def list_worker_task_leases(self, space_id: str) -> Operation:
        """Every worker task lease of a space (``GET /api/{spaceId}/workertaskleases``, all pages; Octopus 2024.2+).

        Items: ``Id, Name, WorkerId, WorkerPoolId, ServerTaskId, SpaceId, TakenAt, Exclusive``. A worker shared
        into N spaces is N records: it is busy while a lease in any space holds one of them.
        """
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        return (yield from self.get_paged(f"/api/{space_id}/workertaskleases"))

    def list_tasks(self, space_id: str, *, states: Sequence[str] = ("Queued", "Executing")) -> Operation:
        """A space's server tasks in these states (``GET /api/{spaceId}/tasks?states=...``, all pages), newest first.

        ``Queued`` + ``Executing`` is the scaler's leading signal of demand; leases are the load itself.
        """
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        unknown = sorted(set(states) - set(TASK_STATES))
        if unknown or not states:
            raise ValueError(f"states must be a non-empty subset of {list(TASK_STATES)}, got {list(states)!r}")
        return (yield from self.get_paged(f"/api/{space_id}/tasks", {"states": ",".join(states)}))

    def get_task(self, space_id: str, task_id: str) -> Operation:
        """One server task (``GET /api/{spaceId}/tasks/{id}``): its ``State``, ``IsCompleted`` and times."""
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        check_id("task_id", task_id, TASK_ID, "ServerTasks-1")
        return (yield from self.call("GET", f"/api/{space_id}/tasks/{task_id}"))

    def get_worker(self, space_id: str, worker_id: str) -> Operation:
        """Return one worker; :class:`~octopus.exceptions.OctopusNotFoundError` if it does not exist."""
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        check_id("worker_id", worker_id, WORKER_ID, "Workers-1")
        return (yield from self.call("GET", f"/api/{space_id}/workers/{worker_id}"))

    def list_machine_policies(self, space_id: str) -> Operation:
        """Return every machine policy of a space, sorted by name (one request)."""
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        return (yield from self.get_list(f"/api/{space_id}/machinepolicies/all"))

    def get_default_machine_policy(self, space_id: str) -> Operation:
        """Return the space's default machine policy (``IsDefault``); OctopusNotFoundError if it has none."""
        policies = yield from self.list_machine_policies(space_id)
        for policy in policies:
            if isinstance(policy, dict) and policy.get("IsDefault") is True:
                return policy
        raise OctopusNotFoundError(
            f"space {space_id} has no default machine policy among its {len(policies)} policies",
            method="GET",
            path=f"/api/{space_id}/machinepolicies/all",
        )

    def create_worker(self, space_id: str, worker: Mapping[str, Any]) -> Operation:
        """
        Create a worker in a space and return it as stored (``POST``, 201).

        ``worker`` needs at least ``Name``, ``Endpoint``, ``WorkerPoolIds`` and ``IsDisabled``; ``SpaceId`` is
        set to ``space_id`` when absent and must match it when present. Retried on 5xx/connection errors: the
        worker may then exist already, so look it up by thumbprint before calling again.
        """
        body = worker_body(space_id, worker)
        return (yield from self.call("POST", f"/api/{space_id}/workers", json=body))

    def update_worker(self, space_id: str, worker: Mapping[str, Any]) -> Operation:
        """Replace a worker's writable fields (``PUT`` to its ``Id``) and return it as stored."""
        body = worker_body(space_id, worker)
        worker_id = check_id("worker['Id']", body.get("Id"), WORKER_ID, "Workers-1")
        return (yield from self.call("PUT", f"/api/{space_id}/workers/{worker_id}", json=body))

    def delete_worker(self, space_id: str, worker_id: str, *, missing_ok: bool = False) -> Operation:
        """
        Delete a worker from a space.

        A 404 on a *retry* counts as success: the earlier attempt whose response was lost may have deleted it.

        :param missing_ok: treat "already gone" (404) as success, e.g. when re-running a cleanup.
        """
        check_id("space_id", space_id, SPACE_ID, "Spaces-1")
        check_id("worker_id", worker_id, WORKER_ID, "Workers-1")
        try:
            yield from self.call("DELETE", f"/api/{space_id}/workers/{worker_id}")
        except OctopusNotFoundError as error:
            if not (missing_ok or error.attempts > 1):
                raise
            self.log.info("Octopus worker %s in %s is already gone (%s)", worker_id, space_id, error.detail)


def worker_body(space_id: str, worker: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``worker`` to send to ``space_id`` (``SpaceId`` set, and checked when given)."""
    check_id("space_id", space_id, SPACE_ID, "Spaces-1")
    if not isinstance(worker, Mapping):
        raise TypeError(f"worker must be a dict (an Octopus WorkerResource), got {type(worker).__name__}")
    body = dict(worker)
    body_space = body.setdefault("SpaceId", space_id)
    if body_space != space_id:
        raise ValueError(f"worker['SpaceId'] is {body_space!r} but the request targets space {space_id!r}")
    return body


class Transport:
    """What both transports share: the core they carry out (``api``) and what it records."""

    _api: OctopusApi

    @property
    def api(self) -> OctopusApi:
        """The API core this transport carries out (its settings once the connection is read; its operations)."""
        return self._api

    @property
    def request_count(self) -> int:
        """HTTP requests actually sent so far, retries included."""
        return self._api.request_count

    @property
    def retry_events(self) -> list[RetryEvent]:
        """Every retry made so far, oldest first (method, path, reason, wait); never contains secrets."""
        return self._api.retry_events


#: The calls both transports offer as methods of these names, with these signatures and docstrings.
OPERATIONS = (
    "test_connection",
    "get_space",
    "list_spaces",
    "list_worker_pools",
    "list_workers",
    "list_worker_task_leases",
    "list_tasks",
    "get_task",
    "get_worker",
    "list_machine_policies",
    "get_default_machine_policy",
    "create_worker",
    "update_worker",
    "delete_worker",
)


def bind_operations(as_method: Callable[[Callable[..., Operation]], Callable[..., Any]]):
    """Class decorator: give a transport every call of :data:`OPERATIONS`, each ``as_method(operation)`` (which
    drives the operation on the transport); name, signature and docstring are the operation's."""

    def decorate(cls: type) -> type:
        for name in OPERATIONS:
            method = as_method(getattr(OctopusApi, name))
            functools.update_wrapper(method, getattr(OctopusApi, name))
            method.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, method)
        return cls

    return decorate
