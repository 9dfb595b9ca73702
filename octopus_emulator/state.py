"""In-memory state of the emulated Octopus Server: spaces, worker pools, workers, machine policies.

Resources are stored already rendered (PascalCase, field order and server-relative ``Links`` as the real server
emits them), so a GET is a dictionary lookup plus ``json.dumps``. Every lookup by id is O(1); ids are accepted
case-insensitively (``workers-7`` = ``Workers-7``) [I]. Numbering is global per collection, not per space.

Health lifecycle (materialised in the worker record, see :meth:`Store.health_check`):
new worker -> ``Unknown`` ("This machine was recently added...") -> after ``health_check_delay_seconds``
``Healthy`` if its polling tentacle is connected on the comms channel with the same thumbprint, else
``Unavailable``. A tentacle that disconnects turns its workers ``Unavailable`` at once; one that (re)connects
makes them ``Healthy`` after the delay. A seeded worker with an explicit ``HealthStatus`` keeps it until its
tentacle connects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from .scenario import DEFAULT_SCENARIO, STATE_FORMAT, polling_endpoint, validate_scenario
from .util import canon_id, octo_date, slugify, thumb_key, uri_key

VALIDATION_MESSAGE = "There was a problem with your request."
NOT_FOUND_MESSAGE = "The resource you requested was not found."

HEALTH_STATUSES = ("Healthy", "Unavailable", "Unknown", "HasWarnings", "Unhealthy")
COMM_STYLES = (
    "None", "TentaclePassive", "TentacleActive", "Ssh", "OfflineDrop", "AzureWebApp", "Ftp", "AzureCloudService",
    "AzureServiceFabricCluster", "Kubernetes", "StepPackage", "KubernetesTentacle", "AwsEcsCluster",
)
#: endpoint kinds a worker may have [I]; other known styles are refused with 400
WORKER_COMM_STYLES = ("TentaclePassive", "TentacleActive", "Ssh")
TENTACLE_STYLES = ("TentaclePassive", "TentacleActive")

SUMMARY = {
    "Unknown": "This machine was recently added. Please perform a health check.",
    "Healthy": "Octopus was able to successfully establish a connection with this machine.",  # [I]
    "Unavailable": "The machine is unavailable: its Tentacle is not connected to the server.",  # [I]
    "HasWarnings": "The last health check of this machine completed with warnings.",  # [I]
    "Unhealthy": "The last health check of this machine failed.",  # [I]
}
LEGACY_STATUS = {"Healthy": "Online", "HasWarnings": "Online", "Unavailable": "Offline", "Unhealthy": "Offline",
                 "Unknown": "Unknown"}

WORKERS_TEMPLATE_Q = (
    "{?skip,take,name,ids,partialName,isDisabled,healthStatuses,commStyles,workerPoolIds,thumbprint,shellNames}"
)
POOLS_TEMPLATE_Q = "{?skip,ids,take,partialName,name}"
POLICIES_TEMPLATE_Q = "{?skip,take,ids,partialName}"
SPACES_TEMPLATE_Q = "{?skip,ids,take,partialName,name}"

USER_ID = "Users-1"
USER_NAME = "admin"


class ApiError(Exception):
    """An Octopus-style error response: ``{"ErrorMessage": ..., "Errors": [...]}``."""

    def __init__(self, status: int, message: str, errors: list[str] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ErrorMessage": self.message}
        if self.errors is not None:
            body["Errors"] = self.errors
        return body


def validation_error(*errors: str) -> ApiError:
    return ApiError(400, VALIDATION_MESSAGE, list(errors))


def not_found() -> ApiError:
    return ApiError(404, NOT_FOUND_MESSAGE)


@dataclass
class Options:
    strict_endpoints: bool = False
    unique_endpoint_per_space: bool = True
    health_check_delay_seconds: float = 1.0
    default_take: int = 30
    default_worker_pool: bool = True
    anonymous_root: bool = True
    server_version: str = "2025.2.9370"
    server_thumbprint: str = "9C5B6D35A4E1F2C0A1B2C3D4E5F60718293A4B5C"
    disabled_worker_leases: str = "no_new_leases"  # see leases.py
    refuse_delete_while_leased: bool = True

    def merged(self, overrides: dict[str, Any]) -> Options:
        known = {f.name for f in fields(self)}
        data = asdict(self)
        data.update({k: v for k, v in overrides.items() if k in known})
        return Options(**data)


class Store:
    """All emulator state. Not thread-safe: everything runs on one event loop."""

    def __init__(self, base_options: Options | None = None,
                 scheduler: Callable[[float, Callable[[], None]], Any] | None = None,
                 is_connected: Callable[[str, str], bool] | None = None,
                 connection_info: Callable[[str, str], dict | None] | None = None,
                 on_change: Callable[[], None] | None = None):
        self.base_options = base_options or Options()
        self.scheduler = scheduler
        self.is_connected = is_connected or (lambda uri, thumb: False)
        self.connection_info = connection_info or (lambda uri, thumb: None)
        self.on_change = on_change or (lambda: None)
        # lease model hooks (leases.py): a worker record deleted; a record's HealthStatus changed (before, after)
        self.on_worker_removed: Callable[[dict], None] = lambda rec: None
        self.on_health_changed: Callable[[dict, str], None] = lambda rec, before: None
        self.generation = 0
        self.installation_id = str(uuid.uuid4())
        self._clear()
        self.options = self.base_options

    # ------------------------------------------------------------------ loading / dumping
    def _clear(self) -> None:
        self.spaces: dict[str, dict] = {}
        self.pools: dict[str, dict] = {}
        self.workers: dict[str, dict] = {}
        self.policies: dict[str, dict] = {}
        self.worker_meta: dict[str, dict] = {}
        self.space_pools: dict[str, dict[str, None]] = {}
        self.space_workers: dict[str, dict[str, None]] = {}
        self.space_policies: dict[str, dict[str, None]] = {}
        self.worker_names: dict[str, dict[str, str]] = {}  # space -> lower name -> id
        self.worker_slugs: dict[str, dict[str, str]] = {}
        self.pool_names: dict[str, dict[str, str]] = {}
        self.pool_slugs: dict[str, dict[str, str]] = {}
        self.endpoint_index: dict[str, set[str]] = {}  # uri key -> worker ids
        self.next_ids = {"Spaces": 1, "WorkerPools": 1, "Workers": 1, "MachinePolicies": 1}
        self._sorted: dict[tuple[str, str], list[dict]] = {}

    def load(self, scenario: dict[str, Any] | None) -> None:
        """Replace all state with a scenario (see :mod:`octopus_emulator.scenario`) or a state dump."""
        scenario = DEFAULT_SCENARIO if scenario is None else scenario
        validate_scenario(scenario)
        self.generation += 1
        self._clear()
        if scenario.get("format") == STATE_FORMAT:
            self._load_dump(scenario)
        else:
            self._load_scenario(scenario)
        for wid, meta in self.worker_meta.items():
            if not meta.get("held") and not (self.workers[wid].get("SkipInitialHealthCheck")
                                             and self.workers[wid]["HealthStatus"] == "Unknown"):
                self._schedule_check(wid)
        self.on_change()

    def _load_scenario(self, scenario: dict[str, Any]) -> None:
        opts = {k: v for k, v in scenario.items() if k != "spaces" and not k.startswith("_")}
        self.options = self.base_options.merged(opts)
        spaces = scenario.get("spaces", DEFAULT_SCENARIO["spaces"])
        any_default = any("IsDefault" in s for s in spaces)
        for index, spec in enumerate(spaces):
            is_default = bool(spec.get("IsDefault")) if any_default else index == 0
            space = self._add_space(spec["Name"].strip(), is_default, spec.get("Description"), spec.get("Slug"))
            sid = space["Id"]
            self._add_policy(sid, "Default Machine Policy", True)
            for pol in spec.get("policies", []):
                self._add_policy(sid, pol["Name"].strip(), False, pol.get("Description", ""))
            pools = spec.get("pools", [])
            want_default_pool = spec.get("default_pool", self.options.default_worker_pool)
            explicit_default = any(p.get("IsDefault") for p in pools)
            if want_default_pool:
                self._insert_pool(self._pool_record(sid, "Default Worker Pool", None, not explicit_default, 0,
                                                    "StaticWorkerPool", None, ""))
            for k, p in enumerate(pools, 1):
                name = p["Name"].strip()
                if name.lower() in self.pool_names[sid]:
                    raise ValueError(f"duplicate pool {name!r} in space {spec['Name']!r}")
                ptype = p.get("WorkerPoolType", "StaticWorkerPool")
                wtype = p.get("WorkerType", "Ubuntu2204") if ptype == "DynamicWorkerPool" else None
                self._insert_pool(self._pool_record(sid, name, p.get("Slug"), bool(p.get("IsDefault")),
                                                    p.get("SortOrder", k), ptype, wtype, p.get("Description", "")))
            for w in spec.get("workers", []):
                self._seed_worker(sid, w)

    def _seed_worker(self, sid: str, w: dict[str, Any]) -> None:
        name = w["Name"].strip()
        style = w.get("CommunicationStyle", "TentacleActive")
        body_ep: dict[str, Any] = {"CommunicationStyle": style}
        if style in TENTACLE_STYLES:
            uri, thumb = polling_endpoint(f"{sid}/{name}")
            body_ep["Uri"] = w.get("Uri") or (uri if style == "TentacleActive" else f"https://{slugify(name)}:10933/")
            body_ep["Thumbprint"] = w.get("Thumbprint") or thumb
        else:
            for key in ("Host", "Port", "AccountId", "Fingerprint", "Uri", "Thumbprint"):
                if key in w:
                    body_ep[key] = w[key]
        pool_ids = []
        for pname in w.get("pools", ["Default Worker Pool"]):
            pid = self.pool_names[sid].get(pname.strip().lower())
            if pid is None:
                raise ValueError(f"worker {name!r}: no pool named {pname!r} in space {self.spaces[sid]['Name']!r}")
            pool_ids.append(pid)
        policy_id = None
        if w.get("MachinePolicy"):
            for pol_id in self.space_policies[sid]:
                if self.policies[pol_id]["Name"].lower() == w["MachinePolicy"].strip().lower():
                    policy_id = pol_id
            if policy_id is None:
                raise ValueError(f"worker {name!r}: no machine policy named {w['MachinePolicy']!r}")
        body = {"Name": name, "Endpoint": body_ep, "WorkerPoolIds": pool_ids, "IsDisabled": bool(w.get("IsDisabled")),
                "MachinePolicyId": policy_id}
        if w.get("Slug"):
            body["Slug"] = w["Slug"]
        try:
            record = self._validate_and_build_worker(sid, body, existing=None)
        except ApiError as exc:
            raise ValueError(f"worker {name!r}: {'; '.join(exc.errors or [exc.message])}") from exc
        health = w.get("HealthStatus")
        held = False
        if health:
            if health not in HEALTH_STATUSES:
                raise ValueError(f"worker {name!r}: unknown HealthStatus {health!r}")
            self._set_health(record, health)
            held = True
        self._insert_worker(record, {"held": held})

    def _load_dump(self, dump: dict[str, Any]) -> None:
        self.options = self.base_options.merged(dump.get("options", {}))
        self.installation_id = dump.get("installation_id", self.installation_id)
        for rec in dump.get("spaces", []):
            self._insert_space(rec)
        for rec in dump.get("policies", []):
            self._insert_policy(rec)
        for rec in dump.get("pools", []):
            self._insert_pool(rec)
        meta = dump.get("worker_meta", {})
        for rec in dump.get("workers", []):
            self._insert_worker(rec, dict(meta.get(rec["Id"], {"held": False})))
        self.next_ids.update(dump.get("next_ids", {}))

    def dump(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": 1,
            "options": asdict(self.options),
            "installation_id": self.installation_id,
            "next_ids": dict(self.next_ids),
            "spaces": list(self.spaces.values()),
            "policies": list(self.policies.values()),
            "pools": list(self.pools.values()),
            "workers": list(self.workers.values()),
            "worker_meta": self.worker_meta,
        }

    # ------------------------------------------------------------------ ids, indexes, sorting
    def _new_id(self, prefix: str) -> str:
        n = self.next_ids[prefix]
        self.next_ids[prefix] = n + 1
        return f"{prefix}-{n}"

    def _bump(self, prefix: str, rid: str) -> None:
        n = int(rid.rsplit("-", 1)[1])
        if n >= self.next_ids[prefix]:
            self.next_ids[prefix] = n + 1

    def _invalidate(self, kind: str, sid: str) -> None:
        self._sorted.pop((kind, sid), None)

    def sorted_spaces(self) -> list[dict]:
        key = ("spaces", "")
        if key not in self._sorted:
            self._sorted[key] = sorted(self.spaces.values(), key=lambda r: (r["Name"].lower(), _num(r["Id"])))
        return self._sorted[key]

    def sorted_pools(self, sid: str) -> list[dict]:
        key = ("pools", sid)
        if key not in self._sorted:
            recs = [self.pools[i] for i in self.space_pools[sid]]
            self._sorted[key] = sorted(recs, key=lambda r: (r["SortOrder"], r["Name"].lower(), _num(r["Id"])))
        return self._sorted[key]

    def sorted_workers(self, sid: str) -> list[dict]:
        key = ("workers", sid)
        if key not in self._sorted:
            recs = [self.workers[i] for i in self.space_workers[sid]]
            self._sorted[key] = sorted(recs, key=lambda r: (r["Name"].lower(), _num(r["Id"])))
        return self._sorted[key]

    def sorted_policies(self, sid: str) -> list[dict]:
        key = ("policies", sid)
        if key not in self._sorted:
            recs = [self.policies[i] for i in self.space_policies[sid]]
            self._sorted[key] = sorted(recs, key=lambda r: (r["Name"].lower(), _num(r["Id"])))
        return self._sorted[key]

    # ------------------------------------------------------------------ lookups
    def get_space(self, raw: str) -> dict | None:
        sid = canon_id(raw, "Spaces")
        return self.spaces.get(sid) if sid else None

    def default_space(self) -> dict | None:
        for rec in self.spaces.values():
            if rec["IsDefault"]:
                return rec
        return None

    def get_in_space(self, kind: str, sid: str, raw: str) -> dict | None:
        prefix, table = {"workers": ("Workers", self.workers), "workerpools": ("WorkerPools", self.pools),
                         "machinepolicies": ("MachinePolicies", self.policies)}[kind]
        rid = canon_id(raw, prefix)
        rec = table.get(rid) if rid else None
        if rec is None or rec["SpaceId"] != sid:
            return None
        return rec

    def default_policy(self, sid: str) -> dict | None:
        for pid in self.space_policies.get(sid, ()):
            if self.policies[pid]["IsDefault"]:
                return self.policies[pid]
        return None

    # ------------------------------------------------------------------ spaces and policies
    def _add_space(self, name: str, is_default: bool, description: str | None, slug: str | None) -> dict:
        sid = self._new_id("Spaces")
        now = octo_date()
        rec = {
            "Id": sid, "Name": name, "Slug": slug or slugify(name), "Description": description,
            "IsDefault": is_default, "IsPrivate": False, "PrivateSpaceOwner": None, "TaskQueueStopped": False,
            "SpaceManagersTeams": [f"teams-spacemanagers-{sid}"], "SpaceManagersTeamMembers": [], "Icon": None,
            "ExtensionSettings": [], "LastModifiedOn": now,
            "Links": {"Self": f"/api/spaces/{sid}", "SpaceHome": f"/api/{sid}", "Web": f"/app#/spaces/{sid}",
                      "Logo": f"/api/spaces/{sid}/logo?cb={self.base_options.server_version}",
                      "Search": f"/api/spaces/{sid}/search"},
        }
        self._insert_space(rec)
        return rec

    def _insert_space(self, rec: dict) -> None:
        sid = rec["Id"]
        self.spaces[sid] = rec
        self._bump("Spaces", sid)
        for table in (self.space_pools, self.space_workers, self.space_policies):
            table[sid] = {}
        for table in (self.worker_names, self.worker_slugs, self.pool_names, self.pool_slugs):
            table[sid] = {}
        self._invalidate("spaces", "")

    def _add_policy(self, sid: str, name: str, is_default: bool, description: str = "") -> dict:
        pid = self._new_id("MachinePolicies")
        rec = policy_record(pid, sid, name, is_default, description)
        self._insert_policy(rec)
        return rec

    def _insert_policy(self, rec: dict) -> None:
        self.policies[rec["Id"]] = rec
        self.space_policies[rec["SpaceId"]][rec["Id"]] = None
        self._bump("MachinePolicies", rec["Id"])
        self._invalidate("policies", rec["SpaceId"])

    # ------------------------------------------------------------------ worker pools
    def _pool_record(self, sid: str, name: str, slug: str | None, is_default: bool, sort_order: int,
                     pool_type: str, worker_type: str | None, description: str, pid: str | None = None,
                     modified_by: str = USER_NAME) -> dict:
        pid = pid or self._new_id("WorkerPools")
        rec: dict[str, Any] = {
            "Id": pid, "Name": name, "Slug": slug or self._unique_slug(self.pool_slugs[sid], name, pid),
            "Description": description, "IsDefault": is_default, "SortOrder": sort_order, "SpaceId": sid,
            "WorkerPoolType": pool_type,
        }
        if pool_type == "DynamicWorkerPool":
            rec["WorkerType"] = worker_type
        rec["CanAddWorkers"] = pool_type == "StaticWorkerPool"
        rec["LastModifiedOn"] = octo_date()
        rec["LastModifiedBy"] = modified_by
        rec["Links"] = {"Self": f"/api/{sid}/workerpools/{pid}",
                        "Workers": f"/api/{sid}/workerpools/{pid}/workers{{?skip,take}}"}
        return rec

    def _insert_pool(self, rec: dict) -> None:
        sid, pid = rec["SpaceId"], rec["Id"]
        if rec["IsDefault"]:
            for other in self.space_pools[sid]:
                if other != pid and self.pools[other]["IsDefault"]:
                    self.pools[other]["IsDefault"] = False
        self.pools[pid] = rec
        self.space_pools[sid][pid] = None
        self.pool_names[sid][rec["Name"].lower()] = pid
        self.pool_slugs[sid][rec["Slug"].lower()] = pid
        self._bump("WorkerPools", pid)
        self._invalidate("pools", sid)

    def _remove_pool(self, rec: dict) -> None:
        sid, pid = rec["SpaceId"], rec["Id"]
        del self.pools[pid]
        del self.space_pools[sid][pid]
        self.pool_names[sid].pop(rec["Name"].lower(), None)
        self.pool_slugs[sid].pop(rec["Slug"].lower(), None)
        self._invalidate("pools", sid)

    def _validate_pool(self, sid: str, body: Any, existing: dict | None) -> dict:
        if not isinstance(body, dict):
            raise validation_error("The request body must be a JSON object.")
        errors: list[str] = []
        self._check_body_space(sid, body, errors)
        name = body.get("Name")
        if not isinstance(name, str) or not name.strip():
            errors.append("The name field is required")
            name = None
        else:
            name = name.strip()
            clash = self.pool_names[sid].get(name.lower())
            if clash and (existing is None or clash != existing["Id"]):
                errors.append(f"A worker pool with the name '{name}' already exists. Please choose a different name.")
        ptype = body.get("WorkerPoolType", existing["WorkerPoolType"] if existing else "StaticWorkerPool")
        if ptype not in ("StaticWorkerPool", "DynamicWorkerPool"):
            errors.append(f"Unrecognized WorkerPoolType '{ptype}'.")
        elif existing and ptype != existing["WorkerPoolType"]:
            errors.append("The type of an existing worker pool cannot be changed.")
        sort_order = body.get("SortOrder")
        if sort_order is None:
            sort_order = existing["SortOrder"] if existing else max(
                (self.pools[p]["SortOrder"] for p in self.space_pools[sid]), default=0) + 1
        elif not isinstance(sort_order, int) or isinstance(sort_order, bool):
            errors.append("The SortOrder field must be an integer.")
        is_default = body.get("IsDefault", False)
        if not isinstance(is_default, bool):
            errors.append("The IsDefault field must be true or false.")
        elif existing and existing["IsDefault"] and not is_default:
            errors.append("There must be a default worker pool. Make another pool the default instead.")
        description = body.get("Description") or ""
        if not isinstance(description, str):
            errors.append("The Description field must be a string.")
        slug = body.get("Slug")
        if slug is not None and (not isinstance(slug, str) or not slug.strip()):
            errors.append("The Slug field must be a non-empty string.")
        elif slug:
            clash = self.pool_slugs[sid].get(slug.strip().lower())
            if clash and (existing is None or clash != existing["Id"]):
                errors.append(f"A worker pool with the slug '{slug}' already exists.")
        worker_type = body.get("WorkerType") or "Ubuntu2204"
        if errors:
            raise validation_error(*errors)
        if existing and not slug:
            slug = existing["Slug"]
        return self._pool_record(sid, name, slug.strip() if slug else None, is_default, sort_order, ptype,
                                 worker_type, description, pid=existing["Id"] if existing else None)

    def create_pool(self, sid: str, body: Any) -> dict:
        rec = self._validate_pool(sid, body, None)
        self._insert_pool(rec)
        self.on_change()
        return rec

    def update_pool(self, sid: str, pool: dict, body: Any) -> dict:
        self._check_put_id(body, pool["Id"], "WorkerPools")
        rec = self._validate_pool(sid, body, pool)
        self._remove_pool(pool)
        self._insert_pool(rec)
        self.on_change()
        return rec

    def delete_pool(self, sid: str, pool: dict) -> None:
        if pool["IsDefault"]:
            raise validation_error("The default worker pool cannot be deleted.")  # [I]
        members = [w for w in self.space_workers[sid] if pool["Id"] in self.workers[w]["WorkerPoolIds"]]
        if members:  # [I]
            raise validation_error(f"The worker pool '{pool['Name']}' contains {len(members)} worker(s). "
                                   "Remove the workers from the pool before deleting it.")
        self._remove_pool(pool)
        self.on_change()

    # ------------------------------------------------------------------ workers
    @staticmethod
    def _unique_slug(index: dict[str, str], name: str, own_id: str | None) -> str:
        base = slugify(name)
        slug, n = base, 1
        while slug in index and index[slug] != own_id:
            slug = f"{base}-{n}"
            n += 1
        return slug

    def _check_body_space(self, sid: str, body: dict, errors: list[str]) -> None:
        body_space = body.get("SpaceId")
        if body_space is not None and canon_id(str(body_space), "Spaces") != sid:
            errors.append(f"The SpaceId '{body_space}' in the request body does not match the space '{sid}' "
                          "of the request.")  # [I]

    @staticmethod
    def _check_put_id(body: Any, rid: str, prefix: str) -> None:
        if not isinstance(body, dict):
            raise validation_error("The request body must be a JSON object.")
        bid = body.get("Id")
        if not bid:
            raise validation_error("The Id field is required.")
        if canon_id(str(bid), prefix) != rid:
            raise validation_error(f"The Id '{bid}' in the request body does not match the Id '{rid}' in the URL.")

    def _normalize_endpoint(self, ep: Any, errors: list[str], existing: dict | None) -> dict | None:
        if ep is None:
            errors.append("The Endpoint field is required.")
            return None
        if not isinstance(ep, dict):
            errors.append("The Endpoint field must be a JSON object.")
            return None
        style = ep.get("CommunicationStyle")
        if not style:
            errors.append("The Endpoint.CommunicationStyle field is required.")
            return None
        if style not in COMM_STYLES:
            errors.append(f"Unrecognized CommunicationStyle '{style}'.")
            return None
        if style not in WORKER_COMM_STYLES:
            errors.append(f"A worker cannot use the '{style}' communication style.")  # [I]
            return None
        old = existing["Endpoint"] if existing and existing["Endpoint"]["CommunicationStyle"] == style else {}
        if style in TENTACLE_STYLES:
            thumb, uri = ep.get("Thumbprint"), ep.get("Uri")
            if not isinstance(thumb, str) or not thumb.strip():
                errors.append("Please provide a thumbprint for this machine.")
            if not isinstance(uri, str) or not uri.strip():
                errors.append("Please provide a URI for this machine.")  # [I]
            elif style == "TentacleActive" and not (uri.strip().lower().startswith("poll://")
                                                   and len(uri.strip()) > len("poll://")):
                errors.append("A polling Tentacle's URI must be its subscription ID, of the form "
                              "poll://<subscription id>/.")  # [I]
            elif style == "TentaclePassive" and not uri.strip().lower().startswith("https://"):
                errors.append("A listening Tentacle's URI must be an https:// address.")  # [I]
            details = old.get("TentacleVersionDetails") or {
                "UpgradeLocked": False, "Version": None, "UpgradeSuggested": False, "UpgradeRequired": False,
                "UpgradeAvailable": False}
            if isinstance(ep.get("TentacleVersionDetails"), dict) and "UpgradeLocked" in ep["TentacleVersionDetails"]:
                details = {**details, "UpgradeLocked": bool(ep["TentacleVersionDetails"]["UpgradeLocked"])}
            out: dict[str, Any] = {"CommunicationStyle": style,
                                   "Uri": uri.strip() if isinstance(uri, str) else uri,
                                   "Thumbprint": thumb.strip() if isinstance(thumb, str) else thumb}
            if style == "TentaclePassive":
                out["ProxyId"] = ep.get("ProxyId")
            out["TentacleVersionDetails"] = details
            out["CertificateSignatureAlgorithm"] = ep.get("CertificateSignatureAlgorithm",
                                                          old.get("CertificateSignatureAlgorithm"))
            out["Links"] = {}
            return out
        # Ssh
        host, account = ep.get("Host"), ep.get("AccountId")
        if not isinstance(host, str) or not host.strip():
            errors.append("Please provide a host name for this machine.")  # [I]
        if not isinstance(account, str) or not account.strip():
            errors.append("Please select an account for this machine.")  # [I]
        port = ep.get("Port", 22)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            errors.append("The Port field must be a TCP port number.")
        return {"CommunicationStyle": "Ssh", "AccountId": account, "Host": host, "Port": port,
                "Fingerprint": ep.get("Fingerprint"), "Uri": f"ssh://{host}:{port}/", "ProxyId": ep.get("ProxyId"),
                "DotNetCorePlatform": ep.get("DotNetCorePlatform"), "Links": {}}

    def _validate_and_build_worker(self, sid: str, body: Any, existing: dict | None) -> dict:
        if not isinstance(body, dict):
            raise validation_error("The request body must be a JSON object.")
        errors: list[str] = []
        self._check_body_space(sid, body, errors)
        own_id = existing["Id"] if existing else None
        name = body.get("Name")
        if not isinstance(name, str) or not name.strip():
            errors.append("The name field is required")
            name = None
        else:
            name = name.strip()
            clash = self.worker_names[sid].get(name.lower())
            if clash and clash != own_id:
                errors.append(f"A machine named '{name}' already exists in this space. "
                              "Please choose a different name.")  # [I] wording
        disabled = body.get("IsDisabled", False)
        if not isinstance(disabled, bool):
            errors.append("The IsDisabled field must be true or false.")
        endpoint = self._normalize_endpoint(body.get("Endpoint"), errors, existing)
        pool_ids: list[str] = []
        raw_pools = body.get("WorkerPoolIds")
        if not isinstance(raw_pools, list) or not raw_pools:
            errors.append("Please select at least one worker pool.")  # [I]
        else:
            for raw in raw_pools:
                pid = canon_id(raw, "WorkerPools") if isinstance(raw, str) else None
                pool = self.pools.get(pid) if pid else None
                if pool is None or pool["SpaceId"] != sid:
                    errors.append(f"The worker pool '{raw}' could not be found in space {sid}.")  # [I]
                elif not pool["CanAddWorkers"]:
                    errors.append(f"Workers cannot be added to the dynamic worker pool '{pool['Name']}'.")  # [I]
                elif pid not in pool_ids:
                    pool_ids.append(pid)
        raw_policy = body.get("MachinePolicyId")
        policy_id = None
        if raw_policy in (None, ""):
            default = self.default_policy(sid)
            policy_id = existing["MachinePolicyId"] if existing else (default["Id"] if default else None)
        else:
            pol = self.get_in_space("machinepolicies", sid, raw_policy) if isinstance(raw_policy, str) else None
            if pol is None:
                errors.append(f"The machine policy '{raw_policy}' could not be found in space {sid}.")  # [I]
            else:
                policy_id = pol["Id"]
        slug = body.get("Slug")
        if slug is not None and (not isinstance(slug, str) or not slug.strip()):
            errors.append("The Slug field must be a non-empty string.")
            slug = None
        elif slug:
            slug = slug.strip()
            clash = self.worker_slugs[sid].get(slug.lower())
            if clash and clash != own_id:
                errors.append(f"A machine with the slug '{slug}' already exists in this space.")
        skip_initial = body.get("SkipInitialHealthCheck", False)
        if not isinstance(skip_initial, bool):
            errors.append("The SkipInitialHealthCheck field must be true or false.")
        if endpoint is not None and not errors and endpoint["CommunicationStyle"] in TENTACLE_STYLES:
            self._check_endpoint_uniqueness(sid, endpoint, own_id, errors)
        if errors:
            raise validation_error(*errors)
        wid = own_id or self._new_id("Workers")
        if not slug:
            slug = existing["Slug"] if existing else self._unique_slug(self.worker_slugs[sid], name, wid)
        health = existing["HealthStatus"] if existing else "Unknown"
        rec = {
            "Id": wid, "Name": name, "Slug": slug, "SpaceId": sid, "WorkerPoolIds": pool_ids,
            "Thumbprint": endpoint.get("Thumbprint"), "Uri": endpoint.get("Uri"), "IsDisabled": disabled,
            "MachinePolicyId": policy_id, "Status": "Unknown", "HealthStatus": health,
            "HasLatestCalamari": existing["HasLatestCalamari"] if existing else False,
            "StatusSummary": existing["StatusSummary"] if existing else SUMMARY["Unknown"],
            "IsInProcess": False, "SkipInitialHealthCheck": skip_initial,
            "Endpoint": endpoint,
            "OperatingSystem": existing["OperatingSystem"] if existing else "Unknown",
            "OperatingSystemVersion": existing["OperatingSystemVersion"] if existing else "Unknown",
            "ShellName": existing["ShellName"] if existing else "Unknown",
            "ShellVersion": existing["ShellVersion"] if existing else "Unknown",
            "Architecture": existing["Architecture"] if existing else "Unknown",
            "LastModifiedOn": octo_date(), "LastModifiedBy": USER_NAME,
            "Links": {"Self": f"/api/{sid}/workers/{wid}", "Connection": f"/api/{sid}/workers/{wid}/connection"},
        }
        rec["Status"] = _legacy_status(health, disabled)
        return rec

    def _check_endpoint_uniqueness(self, sid: str, endpoint: dict, own_id: str | None, errors: list[str]) -> None:
        key = uri_key(endpoint["Uri"])
        thumb = thumb_key(endpoint["Thumbprint"])
        for other_id in self.endpoint_index.get(key, ()):
            if other_id == own_id:
                continue
            other = self.workers[other_id]
            if other["SpaceId"] == sid and self.options.unique_endpoint_per_space:
                errors.append(f"The machine '{other['Name']}' in this space already uses the endpoint "
                              f"{endpoint['Uri']}.")  # [I]
                return
            if (other["SpaceId"] != sid and self.options.strict_endpoints
                    and thumb_key(other["Thumbprint"]) == thumb):
                errors.append(f"A polling Tentacle can only be registered to a single space: {endpoint['Uri']} "
                              f"is already registered in {other['SpaceId']}.")  # strict mode, [I]
                return

    def _insert_worker(self, rec: dict, meta: dict) -> None:
        sid, wid = rec["SpaceId"], rec["Id"]
        self.workers[wid] = rec
        self.worker_meta[wid] = meta
        self.space_workers[sid][wid] = None
        self.worker_names[sid][rec["Name"].lower()] = wid
        self.worker_slugs[sid][rec["Slug"].lower()] = wid
        key = uri_key(rec["Endpoint"].get("Uri")) if rec["Endpoint"]["CommunicationStyle"] in TENTACLE_STYLES else None
        if key:
            self.endpoint_index.setdefault(key, set()).add(wid)
        self._bump("Workers", wid)
        self._invalidate("workers", sid)

    def _remove_worker(self, rec: dict) -> dict:
        sid, wid = rec["SpaceId"], rec["Id"]
        del self.workers[wid]
        meta = self.worker_meta.pop(wid, {})
        del self.space_workers[sid][wid]
        self.worker_names[sid].pop(rec["Name"].lower(), None)
        self.worker_slugs[sid].pop(rec["Slug"].lower(), None)
        key = uri_key(rec["Endpoint"].get("Uri"))
        if key and key in self.endpoint_index:
            self.endpoint_index[key].discard(wid)
            if not self.endpoint_index[key]:
                del self.endpoint_index[key]
        self._invalidate("workers", sid)
        return meta

    def create_worker(self, sid: str, body: Any) -> dict:
        rec = self._validate_and_build_worker(sid, body, None)
        self._insert_worker(rec, {"held": False})
        if not rec["SkipInitialHealthCheck"]:
            self._schedule_check(rec["Id"])
        self.on_change()
        return rec

    def update_worker(self, sid: str, worker: dict, body: Any) -> dict:
        self._check_put_id(body, worker["Id"], "Workers")
        rec = self._validate_and_build_worker(sid, body, worker)
        endpoint_changed = (uri_key(rec["Uri"]) != uri_key(worker["Uri"])
                            or thumb_key(rec["Thumbprint"]) != thumb_key(worker["Thumbprint"]))
        meta = self._remove_worker(worker)
        self._insert_worker(rec, meta)
        if endpoint_changed:
            meta["held"] = False
            self._schedule_check(rec["Id"])
        self.on_change()
        return rec

    def delete_worker(self, sid: str, worker: dict) -> None:
        self._remove_worker(worker)
        self.on_worker_removed(worker)
        self.on_change()

    # ------------------------------------------------------------------ health
    def _schedule_check(self, wid: str, delay: float | None = None) -> None:
        if self.scheduler is None:
            return
        gen = self.generation
        delay = self.options.health_check_delay_seconds if delay is None else delay

        def run() -> None:
            if gen == self.generation and wid in self.workers:
                self.health_check(wid)

        self.scheduler(max(0.0, delay), run)

    def _set_health(self, rec: dict, health: str) -> None:
        before = rec["HealthStatus"]
        rec["HealthStatus"] = health
        rec["Status"] = _legacy_status(health, rec["IsDisabled"])
        rec["StatusSummary"] = SUMMARY[health]
        if health != before and self.workers.get(rec["Id"]) is rec:
            self.on_health_changed(rec, before)

    def health_check(self, wid: str) -> str:
        """Health-check one worker now: Healthy if its tentacle is connected, else Unavailable."""
        rec = self.workers[wid]
        style = rec["Endpoint"]["CommunicationStyle"]
        connected = style in TENTACLE_STYLES and self.is_connected(rec["Uri"], rec["Thumbprint"])
        before = rec["HealthStatus"]
        if connected:
            self._set_health(rec, "Healthy")
            info = self.connection_info(rec["Uri"], rec["Thumbprint"]) or {}
            rec["HasLatestCalamari"] = True
            rec["Endpoint"]["TentacleVersionDetails"]["Version"] = info.get("version") or "8.1.2"
            rec["OperatingSystem"] = info.get("os") or "Linux"
            rec["ShellName"] = info.get("shell") or "Bash"
            rec["Architecture"] = info.get("architecture") or "x64"
            self.worker_meta[wid]["held"] = False
        else:
            self._set_health(rec, "Unavailable")
            self.worker_meta[wid]["held"] = False
        if rec["HealthStatus"] != before:
            self.on_change()
        return rec["HealthStatus"]

    def health_check_all(self) -> dict[str, str]:
        return {wid: self.health_check(wid) for wid in list(self.workers)}

    def tentacle_connected(self, uri: str, thumbprint: str) -> None:
        for wid in list(self.endpoint_index.get(uri_key(uri) or "", ())):
            self._schedule_check(wid)

    def tentacle_disconnected(self, uri: str, thumbprint: str) -> None:
        changed = False
        for wid in list(self.endpoint_index.get(uri_key(uri) or "", ())):
            rec = self.workers[wid]
            if thumb_key(rec["Thumbprint"]) != thumb_key(thumbprint) or self.is_connected(rec["Uri"],
                                                                                         rec["Thumbprint"]):
                continue
            if rec["HealthStatus"] != "Unavailable":
                self._set_health(rec, "Unavailable")
                changed = True
            self.worker_meta[wid]["held"] = False
        if changed:
            self.on_change()


def _num(rid: str) -> int:
    try:
        return int(rid.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _legacy_status(health: str, disabled: bool) -> str:
    return "Disabled" if disabled else LEGACY_STATUS.get(health, "Unknown")


def policy_record(pid: str | None, sid: str, name: str, is_default: bool, description: str = "") -> dict:
    rec: dict[str, Any] = {}
    if pid is not None:
        rec["Id"] = pid
    rec.update({
        "Name": name, "Description": description, "IsDefault": is_default, "SpaceId": sid,
        "MachineHealthCheckPolicy": {
            # RunType is one of InheritFromDefault, Inline, OnlyConnectivity (Octopus.Client's ScriptPolicyRunType).
            "PowerShellHealthCheckPolicy": {"RunType": "Inline", "ScriptBody": ""},
            "BashHealthCheckPolicy": {"RunType": "Inline", "ScriptBody": ""},
            "HealthCheckInterval": "1.00:00:00", "HealthCheckCron": None, "HealthCheckCronTimezone": "UTC",
            "HealthCheckType": "RunScript",
        },
        "MachineConnectivityPolicy": {"MachineConnectivityBehavior": "ExpectedToBeOnline"},
        "MachineCleanupPolicy": {"DeleteMachinesBehavior": "DoNotDelete",
                                 "DeleteMachinesElapsedTimeSpan": "1.00:00:00"},
        "MachineUpdatePolicy": {"CalamariUpdateBehavior": "UpdateOnDeployment", "TentacleUpdateBehavior": "NeverUpdate",
                                "TentacleUpdateAccountId": None},
        "PollingRequestQueueTimeout": "00:02:00", "PollingRequestMaximumMessageProcessingTimeout": "00:10:00",
        "ConnectionRetrySleepInterval": "00:00:01", "ConnectionRetryCountLimit": 5,
        "ConnectionRetryTimeLimit": "00:05:00", "ConnectionConnectTimeout": "00:01:00",
        "Links": {"Self": f"/api/{sid}/machinepolicies/{pid}" if pid else f"/api/{sid}/machinepolicies/template"},
    })
    return rec
