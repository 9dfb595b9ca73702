"""The typed Octopus errors: message format, hierarchy, pickling."""

from __future__ import annotations

import pickle

import pytest
from airflow.sdk.exceptions import AirflowException

from octopus.exceptions import (
    OctopusAuthenticationError,
    OctopusError,
    OctopusServerError,
    OctopusValidationError,
)


class TestOctopusError:
    def test_message_names_request_status_and_octopus_message(self):
        error = OctopusValidationError(
            "Bad Request",
            method="POST",
            path="/api/Spaces-1/workers",
            status=400,
            error_message="There was a problem with your request.",
            errors=["The name field is required"],
        )
        assert str(error) == (
            "Octopus POST /api/Spaces-1/workers: HTTP 400 Bad Request: There was a problem with your request."
            " Errors: The name field is required"
        )

    def test_attempts_are_reported_once_known(self):
        error = OctopusServerError("Service Unavailable", method="GET", path="/api", status=503)
        error.set_attempts(6)
        assert str(error).endswith("(gave up after 6 attempts)")
        assert error.attempts == 6

    def test_hint_follows_the_octopus_message(self):
        error = OctopusAuthenticationError(
            "Unauthorized", status=401, error_message="You must be logged in.", hint="check the API key"
        )
        assert str(error) == "Octopus: HTTP 401 Unauthorized: You must be logged in. (check the API key)"

    def test_is_an_airflow_exception(self):
        assert issubclass(OctopusValidationError, OctopusError)
        assert issubclass(OctopusError, AirflowException)

    @pytest.mark.parametrize("cls", [OctopusServerError, OctopusValidationError])
    def test_survives_pickling_with_its_fields(self, cls):
        error = cls("x", method="GET", path="/api", status=500, errors=["e"], retry_after=3.0, attempts=2)
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
        assert type(copy) is cls
        assert (copy.status, copy.errors, copy.retry_after, copy.attempts) == (500, ["e"], 3.0, 2)
        assert str(copy) == str(error)

    def test_only_transient_errors_are_retryable(self):
        assert OctopusServerError("x").retryable
        assert not OctopusValidationError("x").retryable
