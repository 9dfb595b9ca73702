"""A space's index ends with an error that says what it means: retry, bad input, or a foreign record in the way."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from octopus import tasks
from octopus.errors import ForeignRecordError


class _Ti:
    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


class _Hook:
    request_count = 3


def result(**local):
    return {"space_id": "Spaces-2", "space_name": "Team", "dry_run": False, "planned": [], "clouds": {"local": local}}


def finish(res):
    ti = _Ti()
    tasks._finish_space(res, _Hook(), {"ti": ti}, verb="Sharing into")
    return ti


def test_a_clash_alone_fails_without_retry_naming_the_foreign_record():
    clash = "the name 't-local-1' is taken in space Team by Workers-9 ..."
    with pytest.raises(AirflowFailException) as caught:
        finish(result(failed=1, clashes=[clash], errors=[]))
    assert isinstance(caught.value.__cause__, ForeignRecordError) and clash in str(caught.value.__cause__)


def test_a_retryable_error_is_retried_and_a_4xx_is_not_a_foreign_record():
    with pytest.raises(AirflowException) as caught:
        finish(result(failed=1, errors=["503"], retryable_errors=1))
    assert type(caught.value) is AirflowException
    with pytest.raises(AirflowFailException) as caught:
        finish(result(failed=1, errors=["400 bad"], retryable_errors=0))
    assert not isinstance(caught.value.__cause__, ForeignRecordError)


def test_success_pushes_the_result_with_its_request_count():
    ti = finish(result(added=2))
    assert ti.pushed[tasks.SPACE_RESULT_KEY]["requests"] == 3
