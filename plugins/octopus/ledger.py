"""The deployment ledger: what a deployment (``name_prefix``, cloud) has registered, where, and who runs it now.

One Airflow Variable per deployment, ``octopus_workers.<prefix>.<cloud>`` (JSON, never a secret), so every
worker of a multi-machine Airflow reads the same facts from the metadata database:

* ``initial_space`` — pinned on first use; discovery never moves it silently;
* ``fleet`` — the last registered fleet and its ``generation`` (a counter; a cleared task of an older run
  carries a lower one and refuses to replay it);
* ``owned`` — every (name, thumbprint) this deployment's fleets registered: the proof that a record is ours,
  and so the only records it may delete, disable, re-point or unshare;
* ``lease`` — the run that holds the deployment now: runs of both DAGs (backfills included) never overlap.

Writers are serialised by the lease: only the run holding it writes the ledger. The lease itself is taken by
write-then-confirm (see :func:`claim`), and every writing task checks it again before its first write
(:func:`check_fence`), so a run that lost it stops before touching Octopus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypedDict

from octopus.sharing import SharingError

log = logging.getLogger(__name__)

LEDGER_VERSION = 1
ACTIVE_RUN_STATES = frozenset({"queued", "running"})
#: Seconds between writing a lease and reading it back: a contender that read the lease as free before our
#: write must have written its own by then, and one of the two then sees the other's and backs off.
CLAIM_SETTLE_SECONDS = 1.0
#: How long a run waits for another run of the same deployment before it fails naming that run.
CLAIM_TIMEOUT_SECONDS = 60 * 60


class Lease(TypedDict):
    dag_id: str
    run_id: str
    since: float


class LedgerDoc(TypedDict, total=False):
    version: int
    prefix: str
    cloud: str
    initial_space: dict[str, Any] | None
    fleet: (
        dict[str, Any] | None
    )  # {"generation", "dag_id", "run_id", "workers": [{name, thumbprint, uri, instance_id}]}
    owned: list[dict[str, str]]  # [{"name", "thumbprint"}]
    lease: Lease | None


class LedgerStore(Protocol):
    def load(self, key: str) -> Mapping[str, Any] | None: ...

    def save(self, key: str, doc: Mapping[str, Any]) -> None: ...


class VariableStore:
    """Ledgers in Airflow Variables (the metadata database): what the DAG tasks use."""

    def load(self, key: str) -> Mapping[str, Any] | None:
        from airflow.sdk import Variable

        return Variable.get(key, default=None, deserialize_json=True)

    def save(self, key: str, doc: Mapping[str, Any]) -> None:
        from airflow.sdk import Variable

        Variable.set(key, dict(doc), serialize_json=True, description="octopus-shared-workers ledger (no secret)")


class MemoryStore:
    """Ledgers in a dict: for benchmarks and unit tests that run the package without Airflow."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> Mapping[str, Any] | None:
        doc = self.docs.get(key)
        return None if doc is None else _copy(doc)

    def save(self, key: str, doc: Mapping[str, Any]) -> None:
        self.docs[key] = _copy(doc)


def _copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(doc))


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
        "lease": None,
    }


def load(store: LedgerStore, prefix: str, cloud: str) -> LedgerDoc:
    doc = store.load(ledger_key(prefix, cloud))
    if not doc:
        return empty(prefix, cloud)
    if doc.get("version") != LEDGER_VERSION or doc.get("prefix") != prefix or doc.get("cloud") != cloud:
        raise SharingError(
            f"Variable {ledger_key(prefix, cloud)!r} is not a version-{LEDGER_VERSION} ledger of deployment "
            f"({prefix!r}, {cloud!r}): restore it, or delete it to start the deployment's ownership afresh "
            "(its existing copies then count as foreign and are left alone)"
        )
    return {**empty(prefix, cloud), **doc}  # type: ignore[typeddict-item]


def save(store: LedgerStore, doc: LedgerDoc) -> None:
    store.save(ledger_key(doc["prefix"], doc["cloud"]), doc)


# --------------------------------------------------------------------------- the lease


RunState = Callable[[str, str], "str | None"]


def _holder_active(lease: Mapping[str, Any] | None, me: Mapping[str, str], run_state: RunState) -> bool:
    if not lease or (lease["dag_id"], lease["run_id"]) == (me["dag_id"], me["run_id"]):
        return False
    return (run_state(lease["dag_id"], lease["run_id"]) or "") in ACTIVE_RUN_STATES


def describe(lease: Mapping[str, Any]) -> str:
    return f"run {lease['run_id']!r} of DAG {lease['dag_id']!r}"


def claim(
    store: LedgerStore,
    prefix: str,
    clouds: Sequence[str],
    me: Mapping[str, str],
    run_state: RunState,
    *,
    settle: float = CLAIM_SETTLE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Take the lease of every deployment (``prefix``, cloud) for run ``me`` (``{"dag_id", "run_id"}``).

    Returns ``None`` when this run holds them all, else a line naming the run it met (the caller waits and
    tries again). A lease whose run is no longer queued or running is free. All or nothing: a run that meets
    another releases what it took, so two runs wanting overlapping clouds never hold each other up.
    """
    docs = {cloud: load(store, prefix, cloud) for cloud in sorted(clouds)}
    for cloud, doc in docs.items():
        if _holder_active(doc.get("lease"), me, run_state):
            return f"deployment ({prefix!r}, {cloud!r}) is held by {describe(doc['lease'])}"
    lease: Lease = {"dag_id": me["dag_id"], "run_id": me["run_id"], "since": time.time()}
    for doc in docs.values():
        if doc.get("lease") != lease:
            save(store, {**doc, "lease": lease})
    sleep(settle)
    for cloud in docs:
        held = load(store, prefix, cloud).get("lease")
        if not held or (held["dag_id"], held["run_id"]) != (me["dag_id"], me["run_id"]):
            release(store, prefix, clouds, me)
            return f"deployment ({prefix!r}, {cloud!r}) was claimed at the same time by {describe(held or lease)}"
    return None


def release(store: LedgerStore, prefix: str, clouds: Sequence[str], me: Mapping[str, str]) -> None:
    """Give up the leases this run holds (others' are left as they are)."""
    for cloud in sorted(clouds):
        doc = load(store, prefix, cloud)
        lease = doc.get("lease")
        if lease and (lease["dag_id"], lease["run_id"]) == (me["dag_id"], me["run_id"]):
            save(store, {**doc, "lease": None})


def check_fence(
    doc: Mapping[str, Any], me: Mapping[str, str], run_state: RunState, *, generation: int | None = None
) -> None:
    """Before a task's first write: this run may still write for the deployment ``doc`` describes.

    Refuses when another active run holds the deployment, and when ``generation`` (the fleet this run
    registered) is older than the ledger's: a cleared task of an older run must not replay yesterday's fleet.
    """
    deployment = f"({doc['prefix']!r}, {doc['cloud']!r})"
    if _holder_active(doc.get("lease"), me, run_state):
        raise SharingError(
            f"deployment {deployment} is held by {describe(doc['lease'])}: this run writes nothing while it "
            "runs. Clear this task again once that run has finished."
        )
    current = (doc.get("fleet") or {}).get("generation")
    if generation is not None and current is not None and generation < current:
        fleet = doc["fleet"]
        raise SharingError(
            f"this run's {doc['cloud']} fleet (generation {generation}) is older than the current one (generation "
            f"{current}, registered by run {fleet.get('run_id')!r}): refusing to replay it. Trigger a new run "
            "instead of clearing tasks of an old one."
        )


# --------------------------------------------------------------------------- fleet records


def previous_fleet(doc: Mapping[str, Any]) -> list[dict[str, str]]:
    """The last registered fleet as the wait compares it: ``[{"name", "thumbprint", "instance_id"}]``."""
    return [
        {"name": w["name"], "thumbprint": w["thumbprint"], "instance_id": w.get("instance_id", "")}
        for w in (doc.get("fleet") or {}).get("workers", [])
    ]


def record_fleet(doc: LedgerDoc, workers: Sequence[Mapping[str, str]], me: Mapping[str, str]) -> LedgerDoc:
    """The ledger after this run registered ``workers``: a new generation, each worker owned from now on."""
    generation = int((doc.get("fleet") or {}).get("generation") or 0) + 1
    owned = {(o["name"].casefold(), o["thumbprint"].upper()): o for o in doc.get("owned") or []}
    for worker in workers:
        owned.setdefault(
            (worker["name"].casefold(), worker["thumbprint"].upper()),
            {"name": worker["name"], "thumbprint": worker["thumbprint"].upper()},
        )
    fleet = {
        "generation": generation,
        "dag_id": me["dag_id"],
        "run_id": me["run_id"],
        "workers": [dict(w) for w in workers],
    }
    return {**doc, "fleet": fleet, "owned": sorted(owned.values(), key=lambda o: (o["name"], o["thumbprint"]))}
