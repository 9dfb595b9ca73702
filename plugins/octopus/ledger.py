"""The deployment ledger: what a deployment (``name_prefix``, cloud) owns, where it wrote, and who runs it now.

One Airflow Variable per deployment, ``octopus_workers.<prefix>.<cloud>`` (JSON, never a secret), so every
worker of a multi-machine Airflow reads the same facts from the metadata database:

* ``owned`` — the **evidence**: every endpoint (certificate thumbprint) one of this deployment's fleets
  registered, each entry sealed with an HMAC whose key only the Octopus connection holds (:class:`Signer`). A
  polling record is ours only when it carries the thumbprint of a sealed entry: only our own instances hold
  that certificate, so such a record can only ever run on our machine, whatever its name. Entries that fail
  verification (typed in by a Variable editor, copied from another environment, or left by an older version)
  move to ``unverified``: never acted on, reported by every run;
* ``fleet`` — the last registered fleet, sealed: its ``generation`` (a cleared task of an older run carries a
  lower one and refuses to replay it) and per worker name, thumbprint, ``poll://`` URI and instance id;
* ``spaces`` — every space a run of the deployment planned to write to (recorded *before* the writes) and the
  pool it used there: the places a record of ours may exist. A space leaves only when a read of it found none
  of our records, so nothing that may exist is forgotten;
* ``initial_space`` — pinned on first use; discovery never moves it silently;
* ``epoch`` — the run that claimed the deployment last: every writing task of an older run refuses.

**The lease** is not in this Variable: each task that writes takes a *ticket* (Lamport's bakery algorithm over
one Variable per task, ``octopus_workers.<prefix>.<cloud>.lease.<id>``), so two runs can never both hold a
deployment, however late a write lands — no settle delay, no read-back race (see :func:`claim`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypedDict

from octopus.errors import LeaseHeldError, SharingError

log = logging.getLogger(__name__)

LEDGER_VERSION = 2
ACTIVE_RUN_STATES = frozenset({"queued", "running"})
#: How long a run waits for another run of the same deployment before it fails naming that run.
CLAIM_TIMEOUT_SECONDS = 60 * 60
#: How long a writing task waits for a contender that is choosing its ticket (a few Variable writes).
CHOOSING_WAIT_SECONDS = 30.0
#: What derives the evidence key from the connection's secret: a new version never accepts an older seal.
EVIDENCE_CONTEXT = b"octopus-shared-workers/evidence/v2"


#: Another run holds the deployment, or a newer run has written since: this task writes nothing.
LeaseError = LeaseHeldError


class OwnedEntry(TypedDict):
    thumbprint: str
    name: str
    mac: str


class LedgerDoc(TypedDict, total=False):
    version: int
    prefix: str
    cloud: str
    initial_space: dict[str, Any] | None
    fleet: dict[str, Any] | None  # {"generation", "dag_id", "run_id", "workers": [...], "mac"}
    owned: list[OwnedEntry]
    unverified: list[dict[str, Any]]
    spaces: dict[str, dict[str, Any]]  # space id -> {"name", "pool_id"}
    epoch: dict[str, Any] | None  # {"number", "dag_id", "run_id"}


class LedgerStore(Protocol):
    def load(self, key: str) -> Mapping[str, Any] | None: ...

    def save(self, key: str, doc: Mapping[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


class VariableStore:
    """Ledgers and lease tickets in Airflow Variables (the metadata database): what the DAG tasks use."""

    def load(self, key: str) -> Mapping[str, Any] | None:
        from airflow.sdk import Variable

        return Variable.get(key, default=None, deserialize_json=True)

    def save(self, key: str, doc: Mapping[str, Any]) -> None:
        from airflow.sdk import Variable

        Variable.set(key, dict(doc), serialize_json=True, description="octopus-shared-workers ledger (no secret)")

    def delete(self, key: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(key)

    def keys(self, prefix: str) -> list[str]:
        from airflow.sdk import Variable

        return list(Variable.keys(prefix=prefix))


class MemoryStore:
    """Ledgers in a dict: for benchmarks and unit tests that run the package without Airflow."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> Mapping[str, Any] | None:
        doc = self.docs.get(key)
        return None if doc is None else _copy(doc)

    def save(self, key: str, doc: Mapping[str, Any]) -> None:
        self.docs[key] = _copy(doc)

    def delete(self, key: str) -> None:
        self.docs.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.docs if k.startswith(prefix))


def _copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(doc))


# --------------------------------------------------------------------------- the evidence key


class Signer:
    """Seals and verifies evidence with a key derived from a secret only the Octopus connection holds.

    The secret is the connection's ``evidence_secret`` extra when set (so rotating the API key keeps the
    evidence), else its API key. Whoever can edit Airflow Variables but not that connection cannot make a
    seal; a sealed entry moved to another deployment (prefix, cloud) or kind does not verify there.
    """

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not raw.strip():
            raise ValueError("the evidence key is empty: the Octopus connection needs an API key")
        self._key = hmac.new(raw, EVIDENCE_CONTEXT, hashlib.sha256).digest()

    def seal(self, *fields: Any) -> str:
        return hmac.new(self._key, json.dumps(fields, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()

    def valid(self, mac: Any, *fields: Any) -> bool:
        return isinstance(mac, str) and hmac.compare_digest(mac, self.seal(*fields))


def owned_entry(signer: Signer, prefix: str, cloud: str, thumbprint: str, name: str) -> OwnedEntry:
    thumbprint = thumbprint.upper()
    return {"thumbprint": thumbprint, "name": name, "mac": signer.seal("owned", prefix, cloud, thumbprint)}


def _fleet_fields(prefix: str, cloud: str, fleet: Mapping[str, Any]) -> tuple[Any, ...]:
    workers = [
        [w.get("name", ""), str(w.get("thumbprint", "")).upper(), w.get("uri", ""), w.get("instance_id", "")]
        for w in fleet.get("workers") or []
    ]
    return ("fleet", prefix, cloud, int(fleet.get("generation") or 0), fleet.get("run_id", ""), workers)


def seal_fleet(signer: Signer, prefix: str, cloud: str, fleet: Mapping[str, Any]) -> dict[str, Any]:
    return {**fleet, "mac": signer.seal(*_fleet_fields(prefix, cloud, fleet))}


def fleet_is_valid(signer: Signer, prefix: str, cloud: str, fleet: Mapping[str, Any] | None) -> bool:
    return bool(fleet) and signer.valid(fleet.get("mac"), *_fleet_fields(prefix, cloud, fleet))


# --------------------------------------------------------------------------- the ledger document


def ledger_key(prefix: str, cloud: str) -> str:
    """The Variable key of a deployment (a prefix holds no dot, so keys never collide)."""
    return f"octopus_workers.{prefix}.{cloud}"


def empty(prefix: str, cloud: str) -> LedgerDoc:
    return {
        "version": LEDGER_VERSION,
        "prefix": prefix,
        "cloud": cloud,
        "initial_space": None,
        "fleet": None,
        "owned": [],
        "unverified": [],
        "spaces": {},
        "epoch": None,
    }


def load(store: LedgerStore, prefix: str, cloud: str) -> LedgerDoc:
    """The deployment's ledger as stored (verify it with :func:`verified` before acting on ``owned``).

    A version-1 ledger (before the evidence was sealed) is read with every entry unverified: nothing in it can
    be told apart from a Variable editor's, so it is reported, never acted on (the current fleet is owned
    again as soon as it registers; older copies can be adopted, see ``docs/ownership.md``).
    """
    doc = store.load(ledger_key(prefix, cloud))
    if not doc:
        return empty(prefix, cloud)
    if doc.get("prefix") != prefix or doc.get("cloud") != cloud or doc.get("version") not in (1, LEDGER_VERSION):
        raise SharingError(
            f"Variable {ledger_key(prefix, cloud)!r} is not a ledger of deployment ({prefix!r}, {cloud!r}): "
            "restore it, or delete it (the deployment then re-adopts its current fleet when it registers, and "
            "leaves older copies alone until you adopt them)"
        )
    if doc.get("version") == 1:
        legacy = [{**o, "why": "written by version 1 (not sealed)"} for o in doc.get("owned") or []]
        doc = {
            **{k: v for k, v in doc.items() if k not in ("owned", "lease")},
            "version": LEDGER_VERSION,
            "owned": [],
            "unverified": legacy,
        }
    return {**empty(prefix, cloud), **doc}  # type: ignore[typeddict-item]


def save(store: LedgerStore, doc: LedgerDoc) -> None:
    store.save(ledger_key(doc["prefix"], doc["cloud"]), doc)


class Evidence(TypedDict):
    owned: list[OwnedEntry]  # sealed: the only records the deployment may act on
    rejected: list[dict[str, Any]]  # entries that failed verification, with why
    fleet: dict[str, Any] | None  # the last fleet, when its seal holds


def verified(doc: Mapping[str, Any], signer: Signer) -> Evidence:
    """Split the ledger's evidence into what the seal proves and what it does not."""
    prefix, cloud = doc["prefix"], doc["cloud"]
    owned: list[OwnedEntry] = []
    rejected: list[dict[str, Any]] = [dict(u) for u in doc.get("unverified") or []]
    for entry in doc.get("owned") or []:
        thumbprint = str(entry.get("thumbprint") or "").upper()
        if thumbprint and signer.valid(entry.get("mac"), "owned", prefix, cloud, thumbprint):
            owned.append({"thumbprint": thumbprint, "name": str(entry.get("name") or ""), "mac": entry["mac"]})
        else:
            rejected.append({**entry, "why": "seal does not verify (not written by this deployment's key)"})
    fleet = doc.get("fleet")
    if fleet and not fleet_is_valid(signer, prefix, cloud, fleet):
        rejected.append({"fleet_generation": fleet.get("generation"), "why": "fleet record's seal does not verify"})
        fleet = None
    return {"owned": owned, "rejected": rejected, "fleet": dict(fleet) if fleet else None}


def with_verified(doc: LedgerDoc, evidence: Evidence) -> LedgerDoc:
    """``doc`` keeping only sealed evidence; what failed is kept aside in ``unverified`` (never acted on)."""
    unverified = {json.dumps(r, sort_keys=True): r for r in evidence["rejected"] if "thumbprint" in r}
    return {**doc, "owned": list(evidence["owned"]), "unverified": list(unverified.values())}


def describe_rejected(key: str, rejected: Sequence[Mapping[str, Any]]) -> str:
    names = ", ".join(
        f"{r.get('name') or '?'} ({str(r.get('thumbprint') or '')[:8]}…)" if "thumbprint" in r else "fleet record"
        for r in rejected
    )
    return (
        f"IGNORED {len(rejected)} entr{'y' if len(rejected) == 1 else 'ies'} of ledger {key!r} that the "
        f"connection's key did not seal: {names}. They are never acted on. If a Variable editor or an import "
        "put them there, remove them; if they are this deployment's own older copies, adopt them (see "
        "docs/ownership.md, 'Adopting records')."
    )


def add_spaces(doc: LedgerDoc, spaces: Iterable[Mapping[str, Any]]) -> LedgerDoc:
    """``doc`` with ``spaces`` (``{"id", "name", "pool_id"}``) recorded as places our records may be."""
    known = {k: dict(v) for k, v in (doc.get("spaces") or {}).items()}
    for space in spaces:
        entry = known.setdefault(space["id"], {})
        entry["name"] = space["name"]
        if space.get("pool_id"):
            entry["pool_id"] = space["pool_id"]
    return {**doc, "spaces": known}


# --------------------------------------------------------------------------- fleet records


def previous_fleet(doc: Mapping[str, Any]) -> list[dict[str, str]] | None:
    """The last recorded fleet as the wait compares it: ``[{"name", "thumbprint", "instance_id"}]``.

    ``None`` when the ledger holds no fleet at all (first use, or the Variable was lost). Its seal is not
    required here: it only decides which records the wait *counts* (a replaced instance must re-register);
    what the package may act on comes from the sealed evidence alone.
    """
    fleet = doc.get("fleet")
    if fleet is None:
        return None
    return [
        {"name": w["name"], "thumbprint": w["thumbprint"], "instance_id": w.get("instance_id", "")}
        for w in fleet.get("workers", [])
    ]


def record_fleet(
    doc: LedgerDoc, workers: Sequence[Mapping[str, str]], me: Mapping[str, str], signer: Signer
) -> LedgerDoc:
    """The ledger after this run registered ``workers``: a new sealed generation, each endpoint owned from now on."""
    prefix, cloud = doc["prefix"], doc["cloud"]
    evidence = verified(doc, signer)
    generation = int((doc.get("fleet") or {}).get("generation") or 0) + 1
    owned = {o["thumbprint"]: o for o in evidence["owned"]}
    for worker in workers:
        thumbprint = worker["thumbprint"].upper()
        owned.setdefault(thumbprint, owned_entry(signer, prefix, cloud, thumbprint, worker["name"]))
    fleet = seal_fleet(
        signer,
        prefix,
        cloud,
        {
            "generation": generation,
            "dag_id": me["dag_id"],
            "run_id": me["run_id"],
            "workers": [dict(w) for w in workers],
        },
    )
    kept = with_verified(doc, evidence)
    return {**kept, "fleet": fleet, "owned": sorted(owned.values(), key=lambda o: (o["name"], o["thumbprint"]))}


def adopt(doc: LedgerDoc, records: Sequence[Mapping[str, str]], signer: Signer) -> LedgerDoc:
    """``doc`` owning ``records`` (``{"name", "thumbprint"}``) too: the explicit adoption of older copies."""
    evidence = verified(doc, signer)
    owned = {o["thumbprint"]: o for o in evidence["owned"]}
    for record in records:
        thumbprint = record["thumbprint"].upper()
        owned.setdefault(thumbprint, owned_entry(signer, doc["prefix"], doc["cloud"], thumbprint, record["name"]))
    adopted = {r["thumbprint"].upper() for r in records}
    kept = with_verified(doc, evidence)
    kept["unverified"] = [u for u in kept["unverified"] if str(u.get("thumbprint", "")).upper() not in adopted]
    return {**kept, "owned": sorted(owned.values(), key=lambda o: (o["name"], o["thumbprint"]))}


def forget(doc: LedgerDoc, *, thumbprints: Iterable[str] = (), space_ids: Iterable[str] = ()) -> LedgerDoc:
    """``doc`` without the owned ``thumbprints`` and the recorded ``space_ids`` (proven gone by a full read)."""
    gone = {t.upper() for t in thumbprints}
    spaces = set(space_ids)
    return {
        **doc,
        "owned": [o for o in doc.get("owned") or [] if str(o.get("thumbprint", "")).upper() not in gone],
        "spaces": {k: v for k, v in (doc.get("spaces") or {}).items() if k not in spaces},
    }


# --------------------------------------------------------------------------- the lease (bakery tickets)

RunState = Callable[[str, str], "str | None"]


def describe(lease: Mapping[str, Any]) -> str:
    return f"run {lease['run_id']!r} of DAG {lease['dag_id']!r}"


def ticket_prefix(prefix: str, cloud: str) -> str:
    return f"{ledger_key(prefix, cloud)}.lease."


def ticket_key(prefix: str, cloud: str, me: Mapping[str, str]) -> str:
    """One ticket per task instance (and cloud): tasks of one run never overwrite each other's."""
    who = "|".join((me["dag_id"], me["run_id"], me.get("task", "")))
    return ticket_prefix(prefix, cloud) + hashlib.sha256(who.encode()).hexdigest()[:20]


def _same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (a.get("dag_id"), a.get("run_id")) == (b.get("dag_id"), b.get("run_id"))


def _tickets(store: LedgerStore, prefix: str, clouds: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for cloud in clouds:
        for key in store.keys(ticket_prefix(prefix, cloud)):
            value = store.load(key)
            if isinstance(value, Mapping) and value.get("dag_id") and value.get("run_id"):
                found[key] = {**value, "cloud": cloud}
    return found


def _order(key: str, ticket: Mapping[str, Any]) -> tuple[int, str, str]:
    # Tickets of one run share their run's order: the run, not the task, holds the deployment.
    return (int(ticket.get("number") or 0), ticket["dag_id"], ticket["run_id"])


class _Contest:
    """One read of every ticket of the deployments a task writes for, judged for run ``me``."""

    def __init__(self, store: LedgerStore, prefix: str, clouds: Sequence[str], me: Mapping[str, str], run_state):
        self.store, self.me = store, me
        self.mine: dict[str, dict[str, Any]] = {}
        self.others: dict[str, dict[str, Any]] = {}
        states: dict[tuple[str, str], str | None] = {}
        for key, ticket in _tickets(store, prefix, clouds).items():
            if _same_run(ticket, me):
                self.mine[key] = ticket
                continue
            run = (ticket["dag_id"], ticket["run_id"])
            if run not in states:
                states[run] = run_state(*run)
            if (states[run] or "") in ACTIVE_RUN_STATES:
                self.others[key] = ticket
            else:
                store.delete(key)  # a finished run holds nothing: tidy its ticket

    def choosing(self) -> list[dict[str, Any]]:
        return [t for t in self.others.values() if t.get("choosing")]

    def highest(self) -> int:
        return max((int(t.get("number") or 0) for t in [*self.others.values(), *self.mine.values()]), default=0)

    def ahead_of(self, number: int) -> dict[str, Any] | None:
        """The first other run whose ticket comes before ``number`` (ours), if any."""
        mine = (number, self.me["dag_id"], self.me["run_id"])
        ahead = [t for k, t in self.others.items() if not t.get("choosing") and t.get("number") and _order(k, t) < mine]
        return min(ahead, key=lambda t: _order("", t)) if ahead else None


def _my_number(contest: _Contest) -> int | None:
    numbers = [int(t["number"]) for t in contest.mine.values() if t.get("number") and not t.get("choosing")]
    return min(numbers) if numbers else None


def take_ticket(
    store: LedgerStore, prefix: str, clouds: Sequence[str], me: Mapping[str, str], run_state: RunState
) -> int:
    """Bakery doorway: announce choosing, take 1 + the highest ticket seen, publish it (one per cloud).

    A run that already holds a ticket keeps its number (its tasks join it); every cloud gets the same number,
    so runs wanting overlapping clouds are ordered the same way on each and never wait for each other in a
    circle.
    """
    clouds = sorted(set(clouds))
    keys = [ticket_key(prefix, cloud, me) for cloud in clouds]
    ticket = {"dag_id": me["dag_id"], "run_id": me["run_id"], "task": me.get("task", ""), "since": time.time()}
    for key in keys:  # the doorway: a contender reading now waits for our number instead of overtaking us
        store.save(key, {**ticket, "choosing": True, "number": 0})
    contest = _Contest(store, prefix, clouds, me, run_state)
    number = _my_number(contest) or contest.highest() + 1
    for key in keys:
        store.save(key, {**ticket, "choosing": False, "number": number})
    return number


def contest(
    store: LedgerStore, prefix: str, clouds: Sequence[str], me: Mapping[str, str], run_state: RunState
) -> str | None:
    """Whether run ``me`` holds every deployment of ``clouds`` now: ``None``, or a line naming who is ahead.

    Run ``me`` holds when its ticket comes first among the tickets of every queued or running run (Lamport's
    bakery: a contender still choosing its number is waited for, never overtaken). Tickets of runs that have
    finished are free and tidied away.
    """
    clouds = sorted(set(clouds))
    state = _Contest(store, prefix, clouds, me, run_state)
    number = _my_number(state)
    if number is None or {t["cloud"] for t in state.mine.values() if not t.get("choosing")} != set(clouds):
        return f"run {me['run_id']!r} holds no ticket for every one of {', '.join(clouds)}"
    choosing = state.choosing()
    if choosing:
        return f"{describe(choosing[0])} is choosing its ticket"
    ahead = state.ahead_of(number)
    if ahead is not None:
        return f"deployment ({prefix!r}, {ahead['cloud']!r}) is held by {describe(ahead)}"
    return None


def claim(
    store: LedgerStore, prefix: str, clouds: Sequence[str], me: Mapping[str, str], run_state: RunState
) -> str | None:
    """One try of run ``me`` (``{"dag_id", "run_id", "task"}``) to hold every deployment (``prefix``, cloud).

    Takes a ticket on the first try and keeps it, so runs are served first come, first served. Returns
    ``None`` when this run holds them all (and records it as the deployments' latest writer, see
    :func:`check_fence`), else a line naming the run it waits for (the caller tries again later).
    """
    clouds = sorted(set(clouds))
    if _my_number(_Contest(store, prefix, clouds, me, run_state)) is None:
        take_ticket(store, prefix, clouds, me, run_state)
    waiting = contest(store, prefix, clouds, me, run_state)
    if waiting:
        return waiting
    for cloud in clouds:
        doc = load(store, prefix, cloud)
        epoch = doc.get("epoch") or {}
        if not _same_run(epoch, me):
            number = int(epoch.get("number") or 0) + 1
            save(store, {**doc, "epoch": {"number": number, "dag_id": me["dag_id"], "run_id": me["run_id"]}})
    return None


def release(store: LedgerStore, prefix: str, clouds: Sequence[str], me: Mapping[str, str]) -> None:
    """Drop every ticket of run ``me`` (others' are left as they are)."""
    for cloud in sorted(set(clouds)):
        for key in store.keys(ticket_prefix(prefix, cloud)):
            ticket = store.load(key)
            if isinstance(ticket, Mapping) and _same_run(ticket, me):
                store.delete(key)


def check_fence(
    store: LedgerStore,
    prefix: str,
    cloud: str,
    me: Mapping[str, str],
    run_state: RunState,
    *,
    generation: int | None = None,
    wait: float = CHOOSING_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> LedgerDoc:
    """Before a task's first write: run ``me`` holds the deployment now, and no newer run has written since.

    A task of a run whose tickets were released (a task cleared after the run's summary) takes a ticket again,
    atomically; it refuses when another active run comes first, when a later run claimed the deployment since
    (the ``epoch``), or when ``generation`` (the fleet this run registered) is older than the ledger's.
    Returns the ledger, read after the lease was confirmed (only the holder writes it).
    """
    deployment = f"({prefix!r}, {cloud!r})"
    state = _Contest(store, prefix, [cloud], me, run_state)
    if _my_number(state) is None:
        take_ticket(store, prefix, [cloud], me, run_state)
    deadline = time.monotonic() + wait
    while True:
        waiting = contest(store, prefix, [cloud], me, run_state)
        if waiting is None or "choosing" not in waiting or time.monotonic() >= deadline:
            break
        sleep(0.2)
    if waiting:
        raise LeaseError(
            f"deployment {deployment}: {waiting}. This task writes nothing while it runs; clear it again once "
            "that run has finished."
        )
    doc = load(store, prefix, cloud)
    epoch = doc.get("epoch")
    if epoch and not _same_run(epoch, me):
        raise LeaseError(
            f"deployment {deployment} was claimed by a newer run, {describe(epoch)}, after this one: this task of "
            "an older run writes nothing. Trigger a new run instead of clearing tasks of an old one."
        )
    current = (doc.get("fleet") or {}).get("generation")
    if generation is not None and current is not None and generation < current:
        fleet = doc["fleet"]
        raise LeaseError(
            f"this run's {cloud} fleet (generation {generation}) is older than the current one (generation "
            f"{current}, registered by run {fleet.get('run_id')!r}): refusing to replay it. Trigger a new run "
            "instead of clearing tasks of an old one."
        )
    return doc


# --------------------------------------------------------------------------- evidence for a share


class EvidenceError(Exception):
    """The ledger cannot prove what a task needs (its fleet record's seal does not verify): nothing is written."""


def fleets_for_share(
    ready: Sequence[Mapping[str, Any]], docs: Mapping[str, Mapping[str, Any]], signer: Signer, *, dry_run: bool
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The ready fleets as a share plans them, their evidence taken from the ledgers (``docs``), verified.

    The XCom of ``wait_for_workers`` says which generation this run registered; what the share acts on — the
    workers and every owned endpoint — comes from the sealed ledger, never from the XCom or an unsealed entry.
    Returns the fleets and, per cloud, the evidence that failed verification (never acted on).
    Raises :class:`EvidenceError` when a fleet this run registered has no verified record (not in a dry run,
    whose wait records nothing).
    """
    fleets: list[dict[str, Any]] = []
    rejected: dict[str, list[dict[str, Any]]] = {}
    for fleet in ready:
        cloud = fleet["cloud"]
        doc = docs.get(cloud)
        if doc is None:
            continue
        evidence = verified(doc, signer)
        if evidence["rejected"]:
            rejected[cloud] = evidence["rejected"]
        workers = [{"name": w["name"], "thumbprint": w["thumbprint"], "uri": w["uri"]} for w in fleet["workers"]]
        if not dry_run:
            sealed = evidence["fleet"]
            if sealed is None or int(sealed.get("generation") or 0) != int(fleet.get("generation") or 0):
                raise EvidenceError(
                    f"the {cloud} fleet this run registered (generation {fleet.get('generation')}) has no record in "
                    f"ledger {ledger_key(doc['prefix'], cloud)!r} whose seal verifies: it was edited or replaced "
                    "outside the package. Nothing was written. Trigger a new run (its wait records the fleet again)."
                )
            workers = [{"name": w["name"], "thumbprint": w["thumbprint"], "uri": w["uri"]} for w in sealed["workers"]]
        # The wait's mark of a rebuild's outdated instances only restrains the share (nothing added or re-enabled
        # for them), so it may come from XCom.
        leaving = {str(w["thumbprint"]).upper() for w in fleet["workers"] if w.get("leaving")}
        workers = [{**w, "leaving": True} if str(w["thumbprint"]).upper() in leaving else w for w in workers]
        fleets.append({**fleet, "workers": workers, "owned": list(evidence["owned"])})
    return fleets, rejected
