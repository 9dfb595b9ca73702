"""What the scaler remembers between ticks, and what the share DAG reads of it (pure, plus one Variable read).

One Airflow Variable per deployment, ``octopus_workers.<prefix>.<cloud>.scaler`` (JSON, never a secret), beside
the deployment's ledger. Only a tick of ``autoscale_octopus_workers`` holding the deployment's lease writes it:

* ``target`` — the fleet size the scaler chose (``None`` until it first acts). While it is set **the scaler owns
  the count**: a share run (the daily one included) builds this many (:func:`owned_count`), so the daily rebuild
  never undoes a scaling decision. Delete the Variable (with the scaler paused) to hand the count back to the
  share DAG's ``instance_count`` param;
* ``leaving`` — the instances the scaler drained and wants removed (``[{"name", "thumbprint"}]``): when the next
  share run lowers the count, it removes exactly these (:func:`victims_for`), never the newest by default;
* ``drain`` — the instance being drained now: ``{"victim": {"name", "thumbprint"}, "since", "reason"}``. Its
  records are disabled in every space; each tick reads its leases twice a poll apart until none holds it;
* ``pending`` — the share run the scaler triggered and waits for: ``{"run_id", "kind": "grow"|"remove",
  "target", "conf", "reason", "at"}``. Its run id is fixed before the trigger, so a tick killed between the
  write and the trigger triggers the same run again next time, and a run that exists is never triggered twice;
* ``unshare`` — spaces taken out of the access policy whose copies of ours are being drained there:
  ``{space_id: {"name", "since", "reads": {record_id: empty reads so far}}}``;
* ``failed_share`` — the last share run the scaler triggered that failed (``{"run_id", "at"}``): the next is
  triggered no sooner than :data:`octopus.scaler.RETRY_FAILED_SHARE_MINUTES` after it;
* ``reenable`` — a victim whose drain was cancelled (demand came back), until its records are enabled again;
* ``idle`` — per instance, since when no lease in any space has held it (ISO 8601, UTC);
* ``memory`` — the decision rule's own state (:class:`octopus.autoscale.ScalerMemory`, JSON);
* ``last`` — the last tick's line (demand, target, action, why), for the operator.

Every step of a tick is idempotent against this document plus what Octopus shows (see :mod:`octopus.scaler`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from octopus.errors import SharingError
from octopus.ledger import LedgerStore, Signer, ledger_key

STATE_VERSION = 1
SCALER_DAG_ID = "autoscale_octopus_workers"
SHARE_DAG_ID = "share_octopus_workers"
#: The Asset alias the scaler emits size changes through (``octopus://<server>/shared-workers/<prefix>/size``).
SIZE_ASSET_ALIAS = "octopus-shared-workers-size"


class Victim(TypedDict):
    name: str
    thumbprint: str


class ScalerDoc(TypedDict, total=False):
    version: int
    prefix: str
    cloud: str
    target: int | None
    leaving: list[Victim]
    drain: dict[str, Any] | None
    pending: dict[str, Any] | None
    unshare: dict[str, dict[str, Any]]
    reenable: Victim | None
    failed_share: dict[str, Any] | None
    idle: dict[str, str]
    memory: dict[str, Any]
    last: dict[str, Any] | None


def state_key(prefix: str, cloud: str) -> str:
    """The scaler's Variable of a deployment (prefixes hold no dot: it never collides with a ledger or ticket)."""
    return f"{ledger_key(prefix, cloud)}.scaler"


def empty(prefix: str, cloud: str) -> ScalerDoc:
    return {
        "version": STATE_VERSION,
        "prefix": prefix,
        "cloud": cloud,
        "target": None,
        "leaving": [],
        "drain": None,
        "pending": None,
        "unshare": {},
        "reenable": None,
        "failed_share": None,
        "idle": {},
        "memory": {},
        "last": None,
    }


class ScalerStateError(SharingError):
    """The scaler's Variable is not one this package wrote for that deployment (bad input: no retry helps)."""


def load(store: LedgerStore, prefix: str, cloud: str) -> ScalerDoc:
    """The deployment's scaler state (an empty one when the Variable does not exist)."""
    raw = store.load(state_key(prefix, cloud))
    if not raw:
        return empty(prefix, cloud)
    if raw.get("prefix") != prefix or raw.get("cloud") != cloud or raw.get("version") != STATE_VERSION:
        raise ScalerStateError(
            f"Variable {state_key(prefix, cloud)!r} is not the scaler state of deployment ({prefix!r}, {cloud!r}) "
            f"version {STATE_VERSION}: delete it (the scaler starts again from what Octopus shows; re-enable any "
            "worker it left disabled by triggering share_octopus_workers)"
        )
    return {**empty(prefix, cloud), **json.loads(json.dumps(dict(raw)))}  # type: ignore[typeddict-item]


def _handover_fields(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the share DAG acts on (the size it builds, who leaves): sealed, so a Variable editor cannot set them."""
    leaving = sorted(str(v.get("thumbprint") or "").upper() for v in doc.get("leaving") or [])
    return ("scaler", doc["prefix"], doc["cloud"], doc.get("target"), ",".join(leaving))


def save(store: LedgerStore, doc: ScalerDoc, signer: Signer) -> None:
    """Store the state, its hand-over to the share DAG (``target``, ``leaving``) sealed with the connection's key."""
    store.save(state_key(doc["prefix"], doc["cloud"]), {**doc, "mac": signer.seal(*_handover_fields(doc))})


# --------------------------------------------------------------------------- what the share DAG reads


def owned_count(doc: Mapping[str, Any] | None, default: int) -> int:
    """The fleet size a share run builds: the scaler's ``target`` while it owns the count, else ``default``."""
    target = (doc or {}).get("target")
    return default if target is None else int(target)


def victims_for(doc: Mapping[str, Any] | None, workers: Sequence[Mapping[str, Any]], keep: int) -> list[dict[str, str]]:
    """The instances that leave when the sealed fleet ``workers`` shrinks to ``keep``: the scaler's drained
    ``leaving`` instances first (only those still in the fleet, matched by thumbprint), then, for any further
    shrink, :func:`octopus.draining.choose_leaving`'s newest-first choice among the others."""
    from octopus.draining import choose_leaving

    if keep >= len(workers):
        return []
    wanted = {str(v.get("thumbprint") or "").upper() for v in (doc or {}).get("leaving") or []}
    chosen = [
        {"name": w["name"], "thumbprint": str(w["thumbprint"]).upper()}
        for w in workers
        if str(w.get("thumbprint") or "").upper() in wanted
    ][: len(workers) - keep]
    picked = {c["thumbprint"] for c in chosen}
    rest = [w for w in workers if str(w.get("thumbprint") or "").upper() not in picked]
    return chosen + choose_leaving(rest, keep) if len(rest) > keep else chosen


def counts_for(
    prefix: str, counts: Mapping[str, int], signer: Signer, store: LedgerStore | None = None
) -> dict[str, int]:
    """The per-cloud counts a share run builds: ``counts`` (its ``instance_count``), except for every cloud whose
    scaler owns the count (:func:`owned_count`); a requested count the scaler overrides is logged."""
    import logging

    result = {}
    for cloud, count in counts.items():
        result[cloud] = owned_count(read(store, prefix, cloud, signer), int(count))
        if result[cloud] != int(count):
            logging.getLogger(__name__).warning(
                "%s: the scaler (autoscale_octopus_workers) owns the count of deployment %r: building %d, not the "
                "%d requested. Pause the scaler and delete Variable %r to set the count by hand.",
                cloud,
                prefix,
                result[cloud],
                int(count),
                state_key(prefix, cloud),
            )
    return result


def leaving_for(
    prefix: str,
    cloud: str,
    workers: Sequence[Mapping[str, Any]],
    keep: int,
    signer: Signer,
    store: LedgerStore | None = None,
) -> list[dict[str, str]]:
    """:func:`victims_for` with the deployment's scaler state read from its Variable: what a share run removes."""
    return victims_for(read(store, prefix, cloud, signer), workers, keep)


def read(store: LedgerStore | None, prefix: str, cloud: str, signer: Signer) -> ScalerDoc | None:
    """The scaler's state for the share DAG: ``None`` when the scaler never acted for the deployment, or when its
    hand-over is not sealed by the connection's key (edited by hand: ignored, with a warning)."""
    import logging

    from octopus.ledger import VariableStore

    store = store or VariableStore()
    raw = store.load(state_key(prefix, cloud))
    if not raw:
        return None
    doc = load(store, prefix, cloud)
    if not signer.valid(raw.get("mac"), *_handover_fields(doc)):
        logging.getLogger(__name__).warning(
            "%s: Variable %r is not sealed by this connection's key (edited by hand?): its size and victims are "
            "ignored; the share run builds the instance_count param. The scaler seals it again on its next tick.",
            cloud,
            state_key(prefix, cloud),
        )
        return None
    return doc


# --------------------------------------------------------------------------- transitions (pure)


def share_run_id(prefix: str, cloud: str, kind: str, target: int, tick_run_id: str) -> str:
    """The run id of the share run a tick triggers: fixed before the trigger, unique per tick and cloud."""
    import hashlib

    tag = hashlib.sha256(f"{tick_run_id}|{prefix}|{cloud}".encode()).hexdigest()[:10]
    return f"autoscale__{prefix}__{cloud}__{kind}_to_{target}__{tag}"


def share_conf(prefix: str, cloud: str, target: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The conf of a share run that applies ``target``: the same pipeline (Terraform, wait, share) as ever."""
    return {**dict(extra or {}), "clouds": [cloud], "name_prefix": prefix, "instance_count": {cloud: int(target)}}


def with_pending(
    doc: ScalerDoc, *, kind: str, target: int, run_id: str, conf: Mapping[str, Any], reason: str, at: str
) -> ScalerDoc:
    return {
        **doc,
        "target": int(target),
        "pending": {
            "run_id": run_id,
            "kind": kind,
            "target": int(target),
            "conf": dict(conf),
            "reason": reason,
            "at": at,
        },
    }


def after_share(doc: ScalerDoc, state: str, fleet_thumbprints: Sequence[str]) -> tuple[ScalerDoc, str, Victim | None]:
    """The state once the pending share run finished (``state``), a line saying what that means, and the victim
    to re-enable, if any.

    A removal that succeeded and took the victim out of the sealed fleet ends the drain. A victim still in the
    fleet after a successful removal (the share run removed another instance, e.g. a share DAG that does not read
    :func:`victims_for`) is not draining any more: it is returned, for the caller to re-enable. A run that failed
    changes nothing else: the next decision is taken again from what Octopus shows.
    """
    pending = doc.get("pending") or {}
    fleet = {t.upper() for t in fleet_thumbprints}
    done: ScalerDoc = {**doc, "pending": None}
    run = pending.get("run_id")
    if state != "success":
        return done, f"share run {run!r} ended {state}: deciding again from what Octopus shows", None
    if pending.get("kind") != "remove":
        return done, f"share run {run!r} applied target {pending.get('target')}", None
    done["leaving"] = [v for v in doc.get("leaving") or [] if str(v.get("thumbprint", "")).upper() in fleet]
    victim = (doc.get("drain") or {}).get("victim") or None
    done["drain"] = None
    if victim and str(victim.get("thumbprint", "")).upper() in fleet:
        return done, f"share run {run!r} removed another instance; {victim.get('name')!r} stays: re-enabling it", victim
    return done, f"share run {run!r} removed {(victim or {}).get('name')!r}: drain finished", None
