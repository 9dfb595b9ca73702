"""Typed errors of the Octopus API core (:mod:`octopus.api`), raised alike by :class:`octopus.hooks.OctopusHook` and
:class:`octopus.aio.AsyncOctopusClient`.

Every error names what failed (HTTP method, server-relative path, status) and carries Octopus's own
``ErrorMessage`` and ``Errors[]`` when the server sent them, so a failed Airflow task says what to fix.
None of them ever contains the API key: the core scrubs every text it puts into an error.

=================================  ============================================================
class                              raised for
=================================  ============================================================
``OctopusConfigurationError``      bad Airflow connection or hook arguments (before any request)
``OctopusAuthenticationError``     401: missing, invalid or expired API key
``OctopusPermissionError``         403: the key's user lacks a permission
``OctopusNotFoundError``           404: unknown space or resource
``OctopusValidationError``         400 / 409: the server rejected the request body
``OctopusRateLimitError``          429, still failing after the retries
``OctopusServerError``             5xx, still failing after the retries
``OctopusUnavailableError``        connection error or timeout, still failing after the retries
``OctopusError``                   anything else (unexpected status or response shape)
=================================  ============================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk.exceptions import AirflowException

__all__ = [
    "OctopusAuthenticationError",
    "OctopusConfigurationError",
    "OctopusError",
    "OctopusNotFoundError",
    "OctopusPermissionError",
    "OctopusRateLimitError",
    "OctopusServerError",
    "OctopusUnavailableError",
    "OctopusValidationError",
]


class OctopusError(AirflowException):
    """
    Base class of all Octopus errors.

    :param summary: what went wrong, in one sentence (already free of secrets).
    :param method: HTTP method of the failed request, if any.
    :param path: server-relative path (with query) of the failed request, if any.
    :param status: HTTP status code, if a response arrived.
    :param error_message: Octopus's ``ErrorMessage``, if the body had one.
    :param errors: Octopus's ``Errors[]`` (validation details), if any.
    :param retry_after: seconds the server asked us to wait (``Retry-After``), if any.
    :param attempts: how many times the request was sent before giving up.
    :param hint: what to check or change, when the core can tell.
    """

    #: Whether a request that failed with this error is retried (:func:`octopus.api.retry_policy`).
    retryable: bool = False

    def __init__(
        self,
        summary: str,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        error_message: str | None = None,
        errors: Sequence[str] = (),
        retry_after: float | None = None,
        attempts: int = 1,
        hint: str | None = None,
    ) -> None:
        self.summary = summary
        self.method = method
        self.path = path
        self.status = status
        self.error_message = error_message
        self.errors = list(errors)
        self.retry_after = retry_after
        self.attempts = attempts
        self.hint = hint
        super().__init__(self._render())

    @property
    def detail(self) -> str:
        """The message without request line and attempt count: status, summary, Octopus message, hint."""
        text = f"HTTP {self.status} " if self.status is not None else ""
        text += self.summary
        if self.error_message and self.error_message not in self.summary:
            text += f": {self.error_message}"
        if self.errors:
            text += " Errors: " + "; ".join(self.errors)
        if self.hint:
            text += f" ({self.hint})"
        return text

    def _render(self) -> str:
        head = " ".join(part for part in (self.method, self.path) if part)
        text = f"Octopus {head}: {self.detail}" if head else f"Octopus: {self.detail}"
        if self.attempts > 1:
            text += f" (gave up after {self.attempts} attempts)"
        return text

    def set_attempts(self, attempts: int) -> None:
        """Record how many attempts were made, and update the message accordingly."""
        self.attempts = attempts
        self.args = (self._render(),)

    def __reduce__(self):
        # Keyword-only fields would be lost by Exception's default pickling (Airflow may pickle errors).
        return _rebuild, (
            type(self),
            self.summary,
            {
                "method": self.method,
                "path": self.path,
                "status": self.status,
                "error_message": self.error_message,
                "errors": self.errors,
                "retry_after": self.retry_after,
                "attempts": self.attempts,
                "hint": self.hint,
            },
        )


def _rebuild(cls: type[OctopusError], summary: str, fields: dict) -> OctopusError:
    return cls(summary, **fields)


class OctopusConfigurationError(OctopusError):
    """The Airflow connection or the hook's arguments are invalid; no request was sent."""


class OctopusAuthenticationError(OctopusError):
    """HTTP 401: the API key is missing, invalid, expired, or its user is disabled."""


class OctopusPermissionError(OctopusError):
    """HTTP 403: the API key's user lacks a permission (Octopus names it in the message)."""


class OctopusNotFoundError(OctopusError):
    """HTTP 404: the space or resource does not exist (or is not visible to this user)."""


class OctopusValidationError(OctopusError):
    """HTTP 400 or 409: Octopus rejected the request; ``errors`` lists its validation messages."""


class OctopusRateLimitError(OctopusError):
    """HTTP 429 that persisted through every retry; ``retry_after`` holds the server's last hint."""

    retryable = True


class OctopusServerError(OctopusError):
    """HTTP 5xx that persisted through every retry (including a proxy's non-JSON 502 page)."""

    retryable = True


class OctopusUnavailableError(OctopusError):
    """The server could not be reached (connection refused/reset, DNS, TLS, timeout) after every retry."""

    retryable = True
