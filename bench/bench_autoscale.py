"""Simulation benchmark of the elastic fleet (issue 20): the scaler's rule over a synthetic working day.

**What runs.** The emulator's own lease model, in-process: :class:`octopus_emulator.state.Store` and
:class:`octopus_emulator.leases.LeaseModel` (the code behind ``workertaskleases``, ``/_emulator/tasks`` and the
"currently in use" delete refusal), driven on a **virtual clock**. Both take their timers through a scheduler
callback, which here is the virtual clock's event queue, and the one wall-clock read of the lease model
(``leases._now``, the tasks' and leases' timestamps) is pointed at the virtual clock for the run and restored after.
Nothing of the lease semantics is reimplemented: a step leases the enabled, healthy record with the fewest leases
in its space's pool or fails at once; a disabled record gets no new lease (``--disabled-leases still_leased``
switches to the other, undocumented behaviour); a delete is refused while a record is leased; a record whose
Tentacle goes away kills its steps. Why in-process rather than the HTTP server: a day of real time is not
affordable, and the emulator has no virtual clock of its own (its docstring says so); the HTTP layer adds nothing to
the timing questions measured here and is tested elsewhere.

**What is simulated around it** (the local cloud's timing, not its processes): an instance built at *t* boots for
``--boot-seconds`` (Terraform + VM + Tentacle start + the share), then its Tentacle connects and its record is
created in every space the access policy allows (never in a denied one); the emulator's health check turns the
records Healthy after ``health_check_delay_seconds``. Every ``--tick-seconds`` the scaler reads the leases of all
allowed spaces (and the queued/executing tasks there), builds the fleet view, calls
:func:`octopus.autoscale.decide`, and acts: build, disable (drain), re-enable, or delete the records and remove the
instance (the drain's end: two lease reads a tick apart found none, then the deletes, each refused by the model if
a lease slipped in, and only after every record is gone the instance). A fault window makes the reads fail (503)
for a while: the rule must hold.

**Workload** (seeded): deployments arrive as a Poisson process per space, each 1–4 sequential steps on the shared
pool, short (lognormal, median 75 s) or long (10–40 min); quiet nights with rare stragglers, a nightly batch in its
own window, a ramp from 07:00, a burst at 09:00, a steady day. Four spaces are in the policy; ``Sandbox`` is denied
and runs its steps on a worker of its own: it must get no record of ours and add no demand. ``--load square``
instead alternates a high and a zero load (``--square-period-minutes``) for the direction-change bound.

**Beside it:** (a) a fixed fleet sized for the peak (``ceil(peak concurrent steps / leases_per_worker)``, running
the whole period, simulated on the same workload) and (b) a perfect-knowledge lower bound: the integral of
``ceil(concurrent steps(t) / leases_per_worker)`` over the period (no boot time, no floor, no idle period).

    .venv/bin/python bench/bench_autoscale.py --json /tmp/autoscale.json --plot /tmp/autoscale.png
    .venv/bin/python bench/bench_autoscale.py --load square --hours 6 --start 10:00

Nothing is asserted here (``--check`` makes the exit status 1 when a bound of issue 20 is missed); the figures go to
``docs/autoscale.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "plugins")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from octopus import access_policy, autoscale  # noqa: E402
from octopus_emulator import leases as lease_module  # noqa: E402
from octopus_emulator.leases import LeaseModel  # noqa: E402
from octopus_emulator.scenario import make_worker, polling_endpoint  # noqa: E402
from octopus_emulator.state import ApiError, Options, Store  # noqa: E402
from octopus_emulator.util import thumb_key, uri_key  # noqa: E402

POOL = "Local Worker Pool TF"
SPACE_NAMES = ("Team A", "Team B", "Team C", "Team D", "Team E", "Platform", "Data", "Web")
DENIED_SPACE = "Sandbox"
ACCESS = {"allow": "all", "deny": ["Sandbox*"]}
#: the day the simulation runs (a Monday, so the business window is open)
DAY = datetime(2026, 12, 7, tzinfo=timezone.utc)
DEFAULT_POLICY: dict[str, Any] = {
    "min_size": 0,
    "max_size": 20,
    "leases_per_worker": 4,
    "windows": [
        {"name": "business hours", "days": ["mon-fri"], "start": "07:00", "end": "19:00", "tz": "UTC", "min_size": 2},
        {"name": "nightly batch", "days": ["mon-sun"], "start": "01:45", "end": "03:30", "tz": "UTC", "min_size": 1},
    ],
}
JSON_KEYS = (
    "steps_killed",
    "steps_failed_no_worker_in_window",
    "worker_hours",
    "fixed_fleet_worker_hours",
    "lower_bound_worker_hours",
    "max_direction_changes_per_hour",
)


# ---------------------------------------------------------------------------------------------------- virtual clock
class VirtualClock:
    """An event queue: ``schedule(delay, fn)`` is the scheduler the Store and the LeaseModel take."""

    def __init__(self, start: datetime):
        self.start = start
        self.now = 0.0  # seconds since start
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    def dt(self) -> datetime:
        return self.start + timedelta(seconds=self.now)

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self.at(self.now + max(0.0, delay), fn)

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, fn))

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, fn = heapq.heappop(self._queue)
            self.now = when
            fn()
        self.now = end


@contextlib.contextmanager
def lease_clock(clock: VirtualClock) -> Iterator[None]:
    """Point the lease model's one wall-clock read at the virtual clock for the run."""
    saved = lease_module._now
    lease_module._now = clock.dt  # type: ignore[assignment]
    try:
        yield
    finally:
        lease_module._now = saved  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------------- workload
@dataclass(frozen=True)
class Deployment:
    space: str
    arrival: float  # seconds since the start of the period
    steps: tuple[float, ...]  # durations, run one after the other


def _steps(rng: random.Random, long_share: float) -> tuple[float, ...]:
    out = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
        if rng.random() < long_share:
            out.append(rng.uniform(600, 2400))
        else:
            out.append(min(900.0, max(10.0, rng.lognormvariate(math.log(75), 0.7))))
    return tuple(out)


def day_rate(hour: float) -> float:
    """Deployments per hour per allowed space at a time of day (UTC hours)."""
    if 1.75 <= hour < 3.5:
        return 5.0  # nightly batch, in its window
    if hour < 6.5 or hour >= 21:
        return 0.15  # stragglers
    if hour < 9:
        return 1.0 + 3.0 * (hour - 6.5) / 2.5  # ramp
    if hour < 10:
        return 22.0  # the 9 am burst
    if hour < 17:
        return 5.0
    return 5.0 * (21 - hour) / 4  # evening taper


def day_workload(rng: random.Random, allowed: Sequence[str], start_hour: float, hours: float) -> list[Deployment]:
    out: list[Deployment] = []
    for space in (*allowed, DENIED_SPACE):
        t = 0.0
        peak = 22.0
        while True:  # thinning of a Poisson process with the peak rate
            t += rng.expovariate(peak / 3600.0)
            if t >= hours * 3600:
                break
            rate = day_rate((start_hour + t / 3600.0) % 24)
            if rng.random() < rate / peak:
                long_share = 0.1 if 9 <= (start_hour + t / 3600) % 24 < 10 else 0.2
                out.append(Deployment(space, t, _steps(rng, long_share)))
    return sorted(out, key=lambda d: d.arrival)


def square_workload(
    rng: random.Random, allowed: Sequence[str], hours: float, period_minutes: float, high_steps: int
) -> list[Deployment]:
    """Half a period of ``high_steps`` concurrent 2-minute steps spread over the allowed spaces, half of none."""
    out: list[Deployment] = []
    half = period_minutes * 30.0
    t = 0.0
    while t < hours * 3600:
        if (t // half) % 2 == 0:  # high half: start high_steps / 2 steps a minute of 2 minutes each
            for k in range(max(1, high_steps // 2)):
                out.append(Deployment(allowed[k % len(allowed)], t + rng.uniform(0, 59), (120.0,)))
        t += 60.0
    return sorted(out, key=lambda d: d.arrival)


def demand_curve(deployments: Sequence[Deployment], allowed: set[str], end: float) -> list[tuple[float, int]]:
    """``[(t, concurrent steps from t on)]`` of the steps as planned in allowed spaces (failures ignored)."""
    events: list[tuple[float, int]] = []
    for d in deployments:
        if d.space not in allowed:
            continue
        t = d.arrival
        for duration in d.steps:
            events.append((t, 1))
            events.append((t + duration, -1))
            t += duration
    events.sort(key=lambda e: (e[0], e[1]))
    out, level = [(0.0, 0)], 0
    for t, delta in events:
        level += delta
        if t >= end:
            break
        if out[-1][0] == t:
            out[-1] = (t, level)
        else:
            out.append((t, level))
    return out


def curve_at(curve: Sequence[tuple[float, int]], t: float) -> int:
    lo, hi = 0, len(curve) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if curve[mid][0] <= t:
            lo = mid
        else:
            hi = mid - 1
    return curve[lo][1]


def lower_bound_hours(
    curve: Sequence[tuple[float, int]], end: float, per_worker: int, floor: Callable[[float], int] | None = None
) -> tuple[float, int]:
    """``(worker-hours, peak workers)`` of the perfect-knowledge fleet ``ceil(concurrent / per_worker)`` (raised to
    ``floor(t)`` when given, sampled each minute: the cost of the declared windows alone)."""
    total, peak = 0.0, 0
    for (t, level), nxt in zip(curve, [*curve[1:], (end, 0)], strict=True):
        workers = math.ceil(level / per_worker)
        peak = max(peak, workers)
        stop = min(nxt[0], end)
        if floor is None:
            total += workers * (stop - t)
            continue
        u = t
        while u < stop:
            step = min(stop, (u // 60 + 1) * 60) - u
            total += max(workers, floor(u)) * step
            u += step
    return total / 3600.0, peak


# ---------------------------------------------------------------------------------------------------- the world
@dataclass
class Instance:
    name: str
    uri: str
    thumbprint: str
    built_at: float
    records: dict[str, str] = field(default_factory=dict)  # space id -> worker id
    booted: bool = False
    draining: bool = False
    removed_at: float | None = None
    idle_since: datetime | None = None
    ready_seen: bool = False


@dataclass
class Result:
    name: str
    worker_hours: float = 0.0
    steps: int = 0
    steps_failed_in_window: int = 0
    steps_failed_out_of_window: int = 0
    steps_killed: int = 0
    scale_actions: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    direction_changes: list[float] = field(default_factory=list)
    lease_waits: list[float] = field(default_factory=list)
    load_per_worker: list[float] = field(default_factory=list)
    holds_bad_read: int = 0
    deletes_refused: int = 0
    denied_space_steps: int = 0
    denied_space_records: int = 0
    denied_space_demand: int = 0
    denied_space_tasks_max: int = 0
    series: list[dict[str, float]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def max_direction_changes_per_hour(self) -> int:
        times = sorted(self.direction_changes)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - 3600:
                j += 1
            best = max(best, i - j + 1)
        return best


class World:
    """The emulator's store and lease model on a virtual clock, our instances, and the workload."""

    def __init__(self, args: argparse.Namespace, policy: autoscale.ScalePolicy, start: datetime, name: str):
        self.args, self.policy, self.name = args, policy, name
        self.clock = VirtualClock(start)
        self.connected: set[tuple[str, str]] = set()
        self.store = Store(
            Options(health_check_delay_seconds=args.health_seconds, disabled_worker_leases=args.disabled_leases),
            scheduler=self.clock.schedule,
            is_connected=lambda uri, thumb: (uri_key(uri), thumb_key(thumb)) in self.connected,
        )
        spaces: list[dict[str, Any]] = [{"Name": n, "pools": [{"Name": POOL}]} for n in allowed_names(args)]
        spaces.append(
            {
                "Name": DENIED_SPACE,
                "pools": [{"Name": POOL}],
                "workers": [make_worker("sandbox-own-1", [POOL], HealthStatus="Healthy")],
            }
        )
        self.store.load({"disabled_worker_leases": args.disabled_leases, "spaces": spaces})
        self.model = LeaseModel(self.store, self.clock.schedule)
        self.access = access_policy.parse_access_policy(ACCESS)
        all_spaces = self.store.sorted_spaces()
        allowed, denied = access_policy.partition_spaces(self.access, all_spaces)
        self.allowed_ids = [s["Id"] for s in allowed]
        self.denied_ids = [s["Id"] for s in denied]
        self.space_id = {s["Name"]: s["Id"] for s in all_spaces}
        self.pool_id = {sid: self.store.pool_names[sid][POOL.lower()] for sid in self.space_id.values()}
        self.instances: dict[str, Instance] = {}
        self.record_owner: dict[str, str] = {}  # worker id -> instance name
        self.next_index = 1
        self.result = Result(name)

    # -- instances -------------------------------------------------------------------------------------------------
    def build(self, booted: bool = False) -> Instance:
        name = f"auto-{self.next_index}"
        self.next_index += 1
        uri, thumb = polling_endpoint(f"bench-autoscale/{name}")
        inst = Instance(name, uri, thumb, self.clock.now)
        self.instances[name] = inst
        if booted:  # up before the period starts: registered and health-checked already
            self._register(inst)
            for wid in inst.records.values():
                self.store.health_check(wid)
        else:
            self.clock.schedule(self.args.boot_seconds, lambda: self._register(inst))
        return inst

    def _register(self, inst: Instance) -> None:
        """The instance's Tentacle connects; the share creates its record in every allowed space (only those)."""
        if inst.removed_at is not None:
            return
        self.connected.add((uri_key(inst.uri) or "", thumb_key(inst.thumbprint)))
        for sid in self.allowed_ids:
            body = {
                "Name": inst.name,
                "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": inst.uri, "Thumbprint": inst.thumbprint},
                "WorkerPoolIds": [self.pool_id[sid]],
                "IsDisabled": False,
            }
            rec = self.store.create_worker(sid, body)
            inst.records[sid] = rec["Id"]
            self.record_owner[rec["Id"]] = inst.name
        inst.booted = True

    def _set_disabled(self, inst: Instance, disabled: bool) -> None:
        for sid, wid in inst.records.items():
            rec = self.store.workers[wid]
            self.store.update_worker(sid, rec, {**rec, "IsDisabled": disabled})
        inst.draining = disabled

    def _finish_drain(self, inst: Instance) -> bool:
        for sid, wid in list(inst.records.items()):
            rec = self.store.workers[wid]
            try:
                self.model.check_delete(rec)  # what DELETE …/workers/{id} does first: 400 while leased
            except ApiError:
                self.result.deletes_refused += 1
                return False
            self.store.delete_worker(sid, rec)
            del inst.records[sid]
        inst.removed_at = self.clock.now
        key = (uri_key(inst.uri) or "", thumb_key(inst.thumbprint))
        self.connected.discard(key)
        self.store.tentacle_disconnected(inst.uri, inst.thumbprint)
        del self.instances[inst.name]
        self.result.worker_hours += (inst.removed_at - inst.built_at) / 3600.0
        return True

    # -- workload --------------------------------------------------------------------------------------------------
    def schedule_workload(self, deployments: Sequence[Deployment]) -> None:
        for d in deployments:
            self.clock.at(d.arrival, lambda d=d: self._step(d, 0))

    def _step(self, d: Deployment, index: int) -> None:
        sid = self.space_id[d.space]
        task = self.model.start_step({"space": sid, "pool": POOL, "duration_seconds": d.steps[index]})
        if sid in self.denied_ids:
            self.result.denied_space_steps += 1
            return  # runs on the sandbox's own worker; nothing of ours
        self.result.steps += 1
        if task.outcome == "failed_no_worker":
            _, in_window, _ = autoscale.floor_at(self.policy, self.clock.dt())
            if in_window:
                self.result.steps_failed_in_window += 1
            else:
                self.result.steps_failed_out_of_window += 1
            return  # the deployment fails with its step
        lease = self.model.leases[task.lease_id] if task.lease_id else None
        if lease is not None and task.start_time is not None:
            self.result.lease_waits.append((lease.taken_at - task.start_time).total_seconds())
        if index + 1 < len(d.steps):
            self.clock.schedule(d.steps[index], lambda: self._next(d, index + 1, task))

    def _next(self, d: Deployment, index: int, previous: Any) -> None:
        if previous.outcome == "succeeded":
            self._step(d, index)

    # -- observation and view -------------------------------------------------------------------------------------
    def observe(self, ok: bool) -> autoscale.Observation:
        now = self.clock.dt()
        if not ok:
            return {"at": now, "ok": False, "leases": {}, "tasks": 0, "error": "503 Service Unavailable (injected)"}
        per_instance: dict[str, int] = {name: 0 for name in self.instances}
        for sid in self.allowed_ids:
            for lease in self.model.lease_records(sid):
                owner = self.record_owner.get(lease["WorkerId"])
                if owner in per_instance:
                    per_instance[owner] += 1
        for sid in self.denied_ids:  # what a scaler without the policy would have counted
            for lease in self.model.lease_records(sid):
                if lease["WorkerId"] in self.record_owner:
                    self.result.denied_space_demand += 1
        query = {"states": "Queued,Executing"}
        tasks, _ = self.model.query_tasks(self.allowed_ids, dict(query), [])
        denied_tasks, _ = self.model.query_tasks(self.denied_ids, dict(query), [])
        self.result.denied_space_tasks_max = max(self.result.denied_space_tasks_max, len(denied_tasks))
        return {"at": now, "ok": True, "leases": per_instance, "tasks": len(tasks), "error": ""}

    def view(self, obs: autoscale.Observation) -> list[autoscale.InstanceView]:
        now = self.clock.dt()
        out: list[autoscale.InstanceView] = []
        for inst in sorted(self.instances.values(), key=lambda i: i.name):
            healthy = inst.booted and all(
                self.store.workers[wid]["HealthStatus"] == "Healthy" for wid in inst.records.values()
            )
            leases = obs["leases"].get(inst.name, 0) if obs["ok"] else 0
            if healthy and not inst.ready_seen:
                inst.ready_seen, inst.idle_since = True, now
            if obs["ok"] and healthy:
                if leases:
                    inst.idle_since = None
                elif inst.idle_since is None:
                    inst.idle_since = now
            state: autoscale.InstanceState = "draining" if inst.draining else ("ready" if healthy else "booting")
            out.append(
                {
                    "name": inst.name,
                    "thumbprint": inst.thumbprint,
                    "state": state,
                    "leases": leases,
                    "idle_since": inst.idle_since,
                }  # fmt: skip
            )
        return out

    def running_steps(self) -> int:
        return sum(len(self.model.space_leases.get(sid, ())) for sid in self.allowed_ids)

    def enabled_ready(self) -> int:
        return sum(1 for i in self.instances.values() if i.booted and not i.draining)


# ---------------------------------------------------------------------------------------------------- runs
def _in_fault(args: argparse.Namespace, dt: datetime) -> bool:
    if not args.fault_window:
        return False
    start, _, end = args.fault_window.partition("-")
    t = dt.strftime("%H:%M")
    return start <= t < end


def run_autoscale(args, policy, deployments, start: datetime, end: float) -> Result:
    world = World(args, policy, start, "autoscale")
    for _ in range(autoscale.floor_at(policy, start)[0]):  # a period that starts in a window starts at its floor
        world.build(booted=True)
    world.schedule_workload(deployments)
    memory = autoscale.empty_memory()
    last_direction: str | None = None
    res = world.result
    with lease_clock(world.clock):
        t = 0.0
        while t < end:
            world.clock.run_until(t)
            now = world.clock.dt()
            obs = world.observe(ok=not _in_fault(args, now))
            fleet = world.view(obs)
            decision = autoscale.decide(policy, fleet, obs, memory, now)
            memory = json.loads(json.dumps(decision.memory))  # what the Variable would store
            world.clock.schedule(args.act_seconds, lambda d=decision: _apply(world, d))  # the DAG's task acts later
            if not obs["ok"]:
                res.holds_bad_read += 1
            if decision.action != "hold":
                res.actions[decision.action] = res.actions.get(decision.action, 0) + 1
                if decision.action in ("scale_out", "scale_in", "cancel_drain"):
                    res.scale_actions += 1
                if args.verbose:
                    res.log.append(f"{now:%H:%M} {autoscale.format_decision(decision)}")
            direction = decision.direction
            if direction is not None:
                if last_direction is not None and direction != last_direction:
                    res.direction_changes.append(t)
                last_direction = direction
            ready = world.enabled_ready()
            running = world.running_steps()
            if ready:
                res.load_per_worker.append(running / ready)
            res.series.append(
                {"t": t, "running": running, "fleet": len(world.instances), "ready": ready, "target": decision.target}
            )
            t += args.tick_seconds
        world.clock.run_until(end)
    for inst in world.instances.values():
        res.worker_hours += (end - inst.built_at) / 3600.0
    res.steps_killed = world.model.counters["killed"]
    res.denied_space_records = sum(
        1 for sid in world.denied_ids for wid in world.store.space_workers.get(sid, ()) if wid in world.record_owner
    )
    return res


def _apply(world: World, decision: autoscale.Decision) -> None:
    if decision.action == "scale_out":
        for _ in range(decision.count):
            world.build()
    elif decision.action == "scale_in" and decision.victim:
        world._set_disabled(world.instances[decision.victim], True)
    elif decision.action == "cancel_drain" and decision.victim:
        world._set_disabled(world.instances[decision.victim], False)
    elif decision.action == "finish_drain" and decision.victim:
        world._finish_drain(world.instances[decision.victim])


def run_fixed(args, policy, deployments, start: datetime, end: float, size: int) -> Result:
    world = World(args, policy, start, f"fixed fleet ({size})")
    for _ in range(size):
        world.build(booted=True)
    world.schedule_workload(deployments)
    with lease_clock(world.clock):
        world.clock.run_until(end)
    res = world.result
    res.worker_hours = size * end / 3600.0
    res.steps_killed = world.model.counters["killed"]
    return res


# ---------------------------------------------------------------------------------------------------- report
def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def report(args, auto: Result, fixed: Result, lower: float, peak: int, hours: float) -> dict[str, Any]:
    out = {
        "load": args.load,
        "hours": hours,
        "start": args.start,
        "tick_seconds": args.tick_seconds,
        "boot_seconds": args.boot_seconds,
        "disabled_leases": args.disabled_leases,
        "leases_per_worker": autoscale.parse_scale_policy(_policy_raw(args)).leases_per_worker,
        "steps": auto.steps,
        "steps_killed": auto.steps_killed,
        "steps_failed_no_worker_in_window": auto.steps_failed_in_window,
        "steps_failed_no_worker_out_of_window": auto.steps_failed_out_of_window,
        "worker_hours": round(auto.worker_hours, 2),
        "fixed_fleet_size": peak,
        "fixed_fleet_worker_hours": round(fixed.worker_hours, 2),
        "fixed_fleet_steps_failed_no_worker": fixed.steps_failed_in_window + fixed.steps_failed_out_of_window,
        "fixed_fleet_steps_killed": fixed.steps_killed,
        "lower_bound_worker_hours": round(lower, 2),
        "ratio_to_fixed": round(auto.worker_hours / fixed.worker_hours, 3) if fixed.worker_hours else None,
        "ratio_to_lower_bound": round(auto.worker_hours / lower, 3) if lower else None,
        "scale_actions": auto.scale_actions,
        "actions": dict(sorted(auto.actions.items())),
        "direction_changes": len(auto.direction_changes),
        "max_direction_changes_per_hour": auto.max_direction_changes_per_hour(),
        "lease_wait_p50_seconds": _pct(auto.lease_waits, 0.5),
        "lease_wait_p95_seconds": _pct(auto.lease_waits, 0.95),
        "leases_per_ready_worker_p95": round(_pct(auto.load_per_worker, 0.95), 2),
        "leases_per_ready_worker_max": round(max(auto.load_per_worker, default=0.0), 2),
        "ticks_held_on_failed_reads": auto.holds_bad_read,
        "deletes_refused": auto.deletes_refused,
        "denied_space_steps": auto.denied_space_steps,
        "denied_space_records": auto.denied_space_records,
        "denied_space_demand": auto.denied_space_demand,
        "denied_space_tasks_max": auto.denied_space_tasks_max,
    }
    out["bounds"] = bounds(out)
    return out


def bounds(r: dict[str, Any]) -> dict[str, bool]:
    """Issue 20's bounds. The worker-hour ones are for the synthetic day (``--load day``, 24 h), the direction
    change one for the square wave; the others hold for every run."""
    b = {
        "no_step_killed": r["steps_killed"] == 0,
        "no_step_failed_in_window": r["steps_failed_no_worker_in_window"] == 0,
        "denied_space_no_record_no_demand": r["denied_space_records"] == 0 and r["denied_space_demand"] == 0,
    }
    if r["load"] == "day" and r["hours"] >= 24:
        b["at_most_half_the_fixed_fleet"] = r["worker_hours"] <= 0.5 * r["fixed_fleet_worker_hours"]
        b["within_1_5x_the_lower_bound"] = r["worker_hours"] <= 1.5 * r["lower_bound_worker_hours"]
    if r["load"] == "square":
        b["at_most_2_direction_changes_per_hour"] = r["max_direction_changes_per_hour"] <= 2
    return b


def table(r: dict[str, Any], auto: Result, fixed: Result) -> str:
    head = (
        "| fleet | worker-hours | steps failed, no worker (in window / outside) | steps killed | scale actions "
        "| direction changes per hour (max) | step start → lease p50 / p95 |"
    )
    rows = [head, "|" + "---|" * 7]
    rows.append(
        f"| autoscale | {r['worker_hours']:.1f} | {r['steps_failed_no_worker_in_window']} / "
        f"{r['steps_failed_no_worker_out_of_window']} | {r['steps_killed']} | {r['scale_actions']} | "
        f"{r['max_direction_changes_per_hour']} | {r['lease_wait_p50_seconds']:.0f} s / "
        f"{r['lease_wait_p95_seconds']:.0f} s |"
    )
    rows.append(
        f"| fixed, sized for the peak ({r['fixed_fleet_size']}) | {r['fixed_fleet_worker_hours']:.1f} | "
        f"{fixed.steps_failed_in_window} / {fixed.steps_failed_out_of_window} | {fixed.steps_killed} | 0 | 0 | "
        f"{_pct(fixed.lease_waits, 0.5):.0f} s / {_pct(fixed.lease_waits, 0.95):.0f} s |"
    )
    rows.append(f"| lower bound (perfect knowledge) | {r['lower_bound_worker_hours']:.1f} | — | — | — | — | — |")
    rows.append(
        f"| lower bound raised to the windows' floors | {r['lower_bound_with_floor_worker_hours']:.1f} "
        "| — | — | — | — | — |"
    )
    return "\n".join(rows)


def plot(path: str, auto: Result, curve, per_worker: int, start: datetime, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [start + timedelta(seconds=p["t"]) for p in auto.series]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.step(xs, [p["fleet"] for p in auto.series], where="post", label="fleet (instances running)", color="tab:blue")
    ax.step(xs, [p["ready"] for p in auto.series], where="post", label="ready, enabled", color="tab:cyan", lw=0.8)
    lb = [math.ceil(curve_at(curve, p["t"]) / per_worker) for p in auto.series]
    ax.step(xs, lb, where="post", label=f"lower bound: ceil(steps / {per_worker})", color="tab:green", lw=0.8)
    ax.set_ylabel("workers")
    ax2 = ax.twinx()
    ax2.fill_between(xs, [p["running"] for p in auto.series], step="post", alpha=0.2, color="tab:orange")
    ax2.set_ylabel("running steps (demand)", color="tab:orange")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- main
def _policy_raw(args: argparse.Namespace) -> dict[str, Any]:
    raw = dict(DEFAULT_POLICY)
    if args.policy:
        raw.update(json.loads(args.policy))
    return raw


def allowed_names(args: argparse.Namespace) -> tuple[str, ...]:
    return SPACE_NAMES[: args.spaces]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", choices=("day", "square"), default="day")
    parser.add_argument("--start", default="00:00", help="time of day the period starts (HH:MM, UTC)")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--tick-seconds", type=float, default=120.0)
    parser.add_argument("--boot-seconds", type=float, default=180.0)
    parser.add_argument("--act-seconds", type=float, default=5.0, help="from a decision to its action")
    parser.add_argument("--health-seconds", type=float, default=10.0, help="the emulator's health-check delay")
    parser.add_argument("--disabled-leases", choices=("no_new_leases", "still_leased"), default="no_new_leases")
    parser.add_argument("--square-period-minutes", type=float, default=40.0)
    parser.add_argument("--square-steps", type=int, default=24, help="concurrent steps in the square wave's high half")
    parser.add_argument("--fault-window", default="14:00-14:12", help="HH:MM-HH:MM of failing reads ('' for none)")
    parser.add_argument("--policy", default="", help="JSON knobs merged over the default scale policy")
    parser.add_argument(
        "--spaces",
        type=int,
        default=6,
        choices=range(1, len(SPACE_NAMES) + 1),
        help="spaces in the policy (the denied space comes on top)",
    )
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", default="")
    parser.add_argument("--plot", default="")
    parser.add_argument("--check", action="store_true", help="exit 1 when a bound is missed")
    parser.add_argument("--verbose", action="store_true", help="print the scaler's log line of every action")
    args = parser.parse_args(argv)

    policy = autoscale.parse_scale_policy(_policy_raw(args))
    hh, mm = (int(x) for x in args.start.split(":"))
    start = DAY + timedelta(hours=hh, minutes=mm)
    end = args.hours * 3600.0
    rng = random.Random(args.seed)
    if args.load == "day":
        deployments = day_workload(rng, allowed_names(args), hh + mm / 60, args.hours)
    else:
        deployments = square_workload(
            rng, allowed_names(args), args.hours, args.square_period_minutes, args.square_steps
        )
    curve = demand_curve(deployments, set(allowed_names(args)), end)
    lower, peak = lower_bound_hours(curve, end, policy.leases_per_worker)
    windows_only = autoscale.ScalePolicy(**{**policy.__dict__, "warmup_minutes": 0.0})
    lower_floor, _ = lower_bound_hours(
        curve,
        end,
        policy.leases_per_worker,
        lambda t: autoscale.floor_at(windows_only, start + timedelta(seconds=t))[0],
    )

    auto = run_autoscale(args, policy, deployments, start, end)
    fixed = run_fixed(args, policy, deployments, start, end, max(1, peak))
    result = report(args, auto, fixed, lower, max(1, peak), args.hours)
    result["lower_bound_with_floor_worker_hours"] = round(lower_floor, 2)

    print(f"bench_autoscale: {args.load} load, {args.hours:g} h from {args.start} UTC, tick {args.tick_seconds:g} s, "
          f"boot {args.boot_seconds:g} s, leases_per_worker {policy.leases_per_worker}, "
          f"disabled workers: {args.disabled_leases}")  # fmt: skip
    print(f"{auto.steps} steps in allowed spaces; {auto.denied_space_steps} in the denied space {DENIED_SPACE!r}")
    print()
    print(table(result, auto, fixed))
    print()
    print(
        f"autoscale / fixed = {result['ratio_to_fixed']}, autoscale / lower bound = {result['ratio_to_lower_bound']}; "
        f"actions {result['actions']}; ticks held on failed reads {result['ticks_held_on_failed_reads']}; "
        f"deletes refused (a lease slipped in) {result['deletes_refused']}"
    )
    print(
        f"leases per ready worker p95 {result['leases_per_ready_worker_p95']}, "
        f"max {result['leases_per_ready_worker_max']}; denied space: {result['denied_space_records']} records of ours, "
        f"{result['denied_space_demand']} leases counted (up to {result['denied_space_tasks_max']} of its tasks ran "
        "at once, none counted)"
    )
    for line in auto.log:
        print(line)
    for name, ok in result["bounds"].items():
        print(f"bound {name}: {'met' if ok else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        title = f"autoscale_octopus_workers, simulated ({args.load} load): fleet and demand"
        plot(args.plot, auto, curve, policy.leases_per_worker, start, title)
        print(f"plot: {args.plot}")
    return 1 if args.check and not all(result["bounds"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
