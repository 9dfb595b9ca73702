"""Route resolution for ``/api``: the three route forms, route keys for counters, allowed methods."""

from __future__ import annotations

from dataclasses import dataclass, field

from .util import is_space_id

ID = object()  # placeholder for an id segment

#: (pattern relative to the space, kind, methods)
SCOPED_ROUTES: list[tuple[tuple, str, tuple[str, ...]]] = [
    (("workers",), "workers", ("GET", "POST")),
    (("workers", "all"), "workers_all", ("GET",)),
    (("workers", ID), "worker", ("GET", "PUT", "DELETE")),
    (("workers", ID, "connection"), "worker_connection", ("GET",)),
    (("workerpools",), "pools", ("GET", "POST")),
    (("workerpools", "all"), "pools_all", ("GET",)),
    (("workerpools", ID), "pool", ("GET", "PUT", "DELETE")),
    (("workerpools", ID, "workers"), "pool_workers", ("GET",)),
    (("machinepolicies",), "policies", ("GET",)),
    (("machinepolicies", "all"), "policies_all", ("GET",)),
    (("machinepolicies", "template"), "policy_template", ("GET",)),
    (("machinepolicies", ID), "policy", ("GET",)),
    (("workertaskleases",), "leases", ("GET",)),  # leases.py
    (("tasks",), "tasks", ("GET",)),
    (("tasks", ID), "task", ("GET",)),
]

GLOBAL_ROUTES: list[tuple[tuple, str, tuple[str, ...]]] = [
    ((), "root", ("GET",)),
    (("spaces",), "spaces", ("GET",)),
    (("spaces", "all"), "spaces_all", ("GET",)),
    (("spaces", ID), "space", ("GET",)),
    (("users", "me"), "user_me", ("GET",)),
    (("users", ID), "user", ("GET",)),
    (("users", ID, "spaces"), "user_spaces", ("GET",)),
    (("configuration", "certificates", "certificate-global"), "certificate", ("GET",)),
    (("tasks",), "tasks_global", ("GET",)),  # every space's tasks (leases.py)
    (("tasks", ID), "task_global", ("GET",)),
]

GLOBAL_PREFIXES = {"spaces", "users", "configuration", "tasks"}

#: permission names for 403 bodies: kind -> (view, edit)
PERMISSIONS = {
    "workers": ("WorkerView", "WorkerEdit"), "workers_all": ("WorkerView", "WorkerEdit"),
    "worker": ("WorkerView", "WorkerEdit"), "worker_connection": ("WorkerView", "WorkerEdit"),
    "pools": ("WorkerView", "WorkerEdit"), "pools_all": ("WorkerView", "WorkerEdit"),
    "pool": ("WorkerView", "WorkerEdit"), "pool_workers": ("WorkerView", "WorkerEdit"),
    "policies": ("MachinePolicyView", "MachinePolicyEdit"), "policies_all": ("MachinePolicyView", "MachinePolicyEdit"),
    "policy": ("MachinePolicyView", "MachinePolicyEdit"),
    "policy_template": ("MachinePolicyView", "MachinePolicyEdit"),
    "space_home": ("SpaceView", "SpaceEdit"),
    "leases": ("WorkerView", "WorkerEdit"), "tasks": ("TaskView", "TaskEdit"), "task": ("TaskView", "TaskEdit"),
}


@dataclass
class Route:
    kind: str | None  # None: unknown route
    methods: tuple[str, ...] = ()
    key: str = "(unmatched)"
    ids: list[str] = field(default_factory=list)
    scoped: bool = False
    space_raw: str | None = None  # None with scoped=True: the default space (legacy form)
    form: str = ""  # "id" (/api/Spaces-1/...), "spaces" (/api/spaces/Spaces-1/...), "legacy" (/api/...)


def _match(pattern: tuple, segs: list[str]) -> list[str] | None:
    if len(pattern) != len(segs):
        return None
    ids = []
    for p, s in zip(pattern, segs, strict=True):
        if p is ID:
            ids.append(s)
        elif p != s.lower():
            return None
    return ids


def _find(table, segs: list[str]):
    # literal matches win over ID matches ("workers/all" is not a worker called "all")
    best = None
    for pattern, kind, methods in table:
        ids = _match(pattern, segs)
        if ids is not None and (best is None or len(ids) < len(best[3])):
            best = (pattern, kind, methods, ids)
    return best


def _key(prefix: str, pattern: tuple) -> str:
    parts = [prefix] + ["{id}" if p is ID else p for p in pattern]
    return "/".join(parts)


def resolve(path: str) -> Route:
    """Resolve an /api path (without query). Route keys look like ``/api/{space}/workers/{id}``."""
    segs = [s for s in path.split("/") if s]
    if not segs or segs[0].lower() != "api":
        return Route(None)
    segs = segs[1:]
    found = _find(GLOBAL_ROUTES, segs)
    if found:
        pattern, kind, methods, ids = found
        return Route(kind, methods, _key("/api", pattern), ids)
    if len(segs) == 1 and is_space_id(segs[0]):
        return Route("space_home", ("GET",), "/api/{space}", [], True, segs[0], "id")
    if len(segs) >= 3 and segs[0].lower() == "spaces":
        space_raw, rest, form = segs[1], segs[2:], "spaces"
    elif len(segs) >= 2 and is_space_id(segs[0]):
        space_raw, rest, form = segs[0], segs[1:], "id"
    elif segs and segs[0].lower() not in GLOBAL_PREFIXES:
        space_raw, rest, form = None, segs, "legacy"
    else:
        return Route(None)
    found = _find(SCOPED_ROUTES, rest)
    if not found:
        return Route(None)
    pattern, kind, methods, ids = found
    return Route(kind, methods, _key("/api/{space}", pattern), ids, True, space_raw, form)
