"""The typed shapes that cross XCom between the tasks (plain JSON each) and the outcomes a share counts."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# Outcomes counted per space and cloud in the summary, in display order.
OUTCOMES = (
    "added",
    "present",
    "fixed",
    "replaced",
    "pruned",
    "unshared",
    "draining",
    "disabled",
    "foreign",
    "failed",
    "blocked",
    "not_run",
)

Role = Literal["copy", "initial", "withdraw"]
Op = Literal["create", "update", "delete"]


class SpaceRef(TypedDict):
    id: str
    name: str
    pool_id: str | None


class FleetPlan(TypedDict, total=False):
    """One cloud's plan, from ``get_spaces``."""

    cloud: str
    prefix: str  # the name_prefix param: with the cloud, the deployment's identity
    name_prefix: str  # "<prefix>-<cloud>": what the module names its instances with
    pool_name: str
    instance_count: int
    server_url: str
    initial_space: SpaceRef
    initial_selected: bool  # target_spaces allows writes to the initial space
    initial_pin: Literal["pinned", "first_use", "moved"]
    spaces: list[SpaceRef]
    spaces_without_pool: list[str]
    spaces_not_selected: list[str]
    spaces_denied: list[SpaceRef]  # holders the access policy denies: our copies there are withdrawn


class _FleetWorkerIdentity(TypedDict):
    name: str
    thumbprint: str
    uri: str


class FleetWorker(_FleetWorkerIdentity, total=False):
    #: An outdated instance of a rebuild: kept where it is until drained, never added anywhere or re-enabled.
    leaving: bool


class OwnedRecord(TypedDict):
    name: str
    thumbprint: str


class Fleet(TypedDict, total=False):
    """One cloud's registered fleet, from ``wait_for_workers``: what ``share_to_space`` makes every pool hold."""

    cloud: str
    prefix: str
    space_id: str
    space_name: str
    pool_id: str
    pool_name: str
    generation: int  # the ledger's fleet generation this run registered (a cleared older run has a lower one)
    workers: list[FleetWorker]
    # Added by the share itself from the verified ledger (never carried in XCom): every endpoint it may remove.
    owned: list[OwnedRecord]
    dry_run: bool


class PoolVisit(TypedDict):
    pool_id: str | None
    pool_name: str
    role: Role


class SpaceVisit(TypedDict, total=False):
    id: str
    name: str
    pools: dict[str, PoolVisit]


class SpaceResult(TypedDict, total=False):
    """One space's outcome, pushed once by its ``share_to_space`` (or retire) index."""

    space_id: str
    space_name: str
    dry_run: bool
    planned: list[str]
    foreign: list[str]
    owned_remaining: dict[str, list[OwnedRecord]]
    clouds: dict[str, dict[str, Any]]
    requests: int
