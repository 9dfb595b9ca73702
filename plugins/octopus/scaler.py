"""One tick of ``autoscale_octopus_workers``: the I/O around :func:`octopus.autoscale.decide`.

Per deployment (``name_prefix``, cloud), under the deployment's lease, taken without waiting:

1. **the pending share run** — when the scaler triggered one, its state decides: not there yet (a tick killed
   before the trigger) → trigger the same run id again; queued or running → hold; finished → take its outcome;
2. **repair the intents** the state records (a tick killed between its write and its Octopus writes): the
   victim's records disabled in every space, a cancelled victim re-enabled, our copies in spaces the access
   policy left disabled;
3. **observe** (after the repairs, so a read never predates a disable): per space the ledger records, our records
   (by sealed thumbprint only), the leases on them, and queued + executing tasks in spaces of the access policy;
   any failed read (429, 5xx, timeout, 403) makes the observation not ok: hold, never scale in;
4. **decide** with the memory of earlier ticks (:mod:`octopus.scaler_state`);
5. **act**: record the decision first (the intent), then write Octopus; a scale-out or a drained victim becomes a
   share run of ``share_octopus_workers`` (Terraform, wait, share: the same pipeline), triggered by the DAG's next
   task with the run id recorded here.

Every step is idempotent: a tick killed between any two steps leaves an intent the next tick finishes, never
repeats. Nothing is done to a record that does not carry a sealed thumbprint of the deployment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from octopus import access_policy, autoscale, ledger, scaler_state
from octopus.draining import DEFAULT_STALE_AFTER_SECONDS, parse_octopus_date
from octopus.exceptions import OctopusError, OctopusNotFoundError, OctopusValidationError
from octopus.naming import record_key

log = logging.getLogger(__name__)

#: Task states that count as demand (the leading signal): queued for the server, or running.
DEMAND_STATES = ("Queued", "Executing")
#: Health that makes an instance capacity (a worker Octopus would give a step).
READY_HEALTH = ("Healthy", "HasWarnings")
SIZE_ASSET_ALIAS = scaler_state.SIZE_ASSET_ALIAS
RETIRE_DAG_ID = "retire_octopus_workers"
#: After a share run the scaler triggered failed, the next one waits this long (a build that fails tends to fail
#: again the same way; the decision is taken again each tick meanwhile).
RETRY_FAILED_SHARE_MINUTES = 15
#: States of a DAG run that still apply the scaler's last decision.
ACTIVE_RUN_STATES = ("queued", "running")


class CrashForTest(Exception):
    """Raised by a test's ``checkpoint`` to stop a tick between two steps (a kill)."""


@dataclass
class TickEnv:
    """What a tick talks to; everything a test may replace (an injected clock, a kill between steps)."""

    hook: Any
    store: ledger.LedgerStore
    run_state: Callable[[str, str], str | None]
    me: Mapping[str, str]
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    checkpoint: Callable[[str], None] = field(default=lambda step: None)
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS
    #: Further conf of the share runs the tick triggers (the ``share_conf`` param: pool name, polling, drain).
    share_conf: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- params (pure)

#: The decision rule's knobs, each a param of the DAG under its own name (those of
#: :class:`octopus.autoscale.ScalePolicy`); ``stale_after_seconds`` follows the schedule, not a param.
POLICY_PARAMS = tuple(k for k in autoscale.ScalePolicy().to_param() if k != "stale_after_seconds")


def scale_policy(params: Mapping[str, Any]) -> autoscale.ScalePolicy:
    """The :class:`~octopus.autoscale.ScalePolicy` the params give (each knob absent or null takes its default)."""
    raw = {k: params[k] for k in POLICY_PARAMS if params.get(k) is not None}
    return autoscale.parse_scale_policy(raw)


def space_policy(params: Mapping[str, Any]) -> access_policy.AccessPolicy:
    """The access policy, as the share DAG reads it (:func:`octopus.tasks.space_policy`)."""
    from octopus import tasks

    return tasks.space_policy(params)


# --------------------------------------------------------------------------- the tick


def run_tick(params: Mapping[str, Any], env: TickEnv) -> dict[str, Any]:
    """One tick for every cloud of ``params``; returns ``{"clouds": {cloud: line}, "triggers": [...],
    "size_changes": [...], "held_by": str | None}`` (``triggers``: the share runs the DAG's next task triggers)."""
    from octopus.naming import validate_prefix

    prefix = validate_prefix(params.get("name_prefix") or "")
    clouds = sorted(set(params["clouds"]))
    dry_run = bool(params.get("dry_run"))
    policy = scale_policy(params)
    spaces_in = space_policy(params)
    summary: dict[str, Any] = {"clouds": {}, "triggers": [], "size_changes": [], "held_by": None, "dry_run": dry_run}
    if not dry_run:
        held = ledger.claim(env.store, prefix, clouds, env.me, env.run_state)
        if held:
            # Never wait: the share or retire run that holds the deployment is changing it right now.
            ledger.release(env.store, prefix, clouds, env.me)
            summary["held_by"] = held
            for cloud in clouds:
                line = {"action": "hold", "reason": f"hold: {held}; this tick changes nothing", "demand": None}
                summary["clouds"][cloud] = line
                log.info("autoscale %s: action=hold — %s", cloud, line["reason"])
            return summary
    try:
        for cloud in clouds:
            summary["clouds"][cloud] = tick_cloud(prefix, cloud, policy, spaces_in, env, summary, dry_run=dry_run)
    finally:
        if not dry_run:
            ledger.release(env.store, prefix, clouds, env.me)
    return summary


def tick_cloud(
    prefix: str,
    cloud: str,
    policy: autoscale.ScalePolicy,
    spaces_in: access_policy.AccessPolicy,
    env: TickEnv,
    summary: dict[str, Any],
    *,
    dry_run: bool,
) -> dict[str, Any]:
    """One deployment's tick (see the module docstring); returns its line of the summary."""
    now = env.now()
    doc = scaler_state.load(env.store, prefix, cloud)
    led = ledger.load(env.store, prefix, cloud)
    evidence = ledger.verified(led, env.hook.evidence_signer())
    workers = [dict(w) for w in (evidence["fleet"] or {}).get("workers") or []]
    owned = {o["thumbprint"] for o in evidence["owned"]}
    spaces = recorded_spaces(led)
    allowed = {s["Id"] for s in access_policy.allowed_spaces(spaces_in, spaces)}

    def finish(line: dict[str, Any]) -> dict[str, Any]:
        line = {"cloud": cloud, "size": len(workers), **line}
        log.info(
            "autoscale %s: demand=%s target=%s size=%d active=%s floor=%s action=%s%s — %s",
            cloud,
            line.get("demand"),
            line.get("target"),
            line["size"],
            line.get("active"),
            line.get("floor"),
            line["action"],
            f" {line['victim']}" if line.get("victim") else "",
            line["reason"],
        )
        if not dry_run:
            scaler_state.save(env.store, {**doc, "last": {**line, "at": now.isoformat()}}, env.hook.evidence_signer())
        return line

    # 1. The share run the scaler is waiting for.
    pending = doc.get("pending")
    if pending:
        state = env.run_state(scaler_state.SHARE_DAG_ID, pending["run_id"])
        if state is None:
            if not dry_run:
                summary["triggers"].append({"trigger_run_id": pending["run_id"], "conf": pending["conf"]})
            return finish(
                {
                    "action": "hold",
                    "target": pending["target"],
                    "reason": f"share run {pending['run_id']!r} "
                    "was recorded but not triggered (the last tick stopped before it): triggering it now",
                }
            )
        if state in ACTIVE_RUN_STATES:
            return finish(
                {
                    "action": "hold",
                    "target": pending["target"],
                    "reason": f"share run {pending['run_id']!r} is "
                    f"{state}, applying target {pending['target']} ({pending['reason']})",
                }
            )
        doc, said, back = scaler_state.after_share(doc, state, [w["thumbprint"] for w in workers])
        doc = {
            **doc,
            "failed_share": None if state == "success" else {"run_id": pending["run_id"], "at": now.isoformat()},
        }
        (log.info if state == "success" else log.warning)("autoscale %s: %s", cloud, said)
        if back:
            doc = {**doc, "reenable": back}
        if not dry_run:
            # repair() re-enables a victim the share run did not remove
            scaler_state.save(env.store, doc, env.hook.evidence_signer())

    if (evidence["fleet"] or {}).get("dag_id") == RETIRE_DAG_ID:
        doc = scaler_state.empty(prefix, cloud)  # the count is the share DAG's again, until the scaler acts
        return finish(
            {
                "action": "hold",
                "target": 0,
                "reason": "the deployment was retired: the scaler never rebuilds a "
                "retired fleet (trigger share_octopus_workers to build it again, then the scaler takes over)",
            }
        )

    # 2. Finish what an earlier tick recorded but may not have written.
    try:
        if not dry_run:
            doc = repair(env, doc, spaces, allowed, owned, now)
        env.checkpoint("repaired")
        # 3. Observe (after the repairs).
        seen = observe(env, spaces, allowed, owned, now)
    except OctopusError as exc:
        seen = {"ok": False, "error": _short(exc), "records": {}, "leases": {}, "tasks": 0}
    views, idle = instance_views(doc, workers, seen, led, allowed, now)
    observation: autoscale.Observation = {
        "at": now,
        "ok": seen["ok"],
        "leases": {v["name"]: v["leases"] for v in views},
        "tasks": seen["tasks"],
        "error": seen.get("error") or "",
    }
    memory = autoscale.load_memory(doc.get("memory"))
    decision = autoscale.decide(policy, views, observation, memory, now)
    line: dict[str, Any] = {
        "action": decision.action,
        "demand": decision.demand,
        "target": decision.target,
        "active": decision.active,
        "floor": decision.floor,
        "leases": decision.leases,
        "tasks": decision.tasks,
        "victim": decision.victim,
        "reason": decision.reason,
    }
    if dry_run:
        return finish({**line, "reason": f"dry run, nothing done: {decision.reason}"})
    doc = {**doc, "memory": dict(decision.memory), "idle": idle}
    if seen["ok"]:
        doc = track_unshare(env, doc, seen, spaces, allowed, owned, led, now)
    env.checkpoint("decided")
    by_name = {w["name"]: w for w in workers}
    failed = doc.get("failed_share") or {}
    wait = failed and now - datetime.fromisoformat(failed["at"]) < timedelta(minutes=RETRY_FAILED_SHARE_MINUTES)
    if wait and decision.action in ("scale_out", "finish_drain"):
        line = {**line, "action": "hold"}
        line["reason"] = (
            f"{decision.reason}; but share run {failed['run_id']!r} failed at {failed['at']}: the next one is "
            f"triggered {RETRY_FAILED_SHARE_MINUTES} min after it (see that run's log for why)"
        )
        return finish(line)
    if decision.action == "scale_out":
        size = len(workers) + decision.count
        doc = _trigger(doc, prefix, cloud, size, "grow", decision, env, summary, now)
        line["target"] = size
    elif decision.action == "scale_in" and decision.victim in by_name:
        victim = _victim(by_name[decision.victim])
        doc = {**doc, "drain": {"victim": victim, "since": now.isoformat(), "reason": decision.reason}}
        # the intent first: a kill now is finished by the next tick's repair
        scaler_state.save(env.store, doc, env.hook.evidence_signer())
        env.checkpoint("drain_recorded")
        disable(env, spaces, [victim["thumbprint"]], owned)
    elif decision.action == "cancel_drain" and decision.victim in by_name:
        victim = _victim(by_name[decision.victim])
        doc = {**doc, "drain": None, "reenable": victim}
        scaler_state.save(env.store, doc, env.hook.evidence_signer())
        env.checkpoint("cancel_recorded")
        doc = reenable(env, doc, spaces, allowed, owned)
    elif decision.action == "finish_drain" and decision.victim in by_name:
        size = len(workers) - 1
        victim = _victim(by_name[decision.victim])
        leaving = [v for v in doc.get("leaving") or [] if v["thumbprint"] != victim["thumbprint"]] + [victim]
        doc = {**doc, "leaving": leaving}
        doc = _trigger(doc, prefix, cloud, size, "remove", decision, env, summary, now)
        line["target"] = size
    return finish(line)


def _victim(worker: Mapping[str, Any]) -> scaler_state.Victim:
    return {"name": str(worker["name"]), "thumbprint": str(worker["thumbprint"]).upper()}


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def recorded_spaces(led: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every space the ledger records (where a record of ours may be), the initial space first: ``{"Id", "Name"}``."""
    spaces: dict[str, dict[str, Any]] = {}
    initial = led.get("initial_space") or {}
    if initial.get("id"):
        spaces[initial["id"]] = {"Id": initial["id"], "Name": initial.get("name") or initial["id"], "initial": True}
    for space_id, entry in sorted((led.get("spaces") or {}).items()):
        spaces.setdefault(space_id, {"Id": space_id, "Name": entry.get("name") or space_id})
    return list(spaces.values())


# --------------------------------------------------------------------------- Octopus reads


def observe(
    env: TickEnv, spaces: Sequence[Mapping[str, Any]], allowed: set[str], owned: set[str], now: datetime
) -> dict[str, Any]:
    """One read of every recorded space: our records (sealed thumbprints only), the live leases on them, and the
    queued + executing tasks of the spaces in the policy. Raises :class:`OctopusError` on a failed read."""
    records: dict[str, list[dict[str, Any]]] = {}
    leases: dict[str, list[dict[str, Any]]] = {}
    tasks = 0
    hook = env.hook
    for space in spaces:
        sid = space["Id"]
        try:
            ours = [w for w in hook.list_workers(sid) if record_key(w) in owned]
        except OctopusNotFoundError:
            records[sid], leases[sid] = [], []  # the space is gone, and everything in it
            continue
        records[sid] = ours
        ids = {w["Id"] for w in ours}
        if ids:
            held = [lease for lease in hook.list_worker_task_leases(sid) if lease.get("WorkerId") in ids]
            leases[sid] = [lease for lease in held if not _stale(hook, sid, lease, now, env.stale_after_seconds)]
        else:
            leases[sid] = []
        if sid in allowed:
            tasks += len(hook.list_tasks(sid, states=DEMAND_STATES))
    return {"ok": True, "records": records, "leases": leases, "tasks": tasks}


def _stale(hook: Any, space_id: str, lease: Mapping[str, Any], now: datetime, stale_after: float) -> bool:
    """A lease older than ``stale_after`` whose task has completed (Octopus keeps some until a restart)."""
    taken = parse_octopus_date(lease.get("TakenAt"))
    if taken is None or (now - taken).total_seconds() < stale_after or not lease.get("ServerTaskId"):
        return False
    try:
        return bool(hook.get_task(space_id, lease["ServerTaskId"]).get("IsCompleted"))
    except OctopusNotFoundError:
        return True


def instance_views(
    doc: Mapping[str, Any],
    workers: Sequence[Mapping[str, Any]],
    seen: Mapping[str, Any],
    led: Mapping[str, Any],
    allowed: set[str],
    now: datetime,
) -> tuple[list[autoscale.InstanceView], dict[str, str]]:
    """The sealed fleet as :func:`octopus.autoscale.decide` sees it, and the idle times to remember.

    ``draining``: the scaler's own victim. ``ready``: its record in the initial space is enabled and healthy;
    ``disabled``: that record was disabled by someone else; ``booting``: not (yet) registered and healthy there.
    ``leases``: live leases on its records in spaces of the policy (the victim's: in every space, so a step in a
    space outside the policy still holds it). ``idle_since``: since when no lease in *any* space held it, as
    remembered across ticks (an instance busy anywhere is never a victim).
    """
    victim = ((doc.get("drain") or {}).get("victim") or {}).get("thumbprint", "")
    initial = (led.get("initial_space") or {}).get("id")
    idle = dict(doc.get("idle") or {})
    records = seen.get("records") or {}
    views: list[autoscale.InstanceView] = []
    for worker in workers:
        name, thumb = worker["name"], str(worker["thumbprint"]).upper()
        held_allowed = held_all = 0
        for sid, in_space in records.items():
            ids = {r["Id"] for r in in_space if record_key(r) == thumb}
            count = sum(1 for lease in seen["leases"].get(sid, []) if lease.get("WorkerId") in ids)
            held_all += count
            held_allowed += count if sid in allowed else 0
        home = [r for r in records.get(initial, []) if record_key(r) == thumb]
        if thumb == victim:
            state = "draining"
        elif home and all(r.get("IsDisabled") for r in home):
            state = "disabled"
        elif home and any(r.get("HealthStatus") in READY_HEALTH for r in home):
            state = "ready"
        else:
            state = "booting"
        if seen.get("ok"):
            if held_all:
                idle.pop(name, None)
            elif state in ("ready", "draining"):
                idle.setdefault(name, now.isoformat())
        since = idle.get(name) if not held_all else None
        views.append(
            {
                "name": name,
                "thumbprint": thumb,
                "state": state,  # type: ignore[typeddict-item]
                "leases": held_all if state == "draining" else held_allowed,
                "idle_since": datetime.fromisoformat(since) if since else None,
            }
        )
    names = {w["name"] for w in workers}
    return views, {k: v for k, v in idle.items() if k in names}


# --------------------------------------------------------------------------- Octopus writes


def disable(env: TickEnv, spaces: Sequence[Mapping[str, Any]], thumbprints: Sequence[str], owned: set[str]) -> int:
    """Disable every record carrying one of ``thumbprints`` (sealed ones only) in ``spaces``; returns the writes."""
    wanted = {t.upper() for t in thumbprints} & owned
    writes = 0
    for space in spaces:
        try:
            records = env.hook.list_workers(space["Id"])
        except OctopusNotFoundError:
            continue
        for record in records:
            if record_key(record) in wanted and not record.get("IsDisabled"):
                env.hook.update_worker(space["Id"], {**record, "IsDisabled": True})
                log.info("disabled %s (%s) in %s", record.get("Name"), record["Id"], space["Name"])
                writes += 1
    return writes


def reenable(
    env: TickEnv, doc: dict[str, Any], spaces: Sequence[Mapping[str, Any]], allowed: set[str], owned: set[str]
) -> dict[str, Any]:
    """Re-enable the cancelled victim's records in the spaces of the policy (never outside it), then forget it."""
    victim = doc.get("reenable") or {}
    thumb = str(victim.get("thumbprint") or "").upper()
    if thumb and thumb in owned:
        for space in spaces:
            if space["Id"] not in allowed:
                continue
            try:
                records = env.hook.list_workers(space["Id"])
            except OctopusNotFoundError:
                continue
            for record in records:
                if record_key(record) == thumb and record.get("IsDisabled"):
                    env.hook.update_worker(space["Id"], {**record, "IsDisabled": False})
                    log.info("re-enabled %s (%s) in %s", record.get("Name"), record["Id"], space["Name"])
    doc = {**doc, "reenable": None}
    scaler_state.save(env.store, doc, env.hook.evidence_signer())
    return doc


def repair(
    env: TickEnv,
    doc: dict[str, Any],
    spaces: Sequence[Mapping[str, Any]],
    allowed: set[str],
    owned: set[str],
    now: datetime,
) -> dict[str, Any]:
    """Carry out what the state records but a killed tick may not have written (all idempotent)."""
    if doc.get("reenable"):
        doc = reenable(env, doc, spaces, allowed, owned)
    victim = (doc.get("drain") or {}).get("victim")
    if victim:
        disable(env, spaces, [victim["thumbprint"]], owned)
    outside = outside_spaces(spaces, allowed)
    if outside:
        unshare = dict(doc.get("unshare") or {})
        new = {s["Id"]: s for s in outside if s["Id"] not in unshare}
        if new:
            for sid, space in new.items():
                unshare[sid] = {"name": space["Name"], "since": now.isoformat(), "reads": {}}
            doc = {**doc, "unshare": unshare}
            scaler_state.save(env.store, doc, env.hook.evidence_signer())  # the intent first
        disable(env, outside, sorted(owned), owned)
    return doc


def outside_spaces(spaces: Sequence[Mapping[str, Any]], allowed: set[str]) -> list[Mapping[str, Any]]:
    """Recorded spaces the access policy leaves out, the initial space excepted: the fleet registers there, so it
    is never unshared (a warning says so; move the fleet with the share DAG's ``initial_space`` param first)."""
    outside = [s for s in spaces if s["Id"] not in allowed]
    for space in outside:
        if space.get("initial"):
            log.warning(
                "the initial space %s is outside the access policy: the fleet registers there, so its records stay",
                space["Name"],
            )
    return [s for s in outside if not s.get("initial")]


def track_unshare(
    env: TickEnv,
    doc: dict[str, Any],
    seen: Mapping[str, Any],
    spaces: Sequence[Mapping[str, Any]],
    allowed: set[str],
    owned: set[str],
    led: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Spaces outside the access policy: each copy of ours there (disabled by :func:`repair`) is deleted once two
    reads a tick apart found no lease on it (Octopus refusing the delete is the last guard); a space a read found
    holding none of ours is forgotten by the ledger."""
    unshare = {k: dict(v) for k, v in (doc.get("unshare") or {}).items()}
    names = {s["Id"]: s["Name"] for s in outside_spaces(spaces, allowed)}
    forget: list[str] = []
    for sid, entry in sorted(unshare.items()):
        if sid not in names:
            unshare.pop(sid)  # back in the policy (the share run repairs it), or no longer recorded
            continue
        records = seen["records"].get(sid, [])
        if not records:
            forget.append(sid)
            unshare.pop(sid)
            log.info("space %s holds none of our records any more: forgotten", names[sid])
            continue
        held_ids = {lease.get("WorkerId") for lease in seen["leases"].get(sid, [])}
        reads = {k: int(v) for k, v in (entry.get("reads") or {}).items()}
        entry["reads"] = {}
        for record in records:
            if record["Id"] in held_ids or not record.get("IsDisabled"):
                entry["reads"][record["Id"]] = 0  # a step holds it (or the disable did not land): wait
                log.info("%s in %s (outside the policy) is disabled and drains", record["Name"], names[sid])
                continue
            count = entry["reads"][record["Id"]] = reads.get(record["Id"], 0) + 1
            if count < autoscale.DRAIN_EMPTY_READS:
                continue
            try:
                env.hook.delete_worker(sid, record["Id"], missing_ok=True)
                log.info(
                    "removed %s (%s) from %s: the space left the access policy",
                    record["Name"],
                    record["Id"],
                    names[sid],
                )
            except OctopusValidationError as exc:  # a step took it since: it stays disabled, drained again
                entry["reads"][record["Id"]] = 0
                log.info("%s in %s: delete refused (%s); draining again", record["Name"], names[sid], exc.error_message)
    doc = {**doc, "unshare": unshare}
    if forget:
        fenced = ledger.check_fence(env.store, led["prefix"], led["cloud"], env.me, env.run_state)
        ledger.save(env.store, ledger.forget(fenced, space_ids=forget))
    return doc


# --------------------------------------------------------------------------- share runs


def _trigger(
    doc: dict[str, Any],
    prefix: str,
    cloud: str,
    size: int,
    kind: str,
    decision: autoscale.Decision,
    env: TickEnv,
    summary: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Record the new target and the share run that applies it (the intent), then hand it to the trigger task."""
    before = doc.get("target")
    run_id = scaler_state.share_run_id(prefix, cloud, kind, size, env.me["run_id"])
    conf = scaler_state.share_conf(prefix, cloud, size, env.share_conf)
    doc = scaler_state.with_pending(
        doc, kind=kind, target=size, run_id=run_id, conf=conf, reason=decision.reason, at=now.isoformat()
    )
    scaler_state.save(env.store, doc, env.hook.evidence_signer())
    env.checkpoint("share_recorded")
    summary["triggers"].append({"trigger_run_id": run_id, "conf": conf})
    summary["size_changes"].append(
        {
            "uri": size_asset_uri(env.hook.server_url, prefix),
            "extra": {
                "cloud": cloud,
                "from": before,
                "to": size,
                "action": decision.action,
                "victim": decision.victim,
                "reason": decision.reason,
                "share_run_id": run_id,
                "run_id": env.me["run_id"],
            },
        }
    )
    return doc


def size_asset_uri(server_url: str, prefix: str) -> str:
    """``octopus://<server>/shared-workers/<prefix>/size``: an event each time the scaler changes the size."""
    from octopus.tasks import asset_uri

    return asset_uri(server_url, prefix, event="shared") + "/size"


# --------------------------------------------------------------------------- the DAG's task


def tick_task(context: Mapping[str, Any], *, conn_id: str, env: TickEnv | None = None) -> dict[str, Any]:
    """The body of the ``tick`` task: one tick, the Asset events of size changes, the summary (XCom)."""
    from airflow.sdk import Asset, AssetAlias
    from airflow.sdk.exceptions import AirflowFailException

    from octopus import tasks
    from octopus.errors import SharingError
    from octopus.hooks import OctopusHook

    if env is None:
        # A tick is cheap and comes again in minutes: a read that still fails after one retry means "hold".
        hook = OctopusHook(octopus_conn_id=conn_id, max_attempts=2, max_retry_seconds=30)
        env = TickEnv(hook=hook, store=ledger.VariableStore(), run_state=tasks.run_state, me=tasks.this_run(context))
    params = context["params"]
    stale = params.get("stale_lease_minutes")
    if stale:
        env.stale_after_seconds = float(stale) * 60
    # The share runs it triggers apply the same access policy: they never add a copy where the scaler withdraws one.
    policy = {k: list(params[k]) for k in ("allowed_spaces", "denied_spaces") if params.get(k)}
    env.share_conf = {**dict(params.get("share_conf") or {}), **policy}
    try:
        summary = run_tick(params, env)
    except (
        autoscale.ScalePolicyError,
        access_policy.AccessPolicyError,
        scaler_state.ScalerStateError,
        SharingError,
        ledger.LeaseError,
    ) as exc:
        raise AirflowFailException(str(exc)) from None
    for change in summary["size_changes"]:
        context["outlet_events"][AssetAlias(SIZE_ASSET_ALIAS)].add(Asset(change["uri"]), extra=change["extra"])
        log.info("Asset event %s: %s", change["uri"], change["extra"])
    return summary
