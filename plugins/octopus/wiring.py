"""How tasks find their upstream values: task ids taken from the DAG's own objects, never written in the package.

A DAG file passes ``upstream_ids(...)`` of the tasks it wired; renaming a task there cannot leave a reader
pulling from a name that no longer exists.
"""

from __future__ import annotations

from typing import Any, TypedDict


class RetireUpstream(TypedDict):
    """Where the retire summary reads its inputs: task ids taken from the DAG's wiring (``upstream_ids``)."""

    results: list[str]  # the retire phases (each index pushes ``space_result``)
    drain: str  # the drain sensor
    destroy: str  # terraform destroy (mapped per cloud)


def upstream_ids(*tasks_: Any) -> list[str]:
    """The task ids of operators, XComArgs or mapped tasks as wired in a DAG file (never written in the package)."""
    ids = []
    for item in tasks_:
        operator = getattr(item, "operator", item)
        ids.append(operator.task_id)
    return ids
