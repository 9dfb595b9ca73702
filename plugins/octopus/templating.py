"""Coercion of rendered template values (Jinja renders params to strings) into the types operators need."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException

from octopus.settings import FALSE_WORDS, TRUE_WORDS

#: What Jinja renders an unset value as: false, too.
_RENDERED_UNSET = frozenset({"", "none"})


def as_bool(value: Any) -> bool:
    """A rendered boolean: the words of :data:`octopus.settings.TRUE_WORDS` / ``FALSE_WORDS`` (and ``""`` or
    ``"None"``, an unset value, as false); anything else raises ``ValueError``."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS or word in _RENDERED_UNSET:
            return False
        raise ValueError(f"expected a boolean ({', '.join(sorted(TRUE_WORDS | FALSE_WORDS))}), got {value!r}")
    return bool(value)


def as_seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise AirflowException(f"{what} must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise AirflowException(f"{what} must be > 0 seconds, got {value!r}")
    return seconds
