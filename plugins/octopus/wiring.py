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


class ShareUpstream(TypedDict):
    """Where the share summary reads the per-cloud tasks' results (task ids from the DAG's wiring)."""

    drain_removed: str  # the scale-in drain (before terraform_apply)
    apply: str  # terraform_apply
    drain_outdated: str  # the rebuild's drain (after share_to_space)
    remove_outdated: str  # the rebuild's second apply


class TriggerUpstream(TypedDict):
    """Where a share trigger reads its space and the fleets in the triggerer."""

    spaces: str  # the list share_to_space is mapped over
    fleets: str  # the registration wait (mapped per cloud)


def upstream_ids(*tasks_: Any) -> list[str]:
    """The task ids of operators, XComArgs or mapped tasks as wired in a DAG file (never written in the package)."""
    ids = []
    for item in tasks_:
        operator = getattr(item, "operator", item)
        ids.append(operator.task_id)
    return ids
