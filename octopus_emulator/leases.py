"""Worker task leases and simulated deployment steps (``demand-scaling.md`` §0, §2).

A simulated step is a server task in one space that runs one step on a worker of one pool for a while:

- **Picking a worker.** The server takes the healthy (``Healthy`` or ``HasWarnings`` [I]) worker of the pool with
  the fewest active leases [D BP], ties broken by name, then id [I]. Leases are non-exclusive: one worker runs
  many steps at once [D WMP]. A worker holding an exclusive lease gets no other lease, and an exclusive step needs
  a worker with none [I; D WP FAQ: exclusive leases are for Tentacle upgrades].
- **No worker, no wait.** When the pool has no such worker the step fails at once: task ``Failed`` with a reason
  [D WP][V I9356]. (Since 2025.3 the server retries while every healthy worker is *exclusively* leased [V I9470];
  not modelled: it fails too.)
- **Disabled workers** are the undocumented part [I]: setting ``disabled_worker_leases`` chooses between
  ``no_new_leases`` (default: a disabled worker gets no new lease; running ones finish) and ``still_leased``
  (the disabled flag is ignored when leasing). Running leases are never affected by disabling.
- **A lease holds one worker record.** A machine shared into N spaces is N records with one endpoint; it is busy
  while any of them holds a lease [V I7707]. The step "runs on the Tentacle" behind its record: when the record
  turns unavailable (its tentacle left the comms channel, or a health check failed) the step is **killed**
  (task ``Failed``, counted ``killed``) [I].
- **Delete while leased** is refused: 400 whose ``ErrorMessage`` says the worker is currently in use
  [V I5634][V I7707; status and body I]. With ``refuse_delete_while_leased: false`` the delete goes through and
  kills the steps on that record (a model of a server without the guard) [I].
- **Stale leases** outlive their task (``IsCompleted``, ``Canceled``/``Failed``) and block deletion until a
  server restart [V I5634, I9692, I9868]. They are injected (or left behind when a task is completed with
  ``keep_lease``) and cleared by the simulated restart, which touches nothing else [I].
- **Time** is real time: a step with ``duration_seconds`` (a float) ends ``Success`` after that long; without one
  it runs until the control API completes it. There is no virtual clock (the emulator has none).

The REST side is ``GET /api/{spaceId}/workertaskleases`` (``skip``/``take`` only [D LEASE]), and
``GET /api/{spaceId}/tasks``, ``/api/{spaceId}/tasks/{id}``, ``/api/tasks`` and ``/api/tasks/{id}``
[D APIREF-T] (handlers in ``app.py``). The control API (``/_emulator/tasks``, ``/_emulator/leases``,
``/_emulator/server-restart``) is registered by :func:`add_control_routes`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from .scenario import DISABLED_WORKER_LEASE_MODES
from .state import ApiError, Store, validation_error
from .util import canon_id, dumps, octo_date, parse_bool, split_csv, thumb_key, uri_key

TASK_STATES = ("New", "Queued", "Executing", "Cancelling", "Success", "Failed", "Canceled", "TimedOut")
COMPLETED_STATES = ("Success", "Failed", "Canceled", "TimedOut")
ACTIVE_STATES = ("New", "Queued", "Executing", "Cancelling")
RUNNING_STATES = ("Executing", "Cancelling")
#: health statuses a step may be leased onto [I: the docs say "a healthy worker"]
LEASABLE_HEALTH = ("Healthy", "HasWarnings")

LEASES_TEMPLATE_Q = "{?skip,take}"
TASKS_TEMPLATE_Q = "{?skip,active,environment,tenant,project,name,node,running,states,ids,take}"  # [I]
GLOBAL_TASKS_TEMPLATE_Q = ("{?skip,active,environment,tenant,project,name,node,running,states,spaces,includeSystem,"
                           "ids,take}")  # 2020.4 root document [V GO-ROOT], trimmed

#: the outcome a completion state is counted as
OUTCOMES = {"Success": "succeeded", "Failed": "failed", "Canceled": "canceled", "TimedOut": "timed_out"}
COUNTER_KEYS = ("started", "succeeded", "failed_no_worker", "killed", "failed", "canceled", "timed_out",
                "stale_injected", "stale_cleared")

IN_USE_MESSAGE = ("The worker '{name}' ({wid}) is currently in use: {tasks} still hold(s) a lease on it. "
                  "It cannot be deleted until the lease is released.")  # [I] wording
NO_WORKER_MESSAGE = ("The step could not run: the worker pool '{pool}' ({pid}) has no healthy{enabled} worker "
                     "available. Octopus does not wait for a worker.")  # [I] wording
KILLED_UNAVAILABLE = ("The step was killed: the Tentacle of worker '{name}' ({wid}) became unavailable while the step "
                      "was running ({health}).")  # [I] wording
KILLED_DELETED = "The step was killed: worker '{name}' ({wid}) was deleted while the step was running."  # [I]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _human(dt: datetime) -> str:
    return dt.strftime("%A, %d %B %Y %I:%M:%S %p +00:00")


def _duration_text(seconds: float) -> str:
    if seconds < 1:
        return "less than a second"
    if seconds < 120:
        return f"{int(seconds)} seconds"
    return f"{int(seconds // 60)} minutes"


@dataclass(eq=False)
class Task:
    id: str
    space_id: str
    name: str
    description: str
    pool_id: str | None
    queue_time: datetime
    state: str = "Executing"
    start_time: datetime | None = None
    completed_time: datetime | None = None
    error: str = ""
    outcome: str = "running"  # running | succeeded | failed_no_worker | killed | failed | canceled | timed_out
    worker_id: str | None = None
    worker_name: str | None = None
    lease_id: str | None = None
    duration: float | None = None
    exclusive: bool = False
    project_id: str | None = None
    injected: bool = False  # a stale lease's task made by the control API

    @property
    def done(self) -> bool:
        return self.state in COMPLETED_STATES

    def render(self) -> dict[str, Any]:
        """The ``ServerTask`` resource (OC ``TaskResource``; field order [I])."""
        end = self.completed_time or _now()
        elapsed = (end - (self.start_time or self.queue_time)).total_seconds()
        last = self.completed_time or self.start_time or self.queue_time
        return {
            "Id": self.id, "SpaceId": self.space_id, "EstimatedRemainingQueueDurationSeconds": 0,
            "Name": self.name, "Description": self.description, "Arguments": {},
            "State": self.state,
            "Completed": _human(self.completed_time) if self.completed_time else None,
            "QueueTime": octo_date(self.queue_time), "QueueTimeExpiry": None,
            "StartTime": octo_date(self.start_time) if self.start_time else None,
            "LastUpdatedTime": octo_date(last),
            "CompletedTime": octo_date(self.completed_time) if self.completed_time else None,
            "ServerNode": "node-1", "Duration": _duration_text(max(0.0, elapsed)), "ErrorMessage": self.error,
            "HasBeenPickedUpByProcessor": True, "IsCompleted": self.done,
            "FinishedSuccessfully": self.state == "Success", "HasPendingInterruptions": False, "CanRerun": False,
            "HasWarningsOrErrors": self.state in ("Failed", "TimedOut"), "ProjectId": self.project_id,
            "PendingInterruptionTypes": [],
            "Links": {"Self": f"/api/{self.space_id}/tasks/{self.id}", "Web": f"/app#/{self.space_id}/tasks/{self.id}"},
        }


@dataclass(eq=False)
class Lease:
    id: str
    name: str
    worker_id: str
    pool_id: str
    task_id: str
    space_id: str
    taken_at: datetime
    exclusive: bool
    endpoint: tuple[str, str] = field(default=("", ""))  # (uri key, thumbprint key) of the record at lease time

    def render(self) -> dict[str, Any]:
        """A ``WorkerTaskLease`` (the documented fields only [D LEASE])."""
        return {"Id": self.id, "Name": self.name, "WorkerId": self.worker_id, "WorkerPoolId": self.pool_id,
                "ServerTaskId": self.task_id, "SpaceId": self.space_id, "TakenAt": octo_date(self.taken_at),
                "Exclusive": self.exclusive}


class ControlError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class LeaseModel:
    """Tasks and leases, on the emulator's event loop (not thread-safe, like :class:`Store`)."""

    def __init__(self, store: Store, scheduler: Callable[[float, Callable[[], None]], Any]):
        self.store = store
        self.scheduler = scheduler
        store.on_worker_removed = self.worker_removed
        store.on_health_changed = self.health_changed
        self.reset()

    def reset(self) -> None:
        """A fresh server: no tasks, no leases, counters at zero (``POST /_emulator/reset``)."""
        self.tasks: dict[str, Task] = {}
        self.space_tasks: dict[str, dict[str, None]] = {}
        self.leases: dict[str, Lease] = {}
        self.space_leases: dict[str, dict[str, None]] = {}
        self.worker_leases: dict[str, dict[str, None]] = {}
        self.running: dict[str, None] = {}  # ids of the tasks still running
        self.next_task = 1
        self.next_lease = 1
        self.counters: Counter[str] = Counter({k: 0 for k in COUNTER_KEYS})

    # ------------------------------------------------------------------ settings
    @property
    def mode(self) -> str:
        return self.store.options.disabled_worker_leases

    def settings(self) -> dict[str, Any]:
        opts = self.store.options
        return {"disabled_worker_leases": opts.disabled_worker_leases,
                "refuse_delete_while_leased": opts.refuse_delete_while_leased}

    def configure(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ControlError("the body must be a JSON object")
        unknown = sorted(set(body) - {"disabled_worker_leases", "refuse_delete_while_leased"})
        if unknown:
            raise ControlError(f"unknown lease setting(s): {', '.join(unknown)}")
        mode = body.get("disabled_worker_leases", self.mode)
        if mode not in DISABLED_WORKER_LEASE_MODES:
            raise ControlError(f"disabled_worker_leases must be one of {', '.join(DISABLED_WORKER_LEASE_MODES)}")
        refuse = body.get("refuse_delete_while_leased", self.store.options.refuse_delete_while_leased)
        if not isinstance(refuse, bool):
            raise ControlError("refuse_delete_while_leased must be true or false")
        self.store.options = self.store.options.merged(
            {"disabled_worker_leases": mode, "refuse_delete_while_leased": refuse})
        self.store.on_change()  # options are part of the state file
        return self.settings()

    # ------------------------------------------------------------------ lookups for the control API
    def _space(self, raw: Any) -> dict:
        if raw in (None, ""):
            space = self.store.default_space()
            if space is None:
                raise ControlError("no space given and there is no default space")
            return space
        if not isinstance(raw, str):
            raise ControlError("space must be a space id or name")
        space = self.store.get_space(raw)
        if space is None:
            space = next((s for s in self.store.spaces.values() if s["Name"].lower() == raw.strip().lower()), None)
        if space is None:
            raise ControlError(f"no space {raw!r}", 404)
        return space

    def _pool(self, sid: str, raw: Any) -> dict:
        if not isinstance(raw, str) or not raw.strip():
            raise ControlError("pool (a worker pool id or name) is required")
        pool = self.store.get_in_space("workerpools", sid, raw)
        if pool is None:
            pid = self.store.pool_names[sid].get(raw.strip().lower())
            pool = self.store.pools.get(pid) if pid else None
        if pool is None:
            raise ControlError(f"no worker pool {raw!r} in {sid}", 404)
        return pool

    def _worker(self, sid: str, raw: Any) -> dict:
        if not isinstance(raw, str) or not raw.strip():
            raise ControlError("worker (a worker id or name) is required")
        rec = self.store.get_in_space("workers", sid, raw)
        if rec is None:
            wid = self.store.worker_names[sid].get(raw.strip().lower())
            rec = self.store.workers.get(wid) if wid else None
        if rec is None:
            raise ControlError(f"no worker {raw!r} in {sid}", 404)
        return rec

    def task(self, raw: str) -> Task:
        tid = canon_id(raw, "ServerTasks")
        task = self.tasks.get(tid) if tid else None
        if task is None:
            raise ControlError(f"no task {raw!r}", 404)
        return task

    # ------------------------------------------------------------------ ids and indexes
    def _new_task(self, sid: str, name: str, description: str, pool_id: str | None, when: datetime) -> Task:
        task = Task(f"ServerTasks-{self.next_task}", sid, name, description, pool_id, when, start_time=when)
        self.next_task += 1
        self.tasks[task.id] = task
        self.space_tasks.setdefault(sid, {})[task.id] = None
        return task

    def _add_lease(self, task: Task, rec: dict, pool_id: str, when: datetime, exclusive: bool) -> Lease:
        lease = Lease(f"WorkerTaskLeases-{self.next_lease}", rec["Name"], rec["Id"], pool_id, task.id,
                      task.space_id, when, exclusive, (uri_key(rec.get("Uri")) or "", thumb_key(rec.get("Thumbprint"))))
        self.next_lease += 1
        self.leases[lease.id] = lease
        self.space_leases.setdefault(lease.space_id, {})[lease.id] = None
        self.worker_leases.setdefault(lease.worker_id, {})[lease.id] = None
        task.worker_id, task.worker_name, task.lease_id = rec["Id"], rec["Name"], lease.id
        return lease

    def _release(self, lease_id: str | None) -> None:
        lease = self.leases.pop(lease_id, None) if lease_id else None
        if lease is None:
            return
        self.space_leases.get(lease.space_id, {}).pop(lease.id, None)
        held = self.worker_leases.get(lease.worker_id)
        if held is not None:
            held.pop(lease.id, None)
            if not held:
                del self.worker_leases[lease.worker_id]

    # ------------------------------------------------------------------ steps
    def _candidates(self, sid: str, pool_id: str, exclusive: bool) -> list[dict]:
        ignore_disabled = self.mode == "still_leased"
        out = []
        for wid in self.store.space_workers.get(sid, ()):
            rec = self.store.workers[wid]
            if pool_id not in rec["WorkerPoolIds"] or rec["HealthStatus"] not in LEASABLE_HEALTH:
                continue
            if rec["IsDisabled"] and not ignore_disabled:
                continue
            held = self.worker_leases.get(wid, {})
            if (exclusive and held) or any(self.leases[lid].exclusive for lid in held):
                continue
            out.append(rec)
        return out

    def start_step(self, body: Any) -> Task:
        """``POST /_emulator/tasks``: start one step; it fails at once when the pool has no leasable worker."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ControlError("the body must be a JSON object")
        allowed = {"space", "pool", "duration_seconds", "name", "description", "exclusive", "project_id"}
        unknown = sorted(k for k in body if k not in allowed and not k.startswith("_"))
        if unknown:
            raise ControlError(f"unknown key(s): {', '.join(unknown)}")
        space = self._space(body.get("space"))
        sid = space["Id"]
        pool = self._pool(sid, body.get("pool"))
        if pool["WorkerPoolType"] != "StaticWorkerPool":
            raise ControlError(f"{pool['Id']} is a dynamic worker pool: hosted workers are not modelled")
        duration = body.get("duration_seconds")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                     or not 0 <= duration <= 7 * 86400):
            raise ControlError("duration_seconds must be null (until completed) or a number of seconds in [0, 604800]")
        name, description = body.get("name", "Deploy"), body.get("description")
        exclusive, project = body.get("exclusive", False), body.get("project_id")
        if not isinstance(name, str) or not name.strip() or not isinstance(exclusive, bool):
            raise ControlError("name must be a non-empty string and exclusive true or false")
        if description is not None and not isinstance(description, str):
            raise ControlError("description must be a string")
        if project is not None and not isinstance(project, str):
            raise ControlError("project_id must be a string")
        now = _now()
        task = self._new_task(sid, name.strip(), description or f"Simulated step on worker pool {pool['Name']}",
                              pool["Id"], now)
        task.duration, task.exclusive, task.project_id = duration, exclusive, project
        self.counters["started"] += 1
        candidates = self._candidates(sid, pool["Id"], exclusive)
        if not candidates:
            enabled = "" if self.mode == "still_leased" else ", enabled"
            self._finish(task, "Failed", "failed_no_worker",
                         NO_WORKER_MESSAGE.format(pool=pool["Name"], pid=pool["Id"], enabled=enabled))
            return task
        rec = min(candidates, key=lambda r: (len(self.worker_leases.get(r["Id"], ())), r["Name"].lower(),
                                             _num(r["Id"])))
        self._add_lease(task, rec, pool["Id"], now, exclusive)
        self.running[task.id] = None
        if duration is not None:
            self.scheduler(float(duration), lambda: self._timer(task))
        return task

    def _timer(self, task: Task) -> None:
        if self.tasks.get(task.id) is task and not task.done:
            self._finish(task, "Success", "succeeded")

    def _finish(self, task: Task, state: str, outcome: str, error: str = "", keep_lease: bool = False) -> None:
        task.state, task.outcome, task.error = state, outcome, error
        task.completed_time = _now()
        self.running.pop(task.id, None)
        self.counters[outcome] += 1
        if not keep_lease:
            self._release(task.lease_id)

    def complete(self, raw_id: str, body: Any) -> Task:
        """``POST /_emulator/tasks/{id}/complete``: end a running task now (``keep_lease``: leave it stale)."""
        body = body or {}
        if not isinstance(body, dict):
            raise ControlError("the body must be a JSON object")
        unknown = sorted(set(body) - {"state", "keep_lease", "error"})
        if unknown:
            raise ControlError(f"unknown key(s): {', '.join(unknown)}")
        state, keep, error = body.get("state", "Success"), body.get("keep_lease", False), body.get("error")
        if state not in COMPLETED_STATES:
            raise ControlError(f"state must be one of {', '.join(COMPLETED_STATES)}")
        if not isinstance(keep, bool) or (error is not None and not isinstance(error, str)):
            raise ControlError("keep_lease must be true or false and error a string")
        task = self.task(raw_id)
        if task.done:
            raise ControlError(f"{task.id} has already completed ({task.state})", 409)
        if keep and task.lease_id is None:
            raise ControlError(f"{task.id} holds no lease to keep")
        default_error = "" if state == "Success" else f"The task was {state.lower()} (emulator control API)."
        self._finish(task, state, OUTCOMES[state], error if error is not None else default_error, keep)
        return task

    # ------------------------------------------------------------------ stale leases and restarts
    def inject_stale(self, body: Any) -> tuple[Task, Lease]:
        """``POST /_emulator/leases/stale``: a completed task whose lease remains until a server restart."""
        body = body or {}
        if not isinstance(body, dict):
            raise ControlError("the body must be a JSON object")
        unknown = sorted(set(body) - {"space", "worker", "pool", "state", "age_seconds", "exclusive"})
        if unknown:
            raise ControlError(f"unknown key(s): {', '.join(unknown)}")
        sid = self._space(body.get("space"))["Id"]
        rec = self._worker(sid, body.get("worker"))
        if body.get("pool") is not None:
            pool_id = self._pool(sid, body["pool"])["Id"]
        elif rec["WorkerPoolIds"]:
            pool_id = rec["WorkerPoolIds"][0]
        else:
            raise ControlError(f"{rec['Id']} is in no worker pool")
        state, age, exclusive = body.get("state", "Canceled"), body.get("age_seconds", 0), body.get("exclusive", False)
        if state not in ("Canceled", "Failed", "TimedOut"):
            raise ControlError("state must be Canceled, Failed or TimedOut")
        if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0 or not isinstance(exclusive, bool):
            raise ControlError("age_seconds must be a number >= 0 and exclusive true or false")
        when = _now() - timedelta(seconds=float(age))
        task = self._new_task(sid, "Deploy", f"Simulated task that left a stale lease on {rec['Name']}", pool_id, when)
        task.injected = True
        lease = self._add_lease(task, rec, pool_id, when, exclusive)
        task.state, task.outcome, task.completed_time = state, "stale", when
        task.error = f"The task was {state.lower()}; its worker lease was not released (stale lease)."
        self.counters["stale_injected"] += 1
        return task, lease

    def server_restart(self) -> list[str]:
        """``POST /_emulator/server-restart``: clear the stale leases (those whose task has completed) [V I5634].
        Running steps and everything else are left as they are [I]."""
        stale = [lid for lid, lease in self.leases.items() if self.tasks[lease.task_id].done]
        for lid in stale:
            self._release(lid)
        self.counters["stale_cleared"] += len(stale)
        return stale

    # ------------------------------------------------------------------ store hooks
    def check_delete(self, rec: dict) -> None:
        """Before ``DELETE …/workers/{id}``: refuse while the record holds any lease (stale ones included)."""
        held = self.worker_leases.get(rec["Id"])
        if not held or not self.store.options.refuse_delete_while_leased:
            return
        tasks = ", ".join(self.leases[lid].task_id for lid in held)
        msg = IN_USE_MESSAGE.format(name=rec["Name"], wid=rec["Id"], tasks=tasks)
        raise ApiError(400, msg, [msg])

    def _kill_on(self, wid: str, message: str, drop_stale: bool) -> None:
        for lid in list(self.worker_leases.get(wid, ())):
            task = self.tasks[self.leases[lid].task_id]
            if not task.done:
                self._finish(task, "Failed", "killed", message)
            elif drop_stale:
                self._release(lid)

    def worker_removed(self, rec: dict) -> None:
        self._kill_on(rec["Id"], KILLED_DELETED.format(name=rec["Name"], wid=rec["Id"]), drop_stale=True)

    def health_changed(self, rec: dict, before: str) -> None:
        if rec["HealthStatus"] not in LEASABLE_HEALTH and rec["Id"] in self.worker_leases:
            self._kill_on(rec["Id"], KILLED_UNAVAILABLE.format(name=rec["Name"], wid=rec["Id"],
                                                               health=rec["HealthStatus"]), drop_stale=False)

    # ------------------------------------------------------------------ REST views
    def lease_records(self, sid: str) -> list[dict]:
        return [self.leases[lid].render() for lid in self.space_leases.get(sid, ())]

    def query_tasks(self, space_ids: list[str], query: dict[str, str],
                    filters: list[tuple[str, str]]) -> tuple[list[Task], dict[str, int]]:
        """Tasks of these spaces, newest first, filtered like ``GET /api/tasks`` [D APIREF-T]; also the
        ``TotalCounts`` per state of the tasks that pass every filter but the state ones [I]."""
        wanted_ids = None
        if "ids" in query:
            filters.append(("ids", query["ids"]))
            wanted_ids = {canon_id(i, "ServerTasks") for i in split_csv(query["ids"])}
        name = query.get("name", "").strip().lower()
        if "name" in query:
            filters.append(("name", query["name"]))
        project = query.get("project", "").strip().lower()
        if "project" in query:
            filters.append(("project", query["project"]))
        states = None
        if query.get("states"):
            states = set()
            for v in split_csv(query["states"]):
                match = next((s for s in TASK_STATES if s.lower() == v.lower()), None)
                if match is None:
                    raise validation_error(f"The value '{v}' is not valid for states.")
                states.add(match)
            filters.append(("states", query["states"]))
        flags = {}
        for key, pname, group in (("running", "running", RUNNING_STATES), ("active", "active", ACTIVE_STATES)):
            if query.get(key):
                flag = parse_bool(query[key])
                if flag is None:
                    raise validation_error(f"The value '{query[key]}' is not valid for {pname}.")
                filters.append((pname, query[key]))
                flags[group] = flag
        items: list[Task] = []
        counts = {s: 0 for s in TASK_STATES}
        for sid in space_ids:
            for tid in self.space_tasks.get(sid, ()):
                task = self.tasks[tid]
                if wanted_ids is not None and tid not in wanted_ids:
                    continue
                if name and task.name.lower() != name:
                    continue
                if project and (task.project_id or "").lower() != project:
                    continue
                counts[task.state] += 1
                if states is not None and task.state not in states:
                    continue
                if any((task.state in group) != flag for group, flag in flags.items()):
                    continue
                items.append(task)
        items.sort(key=lambda t: _num(t.id), reverse=True)
        return items, counts

    # ------------------------------------------------------------------ control views
    def task_view(self, task: Task) -> dict[str, Any]:
        lease = self.leases.get(task.lease_id) if task.lease_id else None
        rec = self.store.workers.get(task.worker_id) if task.worker_id else None
        return {"id": task.id, "space_id": task.space_id, "name": task.name, "state": task.state,
                "is_completed": task.done, "outcome": task.outcome, "reason": task.error or None,
                "pool_id": task.pool_id, "worker_id": task.worker_id, "worker_name": task.worker_name,
                "lease_id": task.lease_id, "lease_held": lease is not None,
                "endpoint": lease.endpoint[0] if lease else (rec["Uri"] if rec else None),
                "duration_seconds": task.duration, "exclusive": task.exclusive, "injected": task.injected}

    def counter_view(self) -> dict[str, int]:
        out = {k: self.counters[k] for k in COUNTER_KEYS}
        out["running"] = len(self.running)
        out["leases"] = len(self.leases)
        out["stale_leases"] = sum(1 for lease in self.leases.values() if self.tasks[lease.task_id].done)
        return out

    def lease_view(self) -> dict[str, Any]:
        leases, busy = [], {}
        for lease in self.leases.values():
            task = self.tasks[lease.task_id]
            leases.append({**lease.render(), "TaskState": task.state, "Stale": task.done,
                           "Endpoint": lease.endpoint[0], "Thumbprint": lease.endpoint[1]})
            entry = busy.setdefault(lease.endpoint, {"endpoint": lease.endpoint[0], "thumbprint": lease.endpoint[1],
                                                     "leases": 0, "worker_ids": []})
            entry["leases"] += 1
            if lease.worker_id not in entry["worker_ids"]:
                entry["worker_ids"].append(lease.worker_id)
        return {"settings": self.settings(), "leases": leases, "busy_endpoints": list(busy.values())}

    def snapshot(self) -> dict[str, Any]:
        """The live part shown in ``GET /_emulator/state`` (not reloaded by a reset, like ``comms``)."""
        return {"settings": self.settings(), "counters": self.counter_view(),
                "leases": [lease.render() for lease in self.leases.values()]}


def _num(rid: str) -> int:
    try:
        return int(rid.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------------- control API
def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json; charset=utf-8")


def _error(exc: Exception, status: int = 400) -> Response:
    return _json({"ErrorMessage": str(exc), "Errors": [str(exc)]}, getattr(exc, "status", status))


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ControlError(f"invalid JSON: {exc}") from None


def add_control_routes(app: FastAPI, model_of: Callable[[], LeaseModel]) -> None:
    """``/_emulator/tasks…``, ``/_emulator/leases…`` and ``/_emulator/server-restart`` (see the README)."""

    @app.get("/_emulator/tasks", include_in_schema=False)
    async def tasks_list(request: Request):
        model = model_of()
        only = request.query_params.get("running")
        flag = parse_bool(only) if only else None
        if only and flag is None:
            return _error(ControlError("running must be true or false"))
        if flag:
            tasks = [model.tasks[tid] for tid in model.running]
        else:
            tasks = [t for t in model.tasks.values() if flag is None or t.done]
        return _json({"counters": model.counter_view(), "settings": model.settings(),
                      "tasks": [model.task_view(t) for t in tasks]})

    @app.post("/_emulator/tasks", include_in_schema=False)
    async def tasks_start(request: Request):
        model = model_of()
        try:
            return _json(model.task_view(model.start_step(await _body(request))))
        except ControlError as exc:
            return _error(exc)

    @app.get("/_emulator/tasks/counters", include_in_schema=False)
    async def tasks_counters():
        return _json(model_of().counter_view())

    @app.get("/_emulator/tasks/{task_id}", include_in_schema=False)
    async def task_get(task_id: str):
        model = model_of()
        try:
            return _json(model.task_view(model.task(task_id)))
        except ControlError as exc:
            return _error(exc)

    @app.post("/_emulator/tasks/{task_id}/complete", include_in_schema=False)
    async def task_complete(task_id: str, request: Request):
        model = model_of()
        try:
            return _json(model.task_view(model.complete(task_id, await _body(request))))
        except ControlError as exc:
            return _error(exc)

    @app.get("/_emulator/leases", include_in_schema=False)
    async def leases_get():
        return _json(model_of().lease_view())

    @app.post("/_emulator/leases/stale", include_in_schema=False)
    async def leases_stale(request: Request):
        model = model_of()
        try:
            task, lease = model.inject_stale(await _body(request))
        except ControlError as exc:
            return _error(exc)
        return _json({"task": model.task_view(task), "lease": lease.render()})

    @app.get("/_emulator/leases/settings", include_in_schema=False)
    async def lease_settings_get():
        return _json(model_of().settings())

    @app.put("/_emulator/leases/settings", include_in_schema=False)
    async def lease_settings_put(request: Request):
        try:
            return _json(model_of().configure(await _body(request) or {}))
        except ControlError as exc:
            return _error(exc)

    @app.post("/_emulator/server-restart", include_in_schema=False)
    async def server_restart():
        cleared = model_of().server_restart()
        return _json({"ok": True, "cleared": cleared})
