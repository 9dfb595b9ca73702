"""Coercion of rendered template values (Jinja renders params to strings) into the types operators need."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in {"true", "1", "yes"}:
            return True
        if value.strip().lower() in {"false", "0", "no", "", "none"}:
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return bool(value)


def as_seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise AirflowException(f"{what} must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise AirflowException(f"{what} must be > 0 seconds, got {value!r}")
    return seconds
