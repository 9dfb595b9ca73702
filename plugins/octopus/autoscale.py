"""The scaler's decision rule: one pure function per tick (no I/O, no Airflow). See ``docs/autoscale.md``.

:func:`decide` takes the policy, the fleet as the caller saw it, one observation of Octopus, what the scaler
remembers from earlier ticks, and the time; it returns what to do now and the memory to keep. The caller (the
``autoscale_octopus_workers`` DAG, or ``bench/bench_autoscale.py``) does the I/O: it reads the leases and tasks,
acts (build, disable, re-enable, delete, remove), and stores the memory (JSON) in an Airflow Variable.

Why the rule is what it is (``demand-scaling.md`` §0, §1, §4):

* Octopus never makes a step wait for a worker: an empty pool fails the step at once. Leases are non-exclusive
  and the server gives a step the worker with the fewest leases, so saturation shows as *leases per worker*, not
  as a queue. Hence a floor (time windows) and **scale out at once**, counting instances still booting as
  capacity already coming (Jenkins' NoDelay strategy), so a burst is not answered twice.
* **Scale in one instance at a time**, once the fleet has had more instances than the target for ``idle_minutes``
  without a break (Buildkite's ``ScaleInIdlePeriod``, GitLab's ``idle_time``; a surplus of idle capacity, not one
  idle instance: Octopus gives each step the worker with the fewest leases, so under a steady load every worker
  gets some and none may stay idle for 15 minutes; compare gitlab-runner#37643, where a fleet with several
  jobs per instance never scaled in), and
  only ``scale_in_cooldown_minutes`` after any scale action (ARC's ``scaleDownDelaySecondsAfterScaleOut``). The
  victim is the ready instance without a lease that has been idle longest, never a busy one. The drain is disable,
  then two lease reads a tick apart that find none, then ``finish_drain`` (delete the records, remove the
  instance). Demand that returns during a drain re-enables the instance (``cancel_drain``) instead of building
  another.
* **Hysteresis**: a scale-in that reverses the direction of the last scale action waits ``reversal_minutes``
  (60) after the last reversal, so a square-wave load sees at most 2 direction changes in any hour. Scale-out is
  never delayed: a missing worker fails steps, a spare one costs minutes.
* **Hold on bad data** (Buildkite: metrics older than 2 min mean no action): a failed read (429, 5xx, timeout)
  or an observation older than ``stale_after_seconds`` (two ticks) holds everything — no scale-out on garbage, no
  scale-in, and a drain's count of empty reads starts again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any, Literal, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DAYS",
    "Action",
    "Decision",
    "DrainMemory",
    "InstanceState",
    "InstanceView",
    "Observation",
    "ScalePolicy",
    "ScalePolicyError",
    "ScalerMemory",
    "TimeWindow",
    "decide",
    "empty_memory",
    "floor_at",
    "format_decision",
    "load_memory",
    "open_windows",
    "parse_scale_policy",
]

InstanceState = Literal["booting", "ready", "draining", "disabled"]
Action = Literal["hold", "scale_out", "scale_in", "cancel_drain", "finish_drain"]
Direction = Literal["out", "in"]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: reads after the disable that must find the draining instance without a lease before its removal
DRAIN_EMPTY_READS = 2


class ScalePolicyError(ValueError):
    """A scale policy param that cannot be used; the message names the knob (and the window) at fault."""


@dataclass(frozen=True)
class TimeWindow:
    """A time-window policy: while it is open the fleet keeps at least ``min_size`` instances.

    ``days`` are the days the window *opens* on (``mon`` … ``sun``); ``start``/``end`` are local times in ``tz``;
    an ``end`` at or before ``start`` closes the next day (``22:00``–``06:00``: nights). A window with
    ``deployments`` true (the default) declares that deployments run then: the fleet is never 0 in it unless the
    policy's ``allow_zero_in_window``. ``deployments: false`` describes a quiet period (nights 0)."""

    name: str
    days: tuple[str, ...]
    start: time
    end: time
    tz: str = "UTC"
    min_size: int = 1
    deployments: bool = True

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.tz))
        t, today = local.time().replace(tzinfo=None), DAYS[local.weekday()]
        yesterday = DAYS[(local.weekday() - 1) % 7]
        if self.start < self.end:
            return today in self.days and self.start <= t < self.end
        # crosses midnight (or spans the whole day when start == end)
        return (today in self.days and t >= self.start) or (yesterday in self.days and t < self.end)

    def to_param(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "days": list(self.days),
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "tz": self.tz,
            "min_size": self.min_size,
            "deployments": self.deployments,
        }


@dataclass(frozen=True)
class ScalePolicy:
    """The scaler's knobs (defaults in ``docs/autoscale.md``, one table).

    ``leases_per_worker`` (default 4) is the number of concurrent leases one worker takes before another is wanted:
    ``demand-scaling.md`` §4 recommends a target of 4 concurrent leases per VM, tied to its vCPUs and polling
    connections. Octopus itself never refuses a fifth lease (leases are non-exclusive), so this is a comfort level,
    not a hard capacity: a burst above it slows steps down, it does not fail them."""

    min_size: int = 0
    max_size: int = 10
    idle_minutes: float = 15.0
    scale_in_cooldown_minutes: float = 10.0
    leases_per_worker: int = 4
    windows: tuple[TimeWindow, ...] = ()
    allow_zero_in_window: bool = False
    stale_after_seconds: float = 240.0
    reversal_minutes: float = 60.0
    warmup_minutes: float = 10.0

    def to_param(self) -> dict[str, Any]:
        return {
            "min_size": self.min_size,
            "max_size": self.max_size,
            "idle_minutes": self.idle_minutes,
            "scale_in_cooldown_minutes": self.scale_in_cooldown_minutes,
            "leases_per_worker": self.leases_per_worker,
            "windows": [w.to_param() for w in self.windows],
            "allow_zero_in_window": self.allow_zero_in_window,
            "stale_after_seconds": self.stale_after_seconds,
            "reversal_minutes": self.reversal_minutes,
            "warmup_minutes": self.warmup_minutes,
        }


class InstanceView(TypedDict):
    """One instance of the fleet as the caller sees it this tick.

    ``state``: ``booting`` (built, not yet registered and healthy in every allowed space: capacity coming),
    ``ready``, ``draining`` (disabled by the scaler, waiting for its leases to end) or ``disabled`` (disabled by
    someone else: neither capacity nor a victim). ``leases``: active, non-stale leases on any of its records in
    allowed spaces. ``idle_since``: when its last lease ended, or when it became ready; ``None`` while busy or
    unknown (an instance with an unknown idle time is never a victim)."""

    name: str
    thumbprint: str
    state: InstanceState
    leases: int
    idle_since: datetime | None


class Observation(TypedDict):
    """One read of Octopus. ``ok`` is false when any read failed (429, 5xx, timeout): then nothing else is used.
    ``leases``: active leases per instance name (this read; it wins over ``InstanceView.leases``). ``tasks``:
    queued + executing server tasks in allowed spaces, the leading signal. ``error``: why the read failed."""

    at: datetime
    ok: bool
    leases: Mapping[str, int]
    tasks: int
    error: str


class DrainMemory(TypedDict):
    instance: str
    since: str
    empty_reads: int


class ScalerMemory(TypedDict):
    """What persists between ticks (JSON: times are ISO 8601 strings in UTC)."""

    last_scale_out_at: str | None
    last_scale_in_at: str | None
    last_direction: Direction | None
    last_reversal_at: str | None
    surplus_since: str | None
    draining: DrainMemory | None


@dataclass(frozen=True)
class Decision:
    """What to do this tick. ``demand``: workers the demand wants (``ceil(max(leases, tasks) / leases_per_worker)``);
    ``target``: the size the rule wants (demand raised to the floor, capped at ``max_size``); ``active``: ready +
    booting instances; ``count``: instances to build (``scale_out``) or 1; ``victim``: the instance to disable
    (``scale_in``), re-enable (``cancel_drain``) or delete and remove (``finish_drain``)."""

    action: Action
    demand: int
    target: int
    count: int
    victim: str | None
    reason: str
    memory: ScalerMemory
    active: int = 0
    floor: int = 0
    in_window: bool = False
    leases: int = 0
    tasks: int = 0
    windows: tuple[str, ...] = field(default=())

    @property
    def direction(self) -> Direction | None:
        """``out`` for actions that add capacity, ``in`` for the one that takes it away, else ``None``."""
        return {"scale_out": "out", "cancel_drain": "out", "scale_in": "in"}.get(self.action)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------- parsing
def _number(raw: Mapping[str, Any], key: str, default: float, *, minimum: float, integer: bool, where: str) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
        kind = "a whole number" if integer else "a number"
        raise ScalePolicyError(f"{where}{key} must be {kind} >= {minimum:g}, not {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ScalePolicyError(f"{where}{key} must be >= {minimum:g}, not {value!r}")
    return int(value) if integer else float(value)


def _clock(value: Any, key: str, where: str) -> time:
    if isinstance(value, str):
        try:
            hh, mm = value.strip().split(":")
            if len(mm) == 2 and hh.isdigit() and mm.isdigit():
                if value.strip() == "24:00":
                    return time(0, 0)
                return time(int(hh), int(mm))
        except ValueError:
            pass
    raise ScalePolicyError(f"{where}{key} must be a local time 'HH:MM' (00:00-23:59, or 24:00), not {value!r}")


_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(text: str) -> str | None:
    """``mon``, ``Monday`` … as the three-letter day, or ``None``."""
    text = text.strip().lower()
    return next((d for d, full in zip(DAYS, _DAY_NAMES, strict=True) if len(text) >= 3 and full.startswith(text)), None)


def _days(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ScalePolicyError(f"{where}days must be a non-empty list of days (mon … sun, or ranges like mon-fri)")
    out: set[str] = set()
    for item in value:
        first, _, last = item.partition("-") if isinstance(item, str) else ("", "", "")
        i, j = _day(first), _day(last) if last else _day(first)
        if i is None or j is None:
            raise ScalePolicyError(f"{where}days: {item!r} is not a day (mon, tue, … sun) or a range like mon-fri")
        a, b = DAYS.index(i), DAYS.index(j)
        out.update(DAYS[k % 7] for k in range(a, (b if b >= a else b + 7) + 1))
    return tuple(d for d in DAYS if d in out)


def _window(raw: Any, index: int, max_size: int) -> TimeWindow:
    if not isinstance(raw, Mapping):
        raise ScalePolicyError(f"windows[{index}] must be an object with days, start, end, tz, min_size")
    name = raw.get("name") or f"window {index + 1}"
    where = f"windows[{index}] ({name}): "
    unknown = sorted(str(k) for k in raw if k not in ("name", "days", "start", "end", "tz", "min_size", "deployments"))
    if unknown:
        raise ScalePolicyError(
            f"{where}unknown key(s) {', '.join(map(repr, unknown))}; "
            "the keys are name, days, start, end, tz, min_size, deployments"
        )
    tz = raw.get("tz", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise ScalePolicyError(f"{where}tz {tz!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)") from None
    deployments = raw.get("deployments", True)
    if not isinstance(deployments, bool):
        raise ScalePolicyError(f"{where}deployments must be true or false, not {deployments!r}")
    min_size = _number(raw, "min_size", 1 if deployments else 0, minimum=0, integer=True, where=where)
    if min_size > max_size:
        raise ScalePolicyError(f"{where}min_size {min_size} is above the policy's max_size {max_size}")
    for key in ("start", "end"):
        if key not in raw:
            raise ScalePolicyError(f"{where}{key} is required ('HH:MM')")
    return TimeWindow(
        name=str(name),
        days=_days(raw.get("days", list(DAYS)), where),
        start=_clock(raw["start"], "start", where),
        end=_clock(raw["end"], "end", where),
        tz=str(tz),
        min_size=min_size,
        deployments=deployments,
    )


_POLICY_KEYS = tuple(ScalePolicy().to_param())


def parse_scale_policy(raw: Mapping[str, Any] | ScalePolicy | None) -> ScalePolicy:
    """The policy from its param (a JSON object); missing knobs take their defaults. Raises
    :class:`ScalePolicyError` naming the knob, and for a window its index and name."""
    if isinstance(raw, ScalePolicy):
        return raw
    if raw is None:
        return ScalePolicy()
    if not isinstance(raw, Mapping):
        raise ScalePolicyError(f"the scale policy must be an object of knobs, not {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _POLICY_KEYS)
    if unknown:
        raise ScalePolicyError(
            f"scale policy: unknown knob(s) {', '.join(map(repr, unknown))}; the knobs are {', '.join(_POLICY_KEYS)}"
        )
    d = ScalePolicy()
    min_size = _number(raw, "min_size", d.min_size, minimum=0, integer=True, where="")
    max_size = _number(raw, "max_size", d.max_size, minimum=1, integer=True, where="")
    if min_size > max_size:
        raise ScalePolicyError(f"min_size {min_size} is above max_size {max_size}")
    windows_raw = raw.get("windows") or []
    if not isinstance(windows_raw, (list, tuple)):
        raise ScalePolicyError("windows must be a list of time-window objects")
    allow_zero = raw.get("allow_zero_in_window", d.allow_zero_in_window)
    if not isinstance(allow_zero, bool):
        raise ScalePolicyError(f"allow_zero_in_window must be true or false, not {allow_zero!r}")
    return ScalePolicy(
        min_size=min_size,
        max_size=max_size,
        idle_minutes=_number(raw, "idle_minutes", d.idle_minutes, minimum=0, integer=False, where=""),
        scale_in_cooldown_minutes=_number(
            raw, "scale_in_cooldown_minutes", d.scale_in_cooldown_minutes, minimum=0, integer=False, where=""
        ),
        leases_per_worker=_number(raw, "leases_per_worker", d.leases_per_worker, minimum=1, integer=True, where=""),
        windows=tuple(_window(w, i, max_size) for i, w in enumerate(windows_raw)),
        allow_zero_in_window=allow_zero,
        stale_after_seconds=_number(
            raw, "stale_after_seconds", d.stale_after_seconds, minimum=1, integer=False, where=""
        ),
        reversal_minutes=_number(raw, "reversal_minutes", d.reversal_minutes, minimum=0, integer=False, where=""),
        warmup_minutes=_number(raw, "warmup_minutes", d.warmup_minutes, minimum=0, integer=False, where=""),
    )


# ---------------------------------------------------------------------------------------------------- memory
def empty_memory() -> ScalerMemory:
    return {
        "last_scale_out_at": None,
        "last_scale_in_at": None,
        "last_direction": None,
        "last_reversal_at": None,
        "surplus_since": None,
        "draining": None,
    }


def _iso(dt: datetime) -> str:
    return _utc(dt).isoformat()


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: the scaler needs aware times (UTC)")
    return dt.astimezone(timezone.utc)


def _when(value: str | None) -> datetime | None:
    return _utc(datetime.fromisoformat(value)) if value else None


def load_memory(raw: Any) -> ScalerMemory:
    """Memory from its stored JSON; ``None``/``{}`` is a fresh scaler. Unreadable memory raises ``ValueError``
    naming the key (the caller decides; losing it only costs a cooldown, never a step)."""
    memory = empty_memory()
    if raw in (None, "", {}):
        return memory
    if not isinstance(raw, Mapping):
        raise ValueError(f"scaler memory must be a JSON object, not {type(raw).__name__}")
    for key in ("last_scale_out_at", "last_scale_in_at", "last_reversal_at", "surplus_since"):
        value = raw.get(key)
        if value is not None:
            try:
                _when(value)
            except (TypeError, ValueError):
                raise ValueError(f"scaler memory: {key} must be an ISO 8601 time with a zone, not {value!r}") from None
        memory[key] = value  # type: ignore[literal-required]
    direction = raw.get("last_direction")
    if direction not in (None, "out", "in"):
        raise ValueError(f"scaler memory: last_direction must be 'out', 'in' or null, not {direction!r}")
    memory["last_direction"] = direction
    drain = raw.get("draining")
    if drain is not None:
        if not isinstance(drain, Mapping) or not isinstance(drain.get("instance"), str):
            raise ValueError(f"scaler memory: draining must be null or {{instance, since, empty_reads}}, not {drain!r}")
        try:
            _when(drain.get("since"))
        except (TypeError, ValueError):
            raise ValueError(
                f"scaler memory: draining.since must be an ISO 8601 time, not {drain.get('since')!r}"
            ) from None
        reads = drain.get("empty_reads", 0)
        if isinstance(reads, bool) or not isinstance(reads, int) or reads < 0:
            raise ValueError(f"scaler memory: draining.empty_reads must be a whole number >= 0, not {reads!r}")
        memory["draining"] = {"instance": drain["instance"], "since": drain["since"], "empty_reads": reads}
    return memory


# ---------------------------------------------------------------------------------------------------- windows
def open_windows(policy: ScalePolicy, now: datetime) -> list[TimeWindow]:
    """The policy's windows open at ``now``, or opening within ``warmup_minutes`` (their floor is built ahead, so
    instances have booted when the window opens), in policy order."""
    ahead = now + timedelta(minutes=policy.warmup_minutes)
    return [w for w in policy.windows if w.is_open(now) or w.is_open(ahead)]


def floor_at(policy: ScalePolicy, now: datetime) -> tuple[int, bool, tuple[str, ...]]:
    """``(floor, in_window, names)``: the least size at ``now``, whether a window that declares deployments is open
    at ``now``, and the names of the windows that set the floor (open, or opening within ``warmup_minutes``).
    Those windows replace ``min_size`` by the largest of their ``min_size``; while a deployment window is open or
    about to open the floor is at least 1 unless ``allow_zero_in_window``; never above ``max_size``."""
    windows = open_windows(policy, now)
    in_window = any(w.deployments and w.is_open(now) for w in windows)
    floor = max(w.min_size for w in windows) if windows else policy.min_size
    if any(w.deployments for w in windows) and not policy.allow_zero_in_window:
        floor = max(floor, 1)
    return min(floor, policy.max_size), in_window, tuple(w.name for w in windows)


# ---------------------------------------------------------------------------------------------------- the rule
def _since(now: datetime, then: str | None) -> float:
    """Minutes from ``then`` to ``now``; infinite when never."""
    when = _when(then)
    return math.inf if when is None else (now - when).total_seconds() / 60.0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def decide(
    policy: ScalePolicy,
    fleet: Sequence[InstanceView],
    observation: Observation,
    memory: ScalerMemory,
    now: datetime,
) -> Decision:
    """One tick of the rule (documented in the module docstring and ``docs/autoscale.md``). Pure: the same inputs
    give the same decision; the returned ``memory`` is what to store, whatever the caller then manages to do (an
    action that fails is simply decided again next tick: every action is idempotent on the caller's side)."""
    now = _utc(now)
    mem: ScalerMemory = {**empty_memory(), **memory}  # type: ignore[typeddict-item]
    if mem["draining"] is not None:
        mem["draining"] = dict(mem["draining"])  # type: ignore[assignment]
    floor, in_window, window_names = floor_at(policy, now)
    by_name = {i["name"]: i for i in fleet}

    def result(
        action: Action,
        reason: str,
        *,
        demand: int = 0,
        target: int = 0,
        count: int = 0,
        victim: str | None = None,
        active: int = 0,
        leases: int = 0,
        tasks: int = 0,
    ) -> Decision:
        return Decision(
            action, demand, target, count, victim, reason, mem, active, floor, in_window, leases, tasks, window_names
        )

    # The drain in progress: the remembered one while its instance is still ours, else any instance the caller
    # reports draining (a scaler that lost its memory between the disable and the removal resumes the drain).
    drain = mem["draining"]
    if drain is not None and drain["instance"] not in by_name:
        drain = mem["draining"] = None  # removed: the drain is over
    if drain is None:
        adopted = sorted(i["name"] for i in fleet if i["state"] == "draining")
        if adopted:
            drain = mem["draining"] = {"instance": adopted[0], "since": _iso(now), "empty_reads": 0}
    active_views = [i for i in fleet if i["state"] in ("ready", "booting")]
    active = len(active_views)

    # Hold on bad data: never scale on garbage, and a failed read breaks a drain's run of empty reads.
    if not observation["ok"] or _age(observation, now) > policy.stale_after_seconds:
        mem["surplus_since"] = None
        if drain is not None:
            drain["empty_reads"] = 0
        if not observation["ok"]:
            why = f"the Octopus read failed ({observation.get('error') or 'no detail'})"
        else:
            why = (
                f"the observation is {_age(observation, now):.0f} s old "
                f"(more than stale_after_seconds {policy.stale_after_seconds:g})"
            )
        return result("hold", f"hold: {why}; nothing is scaled until a fresh read succeeds", active=active)

    lease_of = {i["name"]: int(observation["leases"].get(i["name"], i["leases"])) for i in fleet}
    leases = sum(lease_of.values())
    tasks = max(0, int(observation["tasks"]))
    demand = math.ceil(max(leases, tasks) / policy.leases_per_worker)
    target = min(max(demand, floor), policy.max_size)
    # The surplus clock: how long the fleet has had more instances than the target, continuously.
    if target < active:
        mem["surplus_since"] = mem["surplus_since"] or _iso(now)
    else:
        mem["surplus_since"] = None
    common = {"demand": demand, "target": target, "active": active, "leases": leases, "tasks": tasks}
    signal = (
        f"{_plural(leases, 'lease')} and {_plural(tasks, 'queued or running task')} want {_plural(demand, 'worker')}"
    )
    floor_text = f"the floor is {floor}" + (f" ({', '.join(window_names)})" if window_names else "")

    def moved(direction: Direction) -> None:
        stamp = _iso(now)
        if mem["last_direction"] != direction:
            mem["last_reversal_at"] = stamp
        mem["last_direction"] = direction
        mem["last_scale_out_at" if direction == "out" else "last_scale_in_at"] = stamp  # type: ignore[literal-required]

    # Demand back during a drain: re-enable the draining instance instead of building one.
    if drain is not None and target > active:
        victim = drain["instance"]
        mem["draining"] = None
        moved("out")
        return result(
            "cancel_drain",
            f"{signal}, {floor_text}: target {target} > {active} active, so {victim} is re-enabled "
            "instead of building another",
            count=1,
            victim=victim,
            **common,
        )
    if target > active:
        count = target - active
        booting = sum(1 for i in active_views if i["state"] == "booting")
        moved("out")
        coming = f" ({booting} still booting count as capacity)" if booting else ""
        return result(
            "scale_out",
            f"{signal}, {floor_text}: target {target} > {active} active{coming}, so {_plural(count, 'instance')} "
            "are built now",
            count=count,
            **common,
        )

    if drain is not None:
        victim = drain["instance"]
        held = lease_of.get(victim, 0)
        drain["empty_reads"] = 0 if held else drain["empty_reads"] + 1
        if drain["empty_reads"] >= DRAIN_EMPTY_READS:
            return result(
                "finish_drain",
                f"{victim} is disabled and {DRAIN_EMPTY_READS} reads a tick apart found no lease on it: its records "
                "are deleted and the instance removed",
                count=1,
                victim=victim,
                **common,
            )
        left = (
            f"still holds {_plural(held, 'lease')}"
            if held
            else f"holds no lease ({drain['empty_reads']} of {DRAIN_EMPTY_READS} reads)"
        )
        return result("hold", f"{signal}; draining {victim}, which {left}; one drain at a time", **common)

    if target == active:
        return result("hold", f"{signal}, {floor_text}: target {target} = {active} active", **common)

    # target < active: scale in one instance, if the cooldown, the hysteresis and the idle period allow it.
    surplus = f"{signal}, {floor_text}: target {target} < {active} active"
    since_action = min(_since(now, mem["last_scale_out_at"]), _since(now, mem["last_scale_in_at"]))
    if since_action < policy.scale_in_cooldown_minutes:
        return result(
            "hold",
            f"{surplus}, but the last scale action was {since_action:.0f} min ago "
            f"(scale_in_cooldown_minutes {policy.scale_in_cooldown_minutes:g})",
            **common,
        )
    since_reversal = _since(now, mem["last_reversal_at"])
    if mem["last_direction"] == "out" and since_reversal < policy.reversal_minutes:
        return result(
            "hold",
            f"{surplus}, but scaling in now would reverse the scale-out {since_reversal:.0f} min ago "
            f"(reversal_minutes {policy.reversal_minutes:g})",
            **common,
        )
    surplus_for = _since(now, mem["surplus_since"])
    if surplus_for < policy.idle_minutes:
        return result(
            "hold",
            f"{surplus}, for {surplus_for:.0f} min so far (idle_minutes {policy.idle_minutes:g})",
            **common,
        )
    idle_for: dict[str, float] = {}
    for inst in active_views:
        if inst["state"] != "ready" or lease_of[inst["name"]] or inst["idle_since"] is None:
            continue
        idle_for[inst["name"]] = (now - _utc(inst["idle_since"])).total_seconds() / 60.0
    ripe = list(idle_for)
    if not ripe:
        return result("hold", f"{surplus}, but every ready instance holds a lease (never a busy victim)", **common)
    victim = min(ripe, key=lambda n: (-idle_for[n], n))
    mem["draining"] = {"instance": victim, "since": _iso(now), "empty_reads": 0}
    moved("in")
    return result(
        "scale_in",
        f"{surplus}: {victim}, idle {idle_for[victim]:.0f} min (the longest), is disabled to drain",
        count=1,
        victim=victim,
        **common,
    )


def _age(observation: Observation, now: datetime) -> float:
    """Seconds since the observation was read (a read from the future counts as its distance, so clock skew beyond
    the threshold holds too)."""
    return abs((now - _utc(observation["at"])).total_seconds())


def format_decision(decision: Decision) -> str:
    """The one log line per tick: demand, target, action and why."""
    victim = f" {decision.victim}" if decision.victim else ""
    count = f" +{decision.count}" if decision.action == "scale_out" else ""
    return (
        f"autoscale: demand={decision.demand} target={decision.target} active={decision.active} "
        f"floor={decision.floor} action={decision.action}{count}{victim} — {decision.reason}"
    )
