"""Table-driven tests of the scaler's decision rule (octopus.autoscale.decide): each knob, each hold condition,
the drain, the memory, and the square-wave hysteresis bound."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from octopus.autoscale import (
    Decision,
    ScalePolicy,
    ScalePolicyError,
    decide,
    empty_memory,
    floor_at,
    format_decision,
    load_memory,
    parse_scale_policy,
)

UTC = timezone.utc
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # a Monday
SATURDAY = datetime(2026, 12, 12, 12, 0, tzinfo=UTC)
BUSINESS = {"name": "business", "days": ["mon-fri"], "start": "07:00", "end": "19:00", "min_size": 2}


def inst(name, state="ready", leases=0, idle=60.0, now=NOON):
    """An instance; ``idle`` in minutes before ``now`` (``None``: unknown / busy)."""
    return {
        "name": name,
        "thumbprint": name.upper().ljust(40, "0"),
        "state": state,
        "leases": leases,
        "idle_since": None if idle is None else now - timedelta(minutes=idle),
    }


def obs(fleet=(), *, leases=None, tasks=0, ok=True, age=0.0, error="", now=NOON):
    per = {i["name"]: i["leases"] for i in fleet}
    per.update(leases or {})
    return {"at": now - timedelta(seconds=age), "ok": ok, "leases": per, "tasks": tasks, "error": error}


def mem(now=NOON, **minutes_ago):
    """Memory with times given as minutes before ``now``; ``draining=(name, empty_reads)``."""
    out = empty_memory()
    for key, value in minutes_ago.items():
        if key == "draining":
            name, reads = value
            out["draining"] = {
                "instance": name,
                "since": (now - timedelta(minutes=5)).isoformat(),
                "empty_reads": reads,
            }
        elif key == "last_direction":
            out["last_direction"] = value
        else:
            out[key] = None if value is None else (now - timedelta(minutes=value)).isoformat()
    return out


def run(policy=None, fleet=(), observation=None, memory=None, now=NOON) -> Decision:
    policy = parse_scale_policy(policy or {})
    observation = observation if observation is not None else obs(fleet, now=now)
    decision = decide(policy, list(fleet), observation, memory or empty_memory(), now)
    json.dumps(decision.memory)  # always storable in a Variable
    return decision


# A fleet above its target for long enough, cooldown and hysteresis clear: a scale-in is due.
RIPE = {"surplus_since": 30, "last_scale_out_at": 120, "last_reversal_at": 120, "last_direction": "out"}


@pytest.mark.parametrize(
    ("case", "policy", "fleet", "extra", "memory", "action", "count", "victim", "target", "reason"),
    [
        # --- scale out at once
        ("leases over capacity", {}, [inst("w1", leases=9)], {}, {}, "scale_out", 2, None, 3, "2 instances are built"),
        ("from zero on a queued task", {}, [], {"tasks": 1}, {}, "scale_out", 1, None, 1, "1 queued or running task"),
        ("tasks lead leases", {}, [inst("w1", leases=2)], {"tasks": 9}, {}, "scale_out", 2, None, 3, ""),
        ("leases_per_worker", {"leases_per_worker": 2}, [inst("w1", leases=9)], {}, {}, "scale_out", 4, None, 5, ""),
        ("max_size caps", {"max_size": 4}, [inst("w1", leases=40)], {}, {}, "scale_out", 3, None, 4, "target 4"),
        ("min_size floor", {"min_size": 2}, [], {}, {}, "scale_out", 2, None, 2, "the floor is 2"),
        (
            "booting counts as capacity coming",
            {},
            [inst("w1", leases=8), inst("w2", state="booting", idle=None)],
            {},
            {},
            "hold",
            0,
            None,
            2,
            "target 2 = 2 active",
        ),
        (
            "scale out is never delayed by the cooldown",
            {},
            [inst("w1", leases=8)],
            {},
            {"last_scale_in_at": 1, "last_direction": "in", "last_reversal_at": 1},
            "scale_out",
            1,
            None,
            2,
            "",
        ),
        (
            "a disabled instance is no capacity",
            {"min_size": 1},
            [inst("w1", state="disabled")],
            {},
            {},
            "scale_out",
            1,
            None,
            1,
            "",
        ),
        # --- time windows
        ("window floor", {"windows": [BUSINESS]}, [], {}, {}, "scale_out", 2, None, 2, "the floor is 2 (business)"),
        (
            "deployment window never 0",
            {"windows": [{**BUSINESS, "min_size": 0}]},
            [],
            {},
            {},
            "scale_out",
            1,
            None,
            1,
            "the floor is 1",
        ),
        (
            "allow_zero_in_window",
            {"windows": [{**BUSINESS, "min_size": 0}], "allow_zero_in_window": True},
            [],
            {},
            {},
            "hold",
            0,
            None,
            0,
            "target 0 = 0 active",
        ),
        (
            "window floor capped by max_size",
            {"windows": [{**BUSINESS, "min_size": 3}], "max_size": 3},
            [inst(f"w{i}") for i in range(3)],
            {},
            {},
            "hold",
            0,
            None,
            3,
            "",
        ),
        # --- holds on bad data
        (
            "failed read",
            {},
            [inst("w1", leases=40)],
            {"ok": False, "error": "429 Too Many Requests"},
            {},
            "hold",
            0,
            None,
            0,
            "the Octopus read failed (429 Too Many Requests)",
        ),
        (
            "failed read never scales in",
            {},
            [inst("w1"), inst("w2")],
            {"ok": False, "error": "503"},
            RIPE,
            "hold",
            0,
            None,
            0,
            "nothing is scaled",
        ),
        (
            "stale observation",
            {"stale_after_seconds": 240},
            [inst("w1", leases=40)],
            {"age": 300},
            {},
            "hold",
            0,
            None,
            0,
            "the observation is 300 s old",
        ),
        (
            "observation from the future",
            {"stale_after_seconds": 240},
            [inst("w1", leases=40)],
            {"age": -600},
            {},
            "hold",
            0,
            None,
            0,
            "600 s old",
        ),
        (
            "fresh enough",
            {"stale_after_seconds": 240},
            [inst("w1", leases=40)],
            {"age": 200},
            {},
            "scale_out",
            9,
            None,
            10,
            "",
        ),
        # --- scale in
        (
            "scale in the longest idle",
            {},
            [inst("w1", idle=20), inst("w2", idle=45), inst("w3", idle=45, leases=0)],
            {},
            RIPE,
            "scale_in",
            1,
            "w2",
            0,
            "w2, idle 45 min (the longest), is disabled to drain",
        ),
        (
            "never a busy victim",
            {},
            [inst("w1", leases=1, idle=None), inst("w2", leases=1, idle=None)],
            {},
            RIPE,
            "hold",
            0,
            None,
            1,
            "every ready instance holds a lease",
        ),
        (
            "the observation's leases win",
            {},
            [inst("w1", idle=90), inst("w2", idle=10)],
            {"leases": {"w1": 1}},
            RIPE,
            "scale_in",
            1,
            "w2",
            1,
            "",
        ),
        (
            "a booting instance is never a victim",
            {},
            [inst("w1", state="booting", idle=None)],
            {},
            RIPE,
            "hold",
            0,
            None,
            0,
            "every ready instance holds a lease",
        ),
        (
            "cooldown after any scale action",
            {"scale_in_cooldown_minutes": 10},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "last_scale_in_at": 4, "last_direction": "in"},
            "hold",
            0,
            None,
            0,
            "the last scale action was 4 min ago (scale_in_cooldown_minutes 10)",
        ),
        (
            "cooldown knob",
            {"scale_in_cooldown_minutes": 3},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "last_scale_in_at": 4, "last_direction": "in"},
            "scale_in",
            1,
            "w1",
            0,
            "",
        ),
        (
            "idle period: surplus too recent",
            {"idle_minutes": 15},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "surplus_since": 10},
            "hold",
            0,
            None,
            0,
            "for 10 min so far (idle_minutes 15)",
        ),
        (
            "idle_minutes knob",
            {"idle_minutes": 5},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "surplus_since": 10},
            "scale_in",
            1,
            "w1",
            0,
            "",
        ),
        (
            "a new surplus starts its clock",
            {},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "surplus_since": None},
            "hold",
            0,
            None,
            0,
            "for 0 min so far",
        ),
        (
            "hysteresis: no reversal within reversal_minutes",
            {"reversal_minutes": 60},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "last_reversal_at": 30, "last_scale_out_at": 30},
            "hold",
            0,
            None,
            0,
            "would reverse the scale-out 30 min ago (reversal_minutes 60)",
        ),
        (
            "reversal_minutes knob",
            {"reversal_minutes": 20},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "last_reversal_at": 30, "last_scale_out_at": 30},
            "scale_in",
            1,
            "w1",
            0,
            "",
        ),
        (
            "scale-ins in a row are no reversal",
            {"reversal_minutes": 60},
            [inst("w1"), inst("w2")],
            {},
            {**RIPE, "last_direction": "in", "last_reversal_at": 20, "last_scale_in_at": 20},
            "scale_in",
            1,
            "w1",
            0,
            "",
        ),
        (
            "the window's floor stops the scale in",
            {"windows": [BUSINESS]},
            [inst("w1"), inst("w2")],
            {},
            RIPE,
            "hold",
            0,
            None,
            2,
            "target 2 = 2 active",
        ),
        # --- the drain
        (
            "one drain at a time",
            {},
            [inst("w1"), inst("w2"), inst("w3", state="draining", leases=2)],
            {},
            {**RIPE, "draining": ("w3", 0)},
            "hold",
            0,
            None,
            1,
            "draining w3, which still holds 2 leases; one drain at a time",
        ),
        (
            "first empty read",
            {},
            [inst("w1", leases=1), inst("w3", state="draining")],
            {},
            {**RIPE, "draining": ("w3", 0)},
            "hold",
            0,
            None,
            1,
            "holds no lease (1 of 2 reads)",
        ),
        (
            "second empty read finishes",
            {},
            [inst("w1", leases=1), inst("w3", state="draining")],
            {},
            {**RIPE, "draining": ("w3", 1)},
            "finish_drain",
            1,
            "w3",
            1,
            "2 reads a tick apart found no lease",
        ),
        (
            "demand back during a drain re-enables",
            {},
            [inst("w1", leases=4), inst("w3", state="draining", leases=1)],
            {},
            {**RIPE, "draining": ("w3", 0)},
            "cancel_drain",
            1,
            "w3",
            2,
            "w3 is re-enabled instead of building another",
        ),
        (
            "a drain lost from memory is resumed",
            {},
            [inst("w1", leases=1), inst("w3", state="draining")],
            {},
            {},
            "hold",
            0,
            None,
            1,
            "draining w3",
        ),
    ],
)
def test_rule(case, policy, fleet, extra, memory, action, count, victim, target, reason):
    observation = obs(fleet, **extra)
    decision = run(policy, fleet, observation, mem(**memory))
    assert (decision.action, decision.count, decision.victim) == (action, count, victim), decision.reason
    if action != "hold" or "ok" not in extra:
        assert decision.target == target, decision.reason
    assert reason in decision.reason


def test_demand_is_leases_or_tasks_per_worker():
    d = run({}, [inst("w1", leases=5), inst("w2", leases=2)], memory=mem(), observation=None)
    assert (d.leases, d.tasks, d.demand) == (7, 0, math.ceil(7 / 4))
    d = run({}, [inst("w1", leases=5)], observation=obs([inst("w1", leases=5)], tasks=13))
    assert (d.leases, d.tasks, d.demand) == (5, 13, 4)


def test_scale_out_memory_and_direction():
    d = run({}, [inst("w1", leases=9)])
    assert d.direction == "out"
    assert d.memory["last_direction"] == "out"
    assert d.memory["last_scale_out_at"] == d.memory["last_reversal_at"] == NOON.isoformat()
    # a second scale-out in a row is no reversal: the reversal time stays
    later = NOON + timedelta(minutes=2)
    d2 = decide(parse_scale_policy({}), [inst("w1", leases=20, now=later)], obs([inst("w1", leases=20)], now=later),
                d.memory, later)  # fmt: skip
    assert d2.action == "scale_out"
    assert d2.memory["last_reversal_at"] == NOON.isoformat()
    assert d2.memory["last_scale_out_at"] == later.isoformat()


def test_scale_in_memory_records_the_drain():
    d = run({}, [inst("w1", idle=20), inst("w2", idle=50)], memory=mem(**RIPE))
    assert d.action == "scale_in" and d.victim == "w2" and d.direction == "in"
    assert d.memory["draining"] == {"instance": "w2", "since": NOON.isoformat(), "empty_reads": 0}
    assert d.memory["last_direction"] == "in" and d.memory["last_reversal_at"] == NOON.isoformat()


def test_failed_read_resets_the_drains_empty_reads_and_the_surplus_clock():
    fleet = [inst("w1"), inst("w3", state="draining")]
    d = run({}, fleet, obs(fleet, ok=False, error="timeout"), mem(**{**RIPE, "draining": ("w3", 1)}))
    assert d.action == "hold"
    assert d.memory["draining"]["empty_reads"] == 0
    assert d.memory["surplus_since"] is None


def test_a_lease_during_the_drain_restarts_the_count():
    fleet = [inst("w1"), inst("w3", state="draining", leases=1, idle=None)]
    d = run({}, fleet, memory=mem(**{**RIPE, "draining": ("w3", 1)}))
    assert d.action == "hold" and d.memory["draining"]["empty_reads"] == 0


def test_cancel_drain_clears_the_drain_and_counts_as_scale_out():
    fleet = [inst("w1", leases=8), inst("w3", state="draining")]
    d = run({}, fleet, memory=mem(**{**RIPE, "draining": ("w3", 1), "last_direction": "in"}))
    assert d.action == "cancel_drain" and d.direction == "out"
    assert d.memory["draining"] is None and d.memory["last_reversal_at"] == NOON.isoformat()


def test_a_removed_instance_ends_the_drain_in_memory():
    d = run({}, [inst("w1", leases=1, idle=None)], memory=mem(**{**RIPE, "draining": ("w3", 2)}))
    assert d.action == "hold" and d.memory["draining"] is None


def test_finish_drain_is_repeated_until_the_instance_is_gone():
    """A refused delete (a lease slipped in) leaves the instance: the next tick decides from what it sees."""
    fleet = [inst("w1", leases=1), inst("w3", state="draining")]
    d = run({}, fleet, memory=mem(**{**RIPE, "draining": ("w3", 2)}))
    assert d.action == "finish_drain"
    assert d.memory["draining"]["instance"] == "w3"  # kept until the instance is gone from the fleet


@pytest.mark.parametrize(
    ("window", "now", "warmup", "expected"),
    [
        (BUSINESS, NOON, 10, (2, True)),
        (BUSINESS, SATURDAY, 10, (0, False)),
        (BUSINESS, NOON.replace(hour=6, minute=55), 10, (2, False)),  # warm-up before the window opens
        (BUSINESS, NOON.replace(hour=6, minute=55), 0, (0, False)),
        (BUSINESS, NOON.replace(hour=19, minute=0), 10, (0, False)),  # end is exclusive
        # across midnight, in a time zone: Berlin 22:00-06:00 on weekdays; Tue 04:30 Berlin = Tue 03:30 UTC
        (
            {"name": "n", "days": "mon-fri", "start": "22:00", "end": "06:00", "tz": "Europe/Berlin", "min_size": 1},
            datetime(2026, 12, 8, 3, 30, tzinfo=UTC),
            0,
            (1, True),
        ),  # fmt: skip
        # Saturday 01:00 Berlin belongs to Friday's window
        (
            {"name": "n", "days": "mon-fri", "start": "22:00", "end": "06:00", "tz": "Europe/Berlin", "min_size": 1},
            datetime(2026, 12, 12, 0, 0, tzinfo=UTC),
            0,
            (1, True),
        ),  # fmt: skip
        # Monday 01:00 Berlin belongs to Sunday, not in the window
        (
            {"name": "n", "days": "mon-fri", "start": "22:00", "end": "06:00", "tz": "Europe/Berlin", "min_size": 1},
            datetime(2026, 12, 7, 0, 0, tzinfo=UTC),
            0,
            (0, False),
        ),  # fmt: skip
        # a quiet window: nights 0, no deployments declared
        (
            {"name": "nights", "start": "19:00", "end": "07:00", "min_size": 0, "deployments": False},
            NOON.replace(hour=23),
            0,
            (0, False),
        ),  # fmt: skip
    ],
)
def test_windows(window, now, warmup, expected):
    policy = parse_scale_policy({"windows": [window], "warmup_minutes": warmup, "min_size": 0})
    floor, in_window, _ = floor_at(policy, now)
    assert (floor, in_window) == expected


def test_the_largest_open_window_floor_wins_over_min_size():
    policy = parse_scale_policy(
        {
            "min_size": 1,
            "windows": [BUSINESS, {"name": "release", "days": "mon", "start": "11:00", "end": "13:00", "min_size": 4}],
        }  # fmt: skip
    )
    assert floor_at(policy, NOON) == (4, True, ("business", "release"))
    assert floor_at(policy, SATURDAY) == (1, False, ())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be an object of knobs"),
        ({"max_nodes": 3}, "unknown knob(s) 'max_nodes'"),
        ({"min_size": -1}, "min_size must be >= 0"),
        ({"min_size": 1.5}, "min_size must be a whole number"),
        ({"min_size": True}, "min_size must be a whole number"),
        ({"max_size": 0}, "max_size must be >= 1"),
        ({"min_size": 5, "max_size": 4}, "min_size 5 is above max_size 4"),
        ({"leases_per_worker": 0}, "leases_per_worker must be >= 1"),
        ({"idle_minutes": "15"}, "idle_minutes must be a number"),
        ({"stale_after_seconds": 0}, "stale_after_seconds must be >= 1"),
        ({"allow_zero_in_window": "no"}, "allow_zero_in_window must be true or false"),
        ({"windows": {"start": "07:00"}}, "windows must be a list"),
        ({"windows": ["07:00-19:00"]}, "windows[0] must be an object"),
        ({"windows": [{**BUSINESS, "start": "7am"}]}, "windows[0] (business): start must be a local time 'HH:MM'"),
        ({"windows": [{**BUSINESS, "end": "25:00"}]}, "windows[0] (business): end must be a local time"),
        ({"windows": [{"start": "07:00"}]}, "windows[0] (window 1): end is required"),
        ({"windows": [{**BUSINESS, "tz": "Mars/Olympus"}]}, "tz 'Mars/Olympus' is not an IANA time zone"),
        ({"windows": [{**BUSINESS, "days": ["mon", "funday"]}]}, "days: 'funday' is not a day"),
        ({"windows": [{**BUSINESS, "days": []}]}, "days must be a non-empty list"),
        ({"windows": [{**BUSINESS, "min_size": 30}]}, "min_size 30 is above the policy's max_size 10"),
        ({"windows": [{**BUSINESS, "floor": 2}]}, "unknown key(s) 'floor'"),
        ({"windows": [{**BUSINESS, "deployments": "yes"}]}, "deployments must be true or false"),
    ],
)
def test_policy_errors_name_the_knob(raw, message):
    with pytest.raises(ScalePolicyError) as err:
        parse_scale_policy(raw)
    assert message in str(err.value)


def test_policy_defaults_and_round_trip():
    policy = parse_scale_policy({"windows": [BUSINESS, {**BUSINESS, "name": "we", "days": "sat-sun"}]})
    assert (policy.min_size, policy.max_size, policy.idle_minutes, policy.scale_in_cooldown_minutes) == (0, 10, 15, 10)
    assert (policy.leases_per_worker, policy.allow_zero_in_window, policy.stale_after_seconds) == (4, False, 240)
    assert (policy.reversal_minutes, policy.warmup_minutes) == (60, 10)
    assert policy.windows[0].days == ("mon", "tue", "wed", "thu", "fri")
    assert policy.windows[1].days == ("sat", "sun")
    assert parse_scale_policy(json.loads(json.dumps(policy.to_param()))) == policy
    assert parse_scale_policy(None) == ScalePolicy()
    # ranges wrap around the week; full day names are accepted
    wrap = parse_scale_policy({"windows": [{**BUSINESS, "days": ["Friday-Monday"]}]})
    assert wrap.windows[0].days == ("mon", "fri", "sat", "sun")


def test_memory_round_trip_and_errors():
    d = run({}, [inst("w1"), inst("w2", idle=50)], memory=mem(**RIPE))
    stored = json.loads(json.dumps(d.memory))
    assert load_memory(stored) == d.memory
    assert load_memory(None) == empty_memory() == load_memory({})
    with pytest.raises(ValueError, match="last_scale_out_at must be an ISO 8601 time"):
        load_memory({"last_scale_out_at": "yesterday"})
    with pytest.raises(ValueError, match="last_direction must be"):
        load_memory({"last_direction": "up"})
    with pytest.raises(ValueError, match="draining.empty_reads"):
        load_memory({"draining": {"instance": "w1", "since": NOON.isoformat(), "empty_reads": -1}})
    with pytest.raises(ValueError, match="must be a JSON object"):
        load_memory(["x"])


def test_naive_time_is_refused():
    with pytest.raises(ValueError, match="naive datetime"):
        decide(ScalePolicy(), [], obs(), empty_memory(), NOON.replace(tzinfo=None))


def test_format_decision_is_one_line_with_demand_target_action_and_why():
    line = format_decision(run({}, [inst("w1", leases=9)]))
    assert "\n" not in line
    assert line.startswith("autoscale: demand=3 target=3 active=1 floor=0 action=scale_out +2 — ")
    assert "9 leases and 0 queued or running tasks want 3 workers" in line


def _square_wave(period_minutes: float, policy: ScalePolicy, hours: float = 6.0) -> list[datetime]:
    """Drive decide() with a square-wave load on a minimal fleet model (booting for one tick, a drain's records go
    at finish_drain); returns the times of direction changes."""
    now = NOON.replace(hour=8)
    memory = empty_memory()
    fleet: dict[str, dict] = {}
    seq, last, changes = 0, None, []
    end = now + timedelta(hours=hours)
    while now < end:
        minutes = (now - NOON.replace(hour=8)).total_seconds() / 60
        high = (minutes // (period_minutes / 2)) % 2 == 0
        ready = [n for n, i in fleet.items() if i["state"] == "ready"]
        load = 20 if high else 0
        per = {n: (load // len(ready) + (k < load % len(ready)) if ready else 0) for k, n in enumerate(ready)}
        for n, i in fleet.items():
            i["leases"] = per.get(n, 0)
            if i["state"] == "ready":
                i["idle_since"] = None if i["leases"] else (i["idle_since"] or now)
        d = decide(policy, list(fleet.values()), {"at": now, "ok": True, "leases": per, "tasks": 0, "error": ""},
                   memory, now)  # fmt: skip
        memory = json.loads(json.dumps(d.memory))
        for i in fleet.values():
            if i["state"] == "booting":
                i["state"], i["idle_since"] = "ready", now
        if d.action == "scale_out":
            for _ in range(d.count):
                seq += 1
                fleet[f"w{seq}"] = inst(f"w{seq}", state="booting", idle=None, now=now)
        elif d.action == "scale_in":
            fleet[d.victim]["state"] = "draining"
        elif d.action == "cancel_drain":
            fleet[d.victim]["state"] = "ready"
        elif d.action == "finish_drain":
            del fleet[d.victim]
        if d.direction is not None:
            if last is not None and d.direction != last:
                changes.append(now)
            last = d.direction
        now += timedelta(minutes=2)
    return changes


def _max_per_hour(times: list[datetime]) -> int:
    return max((sum(1 for u in times if t <= u < t + timedelta(hours=1)) for t in times), default=0)


@pytest.mark.parametrize("period", [10, 20, 30, 40, 50, 60, 90, 120])
def test_square_wave_gives_at_most_two_direction_changes_per_hour(period):
    changes = _square_wave(period, parse_scale_policy({"windows": [BUSINESS]}))
    assert _max_per_hour(changes) <= 2, changes


def test_without_the_reversal_guard_a_square_wave_flaps():
    """The guard is what holds the bound: the same load with reversal_minutes 0 changes direction more often."""
    changes = _square_wave(40, parse_scale_policy({"windows": [BUSINESS], "reversal_minutes": 0}))
    assert _max_per_hour(changes) > 2


def test_decide_leaves_its_inputs_alone():
    memory = mem(**{**RIPE, "draining": ("w3", 1)})
    before = json.dumps(memory, sort_keys=True)
    fleet = [inst("w1"), inst("w3", state="draining")]
    d = run({}, fleet, memory=memory)
    assert d.action == "finish_drain"
    assert json.dumps(memory, sort_keys=True) == before
