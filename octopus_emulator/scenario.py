"""Scenario documents: the seed data the emulator starts with (``--scenario`` / ``POST /_emulator/reset``).

Format (JSON; every key optional)::

    {
      "strict_endpoints": false,            # true: the same polling Uri + thumbprint may not be in two spaces
      "unique_endpoint_per_space": true,    # [I] false: allow the same polling Uri twice in one space
      "health_check_delay_seconds": 1.0,    # Unknown -> Healthy/Unavailable after this delay (CLI default otherwise)
      "default_take": 30,                   # page size when the request has no take
      "default_worker_pool": true,          # every space gets "Default Worker Pool" (IsDefault, SortOrder 0)
      "anonymous_root": true,               # GET /api answers without an API key, like the real server
      "server_version": "2025.2.9370",      # root document Version
      "server_thumbprint": "<40 hex>",      # /api/configuration/certificates/certificate-global
      "disabled_worker_leases": "no_new_leases",  # [I] or "still_leased": may a disabled worker get new leases?
      "refuse_delete_while_leased": true,   # DELETE of a leased worker answers 400 "currently in use"
      "spaces": [                           # in creation order: Spaces-1, Spaces-2, ...
        {
          "Name": "Default",
          "IsDefault": true,                # when no space says IsDefault, the first one is the default
          "Description": "",
          "default_pool": true,             # per-space override of default_worker_pool
          "pools": [ {"Name": "Airflow Pool", "WorkerPoolType": "StaticWorkerPool", "SortOrder": 1,
                      "IsDefault": false, "WorkerType": "Ubuntu2204" (dynamic pools only)} ],
          "policies": [ {"Name": "Fast Checks", "Description": ""} ],   # besides "Default Machine Policy"
          "workers": [ {"Name": "w1", "Thumbprint": "<40 hex>", "Uri": "poll://abcdefghij0123456789/",
                        "pools": ["Airflow Pool"], "HealthStatus": "Healthy", "IsDisabled": false,
                        "CommunicationStyle": "TentacleActive", "MachinePolicy": "Default Machine Policy"} ]
        }
      ]
    }

Without a ``spaces`` key the emulator has one space, "Default" (Spaces-1), with its default pool and policy.
``"spaces": []`` means no spaces at all. A seeded worker's ``HealthStatus`` holds until its tentacle connects on
the comms channel; without one it starts ``Unknown`` and is health-checked after the delay like a new worker.
Every space always gets "Default Machine Policy" (IsDefault). Keys starting with ``_`` are ignored (comments).

A state dump (``GET /_emulator/state``, or the ``--state-file``) is also accepted wherever a scenario is: it has
``"format": "octopus-emulator-state"`` and restores the exact ids and records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

STATE_FORMAT = "octopus-emulator-state"
#: whether a disabled worker receives new task leases is undocumented (demand-scaling.md §0.5); see leases.py
DISABLED_WORKER_LEASE_MODES = ("no_new_leases", "still_leased")

OPTION_KEYS = {
    "strict_endpoints": bool,
    "unique_endpoint_per_space": bool,
    "health_check_delay_seconds": (int, float),
    "default_take": int,
    "default_worker_pool": bool,
    "anonymous_root": bool,
    "server_version": str,
    "server_thumbprint": str,
    "disabled_worker_leases": str,
    "refuse_delete_while_leased": bool,
}
SPACE_KEYS = {"Name", "IsDefault", "Description", "default_pool", "pools", "policies", "workers", "Slug"}
POOL_KEYS = {"Name", "WorkerPoolType", "SortOrder", "IsDefault", "WorkerType", "Description", "Slug"}
POLICY_KEYS = {"Name", "Description"}
WORKER_KEYS = {
    "Name", "Thumbprint", "Uri", "pools", "HealthStatus", "IsDisabled", "CommunicationStyle", "MachinePolicy",
    "Slug", "Host", "Port", "AccountId", "Fingerprint",
}

DEFAULT_SCENARIO: dict[str, Any] = {"spaces": [{"Name": "Default", "IsDefault": True}]}


def _check_keys(obj: Any, allowed: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object")
    unknown = sorted(k for k in obj if k not in allowed and not k.startswith("_"))
    if unknown:
        raise ValueError(f"unknown key(s) in {what}: {', '.join(unknown)}")


def validate_scenario(scenario: Mapping[str, Any]) -> None:
    """Raise ValueError on anything the emulator would not understand (typos included)."""
    if scenario.get("format") == STATE_FORMAT:
        return
    _check_keys(scenario, set(OPTION_KEYS) | {"spaces"}, "scenario")
    for key, typ in OPTION_KEYS.items():
        if key in scenario and (not isinstance(scenario[key], typ) or isinstance(scenario[key], bool) != (typ is bool)):
            raise ValueError(f"scenario option {key} has the wrong type")
    if scenario.get("disabled_worker_leases", DISABLED_WORKER_LEASE_MODES[0]) not in DISABLED_WORKER_LEASE_MODES:
        raise ValueError("scenario option disabled_worker_leases must be one of "
                         + ", ".join(DISABLED_WORKER_LEASE_MODES))
    spaces = scenario.get("spaces", [])
    if not isinstance(spaces, list):
        raise ValueError("scenario spaces must be a list")
    names: set[str] = set()
    for i, space in enumerate(spaces):
        _check_keys(space, SPACE_KEYS, f"spaces[{i}]")
        name = space.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"spaces[{i}] needs a Name")
        if name.strip().lower() in names:
            raise ValueError(f"duplicate space name {name!r}")
        names.add(name.strip().lower())
        for j, pool in enumerate(space.get("pools", [])):
            _check_keys(pool, POOL_KEYS, f"spaces[{i}].pools[{j}]")
            if not isinstance(pool.get("Name"), str) or not pool["Name"].strip():
                raise ValueError(f"spaces[{i}].pools[{j}] needs a Name")
            if pool.get("WorkerPoolType", "StaticWorkerPool") not in ("StaticWorkerPool", "DynamicWorkerPool"):
                raise ValueError(f"spaces[{i}].pools[{j}] has an unknown WorkerPoolType")
        for j, pol in enumerate(space.get("policies", [])):
            _check_keys(pol, POLICY_KEYS, f"spaces[{i}].policies[{j}]")
            if not isinstance(pol.get("Name"), str) or not pol["Name"].strip():
                raise ValueError(f"spaces[{i}].policies[{j}] needs a Name")
        for j, w in enumerate(space.get("workers", [])):
            _check_keys(w, WORKER_KEYS, f"spaces[{i}].workers[{j}]")
            if not isinstance(w.get("Name"), str) or not w["Name"].strip():
                raise ValueError(f"spaces[{i}].workers[{j}] needs a Name")
            if not isinstance(w.get("pools", []), list):
                raise ValueError(f"spaces[{i}].workers[{j}].pools must be a list of pool names")


def load_scenario_file(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a scenario must be a JSON object")
    validate_scenario(data)
    return data


def polling_endpoint(seed: str) -> tuple[str, str]:
    """A deterministic ``(poll://<20 chars>/, <40 hex thumbprint>)`` pair derived from ``seed``."""
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    sub = "".join(alphabet[int(digest[i : i + 2], 16) % len(alphabet)] for i in range(0, 40, 2))
    thumb = hashlib.sha1(seed.encode("utf-8")).hexdigest().upper()  # noqa: S324 - not security relevant
    return f"poll://{sub}/", thumb


def make_worker(name: str, pools: Iterable[str] | None = None, *, seed: str | None = None, **fields: Any) -> dict:
    """A scenario worker record (polling) with a deterministic endpoint derived from ``seed`` (default: name)."""
    uri, thumb = polling_endpoint(seed or name)
    worker: dict[str, Any] = {"Name": name, "Thumbprint": thumb, "Uri": uri}
    if pools is not None:
        worker["pools"] = list(pools)
    worker.update(fields)
    return worker


def space_name(index: int, n_spaces: int) -> str:
    return f"Space {index:0{max(3, len(str(n_spaces)))}d}"


def make_scenario(
    n_spaces: int,
    pool_names: str | Iterable[str] = ("Airflow Pool",),
    spaces_without_pool: Iterable[int | str] = (),
    workers: Mapping[int | str, list[dict]] | Callable[[int, str], list[dict]] | None = None,
    *,
    default_space: int | None = 1,
    dynamic_pools: Iterable[str] = (),
    **options: Any,
) -> dict[str, Any]:
    """A scenario with ``n_spaces`` spaces named "Space 001", "Space 002", ... (name order = creation order).

    - ``pool_names``: static pools created in every space (SortOrder 1, 2, ...), after "Default Worker Pool".
    - ``spaces_without_pool``: 1-based indexes or names of spaces that get none of ``pool_names``.
    - ``workers``: ``{index or space name: [worker, ...]}`` or ``callable(index, name) -> [worker, ...]``;
      a worker without ``pools`` goes to the space's first pool of ``pool_names`` (or its default pool).
      Build them with :func:`make_worker`.
    - ``default_space``: 1-based index of the default space (None: no default space).
    - ``dynamic_pools``: names of dynamic pools added to every space.
    - other keyword arguments become top-level options (``strict_endpoints``, ``health_check_delay_seconds``...).
    """
    pools = [pool_names] if isinstance(pool_names, str) else list(pool_names)
    skip = set(spaces_without_pool)
    spaces = []
    for i in range(1, n_spaces + 1):
        name = space_name(i, n_spaces)
        space: dict[str, Any] = {"Name": name, "IsDefault": default_space == i}
        has_pools = i not in skip and name not in skip
        space_pools = [{"Name": p, "SortOrder": k} for k, p in enumerate(pools, 1)] if has_pools else []
        for k, p in enumerate(dynamic_pools, len(space_pools) + 1):
            space_pools.append({"Name": p, "WorkerPoolType": "DynamicWorkerPool", "SortOrder": k})
        space["pools"] = space_pools
        if callable(workers):
            ws = workers(i, name)
        elif workers is not None:
            ws = workers.get(i, workers.get(name, []))
        else:
            ws = []
        if ws:
            fallback = [pools[0]] if has_pools and pools else ["Default Worker Pool"]
            space["workers"] = [w if "pools" in w else {**w, "pools": fallback} for w in ws]
        spaces.append(space)
    scenario: dict[str, Any] = dict(options)
    scenario["spaces"] = spaces
    validate_scenario(scenario)
    return scenario
