"""Bodies of the DAGs' Python tasks: glue between Airflow's context, :class:`OctopusHook` and the pure decisions.

The DAG files only wire; these functions run inside the tasks (nothing here runs at DAG parse time).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from octopus import access_policy, ledger, operations, scaler_state, settings
from octopus.errors import ForeignRecordError
from octopus.exceptions import OctopusError
from octopus.hooks import OctopusHook
from octopus.sharing import (
    ASSET_ALIAS,
    DEFAULT_INSTANCE_COUNT,
    DEFAULT_NAME_PREFIX,
    DEFAULT_POOL_NAME_TEMPLATE,
    SharingError,
    compact_evidence,
    format_table,
    spaces_to_visit,
)
from octopus.sharing import summarize as summarize_results
from octopus.wiring import RetireUpstream, ShareUpstream

log = logging.getLogger(__name__)

SPACE_RESULT_KEY = "space_result"


def run_state(dag_id: str, run_id: str) -> str | None:
    """A DAG run's state through the Task SDK (``None`` when it does not exist)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    try:
        state = RuntimeTaskInstance.get_dagrun_state(dag_id, run_id)
    except Exception:  # a deleted run holds nothing
        log.info("Run %s of %s not found: its lease is free", run_id, dag_id)
        return None
    # The Task SDK's DagRunState enum has no __str__: str() would give "DagRunState.RUNNING", never "running".
    return str(getattr(state, "value", state))


def this_run(context: Mapping[str, Any]) -> dict[str, str]:
    """The run (and the task instance, for its own lease ticket) a task writes for."""
    ti = context.get("ti")
    task = f"{ti.task_id}[{ti.map_index}]" if ti is not None else ""
    return {"dag_id": context["dag"].dag_id, "run_id": context["run_id"], "task": task}


def prefix_of(params: Mapping[str, Any]) -> str:
    return params.get("name_prefix") or DEFAULT_NAME_PREFIX


def claim_deployments(context: Mapping[str, Any], store: ledger.LedgerStore | None = None) -> str | None:
    """One poke of ``claim_deployment``: ``None`` once this run holds every deployment it writes for."""
    params = context["params"]
    with fail_fast_on_bad_input():
        from octopus.sharing import validate_prefix

        prefix = validate_prefix(prefix_of(params))
        return ledger.claim(store or ledger.VariableStore(), prefix, params["clouds"], this_run(context), run_state)


def release_deployments(context: Mapping[str, Any], store: ledger.LedgerStore) -> None:
    params = context["params"]
    ledger.release(store, prefix_of(params), params["clouds"], this_run(context))


def fence(
    context: Mapping[str, Any], cloud: str, store: ledger.LedgerStore, *, generation: int | None = None
) -> ledger.LedgerDoc:
    """:func:`octopus.ledger.check_fence` for this task: the run holds the deployment now, and is its latest."""
    prefix = prefix_of(context["params"])
    return ledger.check_fence(store, prefix, cloud, this_run(context), run_state, generation=generation)


@contextlib.contextmanager
def fail_fast_on_bad_input() -> Iterator[None]:
    """Turn errors that retrying cannot fix into ``AirflowFailException`` (no task retries)."""
    try:
        yield
    except (SharingError, access_policy.AccessPolicyError, ledger.LeaseError, ledger.EvidenceError) as exc:
        raise AirflowFailException(str(exc)) from None
    except OctopusError as exc:
        if not exc.retryable:
            raise AirflowFailException(str(exc)) from exc
        raise


def instance_counts(params: Mapping[str, Any]) -> dict[str, int]:
    """Per-cloud counts: the param's entries over the defaults (a conf may name only the clouds it runs)."""
    return {**DEFAULT_INSTANCE_COUNT, **(params.get("instance_count") or {})}


def space_policy(params: Mapping[str, Any]) -> access_policy.AccessPolicy:
    """The run's access policy: its ``allowed_spaces``/``denied_spaces`` params over the standing ``[octopus]``
    options (see :func:`octopus.access_policy.from_settings`)."""
    return access_policy.from_settings(
        params.get("allowed_spaces"),
        params.get("denied_spaces"),
        standing_allowed=settings.config_option("allowed_spaces"),
        standing_denied=settings.config_option("denied_spaces"),
    )


def get_spaces(
    params: Mapping[str, Any],
    *,
    conn_id: str,
    context: Mapping[str, Any] | None = None,
    store: ledger.LedgerStore | None = None,
    teardown: bool = False,
) -> list[dict[str, Any]]:
    """Discovery: fleet plans per selected cloud (see :func:`octopus.sharing.plan_fleets`).

    The initial space is the deployment's pinned one (its ledger); on first use, or when the ``initial_space``
    param moves it deliberately, the choice is recorded (never in a dry run, never by a ``teardown``, which
    follows the pin wherever discovery would start).
    """
    store = store or ledger.VariableStore()
    hook = OctopusHook(octopus_conn_id=conn_id, pool_size=operations.DISCOVERY_PARALLELISM)
    with fail_fast_on_bad_input():
        from airflow.sdk.configuration import conf

        from octopus.sharing import check_map_length, validate_prefix

        prefix = validate_prefix(prefix_of(params))
        docs = {cloud: ledger.load(store, prefix, cloud) for cloud in params["clouds"]}
        counts = instance_counts(params)
        if not teardown:  # a share builds the size the scaler owns (its sealed target); a retire removes everything
            selected = {cloud: counts[cloud] for cloud in params["clouds"]}
            counts = scaler_state.counts_for(prefix, selected, hook.evidence_signer(), store)
        plans = operations.discover(
            hook,
            clouds=params["clouds"],
            instance_count=counts,
            pool_name_template=params.get("worker_pool_name") or DEFAULT_POOL_NAME_TEMPLATE,
            target_spaces=params.get("target_spaces") or None,
            name_prefix=prefix,
            pins={cloud: doc.get("initial_space") for cloud, doc in docs.items()},
            initial_space=params.get("initial_space") or None,
            follow_pins=teardown,
            policy=None if teardown else space_policy(params),
        )
        check_map_length(
            max(len(retire_spaces(plans, role=role)) for role in ("copy", "initial"))
            if teardown
            else len(spaces_to_share(plans, params)),
            conf.getint("core", "max_map_length", fallback=1024),
            task_id="retire_copies" if teardown else "share_to_space",
        )
        adoptions = find_adoptable(hook, plans, params.get("adopt") or []) if not teardown else {}
        for plan in plans:
            doc = docs[plan["cloud"]]
            if not teardown:
                plan_removal(plan, doc, hook, store)
            if teardown:
                add_recorded_spaces(plan, doc)
                continue
            if params.get("dry_run") or context is None:
                continue
            # Before any write of the run: where its records may end up (so nothing it makes is ever forgotten).
            doc = fence(context, plan["cloud"], store)
            if plan["initial_pin"] != "pinned":
                doc = {**doc, "initial_space": dict(plan["initial_space"])}
            doc = ledger.add_spaces(doc, [plan["initial_space"], *(s for s in plan["spaces"] if s.get("id"))])
            if adoptions.get(plan["cloud"]):
                doc = ledger.adopt(doc, adoptions[plan["cloud"]], hook.evidence_signer())
                log.warning("%s: ADOPTED as this deployment's own: %s", plan["cloud"], adoptions[plan["cloud"]])
            ledger.save(store, doc)
    for plan in plans:
        pin = {"pinned": "pinned", "first_use": "pinned now (first use)", "moved": "MOVED here by initial_space"}
        log.info(
            "%s: pool %r, initial space %s (%s, %s), %d remaining spaces%s%s",
            plan["cloud"],
            plan["pool_name"],
            plan["initial_space"]["name"],
            plan["initial_space"]["id"],
            pin[plan["initial_pin"]],
            len(plan["spaces"]),
            f"; without the pool: {', '.join(plan['spaces_without_pool'])}" if plan["spaces_without_pool"] else "",
            f"; not selected: {len(plan['spaces_not_selected'])}" if plan["spaces_not_selected"] else "",
        )
        if plan.get("spaces_denied"):
            log.warning(
                "%s: denied by the access policy, our copies withdrawn (drained): %s",
                plan["cloud"],
                ", ".join(s["name"] for s in plan["spaces_denied"]),
            )
    log.info("Discovery cost %d Octopus requests", hook.request_count)
    return plans


def plan_removal(plan: dict[str, Any], doc: Mapping[str, Any], hook: OctopusHook, store: ledger.LedgerStore) -> None:
    """When the count shrinks: which instances of the last sealed fleet leave (``remove``; their names in
    ``remove_instances`` for Terraform). ``drain_removed`` drains them before ``terraform_apply`` runs."""
    signer = hook.evidence_signer()
    fleet = ledger.verified(doc, signer)["fleet"] if doc.get("fleet") else None
    workers = (fleet or {}).get("workers") or []
    # The scaler's drained victim first (sealed by it), then the newest (draining.choose_leaving).
    keep = int(plan["instance_count"])
    leaving = scaler_state.leaving_for(plan["prefix"], plan["cloud"], workers, keep, signer, store)
    plan["remove"] = leaving
    plan["remove_instances"] = [w["name"] for w in leaving]
    if leaving:
        log.info("%s: %d instances leave, drained first: %s", plan["cloud"], len(leaving), plan["remove_instances"])


def find_adoptable(
    hook: OctopusHook, plans: Sequence[Mapping[str, Any]], thumbprints: Sequence[str]
) -> dict[str, list[dict[str, str]]]:
    """Per cloud, the records the ``adopt`` param may take back: ``[{"name", "thumbprint"}]``.

    A thumbprint is adoptable only when a polling record carrying it, named like this deployment's fleet of that
    cloud (``<prefix>-<cloud>-…``), sits in a space the run visits. Any other thumbprint fails the run before
    anything is written: adoption is the operator's explicit word, checked against what Octopus holds.
    """
    from octopus.sharing import fleet_name_prefix, is_polling, thumbprint_of

    wanted = sorted({t.strip().upper() for t in thumbprints if t and t.strip()})
    found: dict[str, list[dict[str, str]]] = {}
    missing = []
    for thumbprint in wanted:
        match = None
        for plan in plans:
            like = f"{fleet_name_prefix(plan['prefix'], plan['cloud'])}-".casefold()
            for space in [plan["initial_space"], *plan["spaces"]]:
                records = hook.list_workers(space["id"], thumbprint=thumbprint)
                match = next(
                    (
                        r
                        for r in records
                        if is_polling(r)
                        and thumbprint_of(r) == thumbprint
                        and (r.get("Name") or "").casefold().startswith(like)
                    ),
                    None,
                )
                if match:
                    found.setdefault(plan["cloud"], []).append({"name": match["Name"], "thumbprint": thumbprint})
                    break
            if match:
                break
        if match is None:
            missing.append(thumbprint)
    if missing:
        raise SharingError(
            f"adopt names {len(missing)} thumbprint(s) no polling record named like this deployment's fleet "
            f"carries in the spaces it visits: {', '.join(missing)}. Nothing was written. Run a dry run: its "
            "summary lists the records that can be adopted."
        )
    return found


def add_recorded_spaces(plan: dict[str, Any], doc: Mapping[str, Any]) -> None:
    """A teardown also visits every space the ledger recorded, wherever discovery finds the pool today.

    A space whose pool was renamed, or that the key can no longer list, may still hold our records: its index
    reads it (by the pool id recorded) and fails naming it when it cannot.
    """
    known = {plan["initial_space"]["id"], *(s["id"] for s in plan["spaces"])}
    for space_id, entry in sorted((doc.get("spaces") or {}).items()):
        if space_id not in known:
            plan["spaces"].append(
                {"id": space_id, "name": entry.get("name") or space_id, "pool_id": entry.get("pool_id")}
            )
            log.info("%s: also visiting %s (%s), recorded in the ledger", plan["cloud"], entry.get("name"), space_id)


def spaces_to_share(plans: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Spaces for ``share_to_space``: the remaining spaces, plus initial spaces when pruning."""
    return spaces_to_visit(plans, include_initial=bool(params.get("prune_stale", True)))


def _as_list(values: Any) -> list[Any]:
    """A mapped task's XComs as a list: a single index may arrive as the bare value, none as ``None``."""
    if values is None:
        return []
    if isinstance(values, (Mapping, str)):
        return [values]
    return list(values)


def _ready_fleets(fleets: Iterable[Any] | Mapping[str, Any] | None) -> list[dict[str, Any]]:
    # A failed wait_for_workers index pushes nothing: its cloud is simply absent.
    return [dict(f) for f in _as_list(fleets) if f]


def fence_space(
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    store: ledger.LedgerStore,
    *,
    check_generation: bool,
) -> dict[str, ledger.LedgerDoc]:
    """Before a space's first write: this run holds each of the space's deployments (with a current fleet).

    Returns each deployment's ledger, read once the lease was confirmed: the evidence the writes rest on.
    """
    by_cloud = {f["cloud"]: f for f in fleets}
    docs = {}
    with fail_fast_on_bad_input():
        for cloud in sorted(space["pools"]):
            if cloud not in by_cloud:
                continue
            generation = by_cloud[cloud].get("generation") if check_generation else None
            docs[cloud] = fence(context, cloud, store, generation=generation)
    return docs


def read_ledgers(
    space: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], context: Mapping[str, Any], store
) -> dict[str, ledger.LedgerDoc]:
    """A dry run's view of the ledgers of the space's deployments (no lease: it writes nothing)."""
    prefix = prefix_of(context["params"])
    with fail_fast_on_bad_input():
        return {f["cloud"]: ledger.load(store, prefix, f["cloud"]) for f in fleets if f["cloud"] in space["pools"]}


def share_to_space(
    space: Mapping[str, Any],
    fleets: Iterable[Any] | None,
    context: Mapping[str, Any],
    *,
    conn_id: str,
    concurrency: int = 1,
    store: ledger.LedgerStore | None = None,
) -> None:
    """One space: upsert every ready fleet's workers, prune our stale copies; push the result even on failure."""
    params = context["params"]
    dry_run = bool(params.get("dry_run", False))
    store = store or ledger.VariableStore()
    hook = OctopusHook(octopus_conn_id=conn_id, concurrency=concurrency)
    ready = _ready_fleets(fleets)
    if dry_run:
        docs = read_ledgers(space, ready, context, store)
    else:
        docs = fence_space(space, ready, context, store, check_generation=True)
    with fail_fast_on_bad_input():
        prepared, rejected = ledger.fleets_for_share(ready, docs, hook.evidence_signer(), dry_run=dry_run)
    try:
        result = operations.share_space(
            hook, space, prepared, prune=bool(params.get("prune_stale", True)), dry_run=dry_run
        )
    except OctopusError as exc:
        result = _failed_result(space, exc, dry_run=dry_run)
    if rejected:
        result["evidence_rejected"] = rejected
    _finish_space(result, hook, context, verb="Sharing into")


def _failed_result(space: Mapping[str, Any], exc: OctopusError, *, dry_run: bool) -> dict[str, Any]:
    """The result of a space whose very first read failed: every cloud failed with the same reason (not read)."""
    retryable = int(exc.retryable)
    return {
        "space_id": space["id"],
        "space_name": space["name"],
        "dry_run": dry_run,
        "planned": [],
        "foreign": [],
        "owned_remaining": {},
        "clouds": {c: {"failed": 1, "errors": [str(exc)], "retryable_errors": retryable} for c in space["pools"]},
    }


def _finish_space(result: dict[str, Any], hook: OctopusHook, context: Mapping[str, Any], *, verb: str):
    """Log and push a space's result; fail its map index if any cloud failed (see ``operations.space_verdict``)."""
    result["requests"] = hook.request_count
    context["ti"].xcom_push(key=SPACE_RESULT_KEY, value=result)
    operations.log_space_result(log, result)
    message, retryable = operations.space_verdict(result, verb)
    if message is None:
        return result
    if retryable:
        raise AirflowException(message)
    clashes = [m for v in result["clouds"].values() for m in v.get("clashes") or []]
    if clashes and not any(v.get("errors") for v in result["clouds"].values()):
        # Only a foreign record is in the way: no retry fixes it; its owner must rename or remove it.
        raise AirflowFailException(message) from ForeignRecordError(" | ".join(clashes))
    raise AirflowFailException(message)


def space_results(context: Mapping[str, Any], task_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The ``space_result`` XComs of the mapped space tasks upstream of this one (all of them by default)."""
    ti = context["ti"]
    if task_ids is None:
        task_ids = sorted(context["task"].upstream_task_ids)
    return [r for t in task_ids for r in _as_list(ti.xcom_pull(task_ids=t, key=SPACE_RESULT_KEY)) if r]


def compact(
    context: Mapping[str, Any],
    store: ledger.LedgerStore,
    signer: ledger.Signer,
    cloud: str,
    results: Sequence[Mapping[str, Any]],
) -> tuple[ledger.LedgerDoc, list[dict[str, Any]], list[str]]:
    """Under the lease: the ledger of ``cloud`` keeping only what this run could not prove gone.

    Returns the saved ledger, the evidence that failed verification (moved aside, never acted on), and the
    recorded spaces this run did not read (each may still hold records of ours: kept, listed in the summary).
    """
    doc = fence(context, cloud, store)
    evidence = ledger.verified(doc, signer)
    current = (evidence["fleet"] or {}).get("workers") or []
    gone, gone_spaces = compact_evidence(cloud, current, evidence["owned"], doc.get("spaces") or {}, results)
    doc = ledger.forget(ledger.with_verified(doc, evidence), thumbprints=gone, space_ids=gone_spaces)
    ledger.save(store, doc)
    if gone or gone_spaces:
        log.info("%s: the evidence forgets %d endpoints and %d spaces proven gone", cloud, len(gone), len(gone_spaces))
    read = {r["space_id"] for r in results if ((r.get("clouds") or {}).get(cloud) or {}).get("read")}
    unread = sorted(f"{e.get('name')} ({sid})" for sid, e in (doc.get("spaces") or {}).items() if sid not in read)
    return doc, evidence["rejected"], unread


def summarize(
    plans: Sequence[Mapping[str, Any]] | None,
    fleets: Iterable[Any] | None,
    spaces: Sequence[Mapping[str, Any]] | None,
    context: Mapping[str, Any],
    *,
    upstream: ShareUpstream,
    conn_id: str,
    store: ledger.LedgerStore | None = None,
) -> dict[str, Any]:
    """The run's table; keeps the evidence lean, releases the run's lease, and on success emits the Asset.

    ``spaces`` is what ``share_to_space`` was mapped over: every index counts, the initial space's included.
    Raises when a fleet was not ready or any space failed (a space blocked only by a foreign machine holding
    our name does not withhold the Asset from the others: it is named in the event's ``blocked`` extra).
    """
    store = store or ledger.VariableStore()
    params = context["params"]
    try:
        if not plans:
            raise AirflowFailException("get_spaces produced no plan: see its log for the reason")
        results = space_results(context)
        summary = summarize_results(results, _as_list(spaces))
        ready = _ready_fleets(fleets)
        summary["clouds_not_ready"] = sorted({p["cloud"] for p in plans} - {f["cloud"] for f in ready})
        summary["dry_run"] = bool(params.get("dry_run", False))
        summary["evidence_rejected"] = {}
        summary["spaces_not_verified"] = {}
        pulled = _as_list(context["ti"].xcom_pull(task_ids=upstream["drain_removed"]))
        drains = [d for d in pulled if d and d.get("records")]
        summary["drain"] = {d["records"][0]["cloud"]: drain_report(d) for d in drains}
        summary["rebuild"] = rebuild_report(context["ti"], plans, upstream)
        if not summary["dry_run"]:
            signer = OctopusHook(octopus_conn_id=conn_id).evidence_signer()
            with fail_fast_on_bad_input():
                for plan in plans:
                    _, rejected, unread = compact(context, store, signer, plan["cloud"], results)
                    if unread:
                        summary["spaces_not_verified"][plan["cloud"]] = unread
                        log.warning(
                            "%s: spaces this deployment wrote to that this run did not read (not visited, no "
                            "longer listed, or failed): %s. Records of ours there stay in the evidence.",
                            plan["cloud"],
                            ", ".join(unread),
                        )
                    if rejected:
                        summary["evidence_rejected"][plan["cloud"]] = rejected
                        key = ledger.ledger_key(prefix_of(params), plan["cloud"])
                        log.warning("%s", ledger.describe_rejected(key, rejected))
        unblocked = [s for s in summary["failed_spaces"] if s not in summary["blocked_spaces"]]
        complete = not unblocked and not summary["clouds_not_ready"]
        if complete and not summary["dry_run"]:
            _emit_asset(context, plans, summary, event="shared")
        problems = []
        if summary["clouds_not_ready"]:
            problems.append(f"fleet not ready for {', '.join(summary['clouds_not_ready'])} (see terraform_apply/wait)")
        for cloud, rebuild in summary["rebuild"].items():
            if rebuild["left"] and not summary["dry_run"]:
                problems.append(
                    f"{cloud}: outdated instances still run: {', '.join(rebuild['left'])} (drain_outdated or "
                    "remove_outdated did not complete: they stay shared or disabled and intact, and the next run "
                    "drains them again)"
                )
        for space, records in summary["adoptable"].items():
            log.warning(
                "Named like this fleet in %s but not proven ours (left alone): %s. If they are this deployment's own "
                "older workers (its ledger was lost), trigger with adopt=[<thumbprints>].",
                space,
                ", ".join(f"{r['name']} {r['thumbprint']} ({r['health']})" for r in records),
            )
        for space, clashes in summary["blocked_spaces"].items():
            log.warning("BLOCKED in space %s (shared everywhere else): %s", space, " | ".join(clashes))
        _report("Share summary", summary, problems, context, tolerated=list(summary["blocked_spaces"]))
        return summary
    finally:
        release_deployments(context, store)


def asset_uri(server_url: str, prefix: str, *, event: str) -> str:
    """``octopus://<server>/shared-workers/<prefix>`` (``…/retired`` for a teardown): what downstream DAGs watch."""
    from urllib.parse import urlsplit

    parts = urlsplit(server_url)
    where = (parts.netloc + parts.path.rstrip("/")) or "octopus"
    return f"octopus://{where}/shared-workers/{prefix}" + ("/retired" if event == "retired" else "")


def _emit_asset(
    context: Mapping[str, Any], plans: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], *, event: str
):
    from airflow.sdk import Asset, AssetAlias

    uri = asset_uri(plans[0].get("server_url", ""), prefix_of(context["params"]), event=event)
    extra = {
        "clouds": sorted(p["cloud"] for p in plans),
        "totals": dict(summary["totals"]),
        "spaces": len(summary["spaces"]),
        "run_id": context["run_id"],
    }
    if summary.get("blocked_spaces"):
        extra["blocked"] = sorted(summary["blocked_spaces"])
    context["outlet_events"][AssetAlias(ASSET_ALIAS)].add(Asset(uri), extra=extra)
    log.info("Asset event %s: %s", uri, extra)


# --------------------------------------------------------------------------- retire_octopus_workers


def get_fleet_records(
    plans: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    store: ledger.LedgerStore | None = None,
    *,
    conn_id: str,
) -> list[dict[str, Any]]:
    """Per cloud, what the deployment may remove: its ledger's verified evidence (reported; no Octopus request).

    Each retire index verifies the ledger again itself before it writes: this XCom is what the log shows.
    """
    store = store or ledger.VariableStore()
    prefix = prefix_of(context["params"])
    signer = OctopusHook(octopus_conn_id=conn_id).evidence_signer()
    fleets = []
    for plan in plans:
        with fail_fast_on_bad_input():
            doc = ledger.load(store, prefix, plan["cloud"])
        evidence = ledger.verified(doc, signer)
        owned = [{"name": o["name"], "thumbprint": o["thumbprint"]} for o in evidence["owned"]]
        fleets.append({"cloud": plan["cloud"], "workers": [], "owned": owned, "spaces": dict(doc.get("spaces") or {})})
        log.info(
            "%s: %d endpoints owned by deployment %r (%s), recorded in %d spaces",
            plan["cloud"],
            len(owned),
            prefix,
            ", ".join(o["name"] for o in owned),
            len(doc.get("spaces") or {}),
        )
        if evidence["rejected"]:
            log.warning("%s", ledger.describe_rejected(ledger.ledger_key(prefix, plan["cloud"]), evidence["rejected"]))
    return fleets


def retire_spaces(plans: Sequence[Mapping[str, Any]], *, role: str) -> list[dict[str, Any]]:
    """Spaces a teardown visits in one phase: ``copy`` (remaining spaces), ``initial``, or ``all`` (the drain)."""
    visits = spaces_to_visit(plans, include_initial=True)
    if role == "all":
        return visits
    selected = []
    for visit in visits:
        pools = {c: p for c, p in visit["pools"].items() if p["role"] == role}
        if pools:
            selected.append({**visit, "pools": pools})
    return selected


def _evidence_of(
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]] | None,
    context: Mapping[str, Any],
    store: ledger.LedgerStore,
    hook: OctopusHook,
    *,
    dry_run: bool,
) -> list[dict[str, Any]]:
    """Per cloud of ``space``, the sealed endpoints a teardown may act on: the ledger read under the lease
    (only read, in a dry run), verified with the connection's key."""
    clouds = [{"cloud": f["cloud"]} for f in fleets or []]
    if dry_run:
        docs = read_ledgers(space, clouds, context, store)
    else:
        docs = fence_space(space, clouds, context, store, check_generation=False)
    signer = hook.evidence_signer()
    return [{"cloud": c, "owned": ledger.verified(doc, signer)["owned"]} for c, doc in docs.items()]


def disable_records(
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    *,
    conn_id: str,
    store: ledger.LedgerStore | None = None,
) -> list[dict[str, Any]]:
    """Drain, step 1: disable every record of ours in one space; return them for ``wait_for_drain``."""
    dry_run = bool(context["params"].get("dry_run", False))
    hook = OctopusHook(octopus_conn_id=conn_id)
    evidence = _evidence_of(space, fleets, context, store or ledger.VariableStore(), hook, dry_run=dry_run)
    with fail_fast_on_bad_input():
        return operations.disable_space(hook, space, evidence, dry_run=dry_run)


def retire_from_space(
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    *,
    conn_id: str,
    drained: Mapping[str, Any] | None = None,
    store: ledger.LedgerStore | None = None,
) -> None:
    """Remove the deployment's own records from one space; push the result, fail this index on any error.

    Runs after ``wait_for_drain``: a record Octopus still refuses to delete (a step took it since) fails the
    index, so no instance is destroyed under a step; one held only by a stale lease stays disabled.
    What is removed rests on the ledger read under the lease by this task, verified with the connection's key.
    """
    dry_run = bool(context["params"].get("dry_run", False))
    hook = OctopusHook(octopus_conn_id=conn_id)
    evidence = _evidence_of(space, fleets, context, store or ledger.VariableStore(), hook, dry_run=dry_run)
    stale = {h["worker_id"] for h in (drained or {}).get("stale") or [] if h["space_id"] == space["id"]}
    try:
        result = operations.retire_space(hook, space, evidence, dry_run=dry_run, stale_ids=stale)
    except OctopusError as exc:
        result = _failed_result(space, exc, dry_run=dry_run)
    _finish_space(result, hook, context, verb="Retiring from")


def summarize_retire(
    plans: Sequence[Mapping[str, Any]] | None,
    context: Mapping[str, Any],
    store: ledger.LedgerStore | None = None,
    *,
    upstream: RetireUpstream,
    conn_id: str,
) -> dict[str, Any]:
    """Teardown table; forgets what was proven removed, releases the lease.

    The deployment is retired (the Asset ``…/retired``) only when every space its ledger recorded was read and
    holds none of its records any more (or no longer exists, or is let go by the ``forget_spaces`` param), and
    Terraform destroyed every fleet. Otherwise it fails naming the spaces left, and keeps them for the next try.
    """
    store = store or ledger.VariableStore()
    params = context["params"]
    try:
        if not plans:
            raise AirflowFailException("get_spaces produced no plan: see its log for the reason")
        ti = context["ti"]
        results = space_results(context, upstream["results"])
        summary = summarize_results(results, [])
        summary["dry_run"] = bool(params.get("dry_run", False))
        destroyed = _as_list(ti.xcom_pull(task_ids=upstream["destroy"]))
        done = {_destroy_output(line)["cloud"] for line in destroyed if line}
        summary["destroyed"] = sorted(done)
        summary["not_destroyed"] = sorted({p["cloud"] for p in plans} - done)
        summary["spaces_left"] = {}
        summary["drain"] = drain_report(ti.xcom_pull(task_ids=upstream["drain"]))
        let_go = {str(s).strip().casefold() for s in params.get("forget_spaces") or [] if str(s).strip()}
        if not summary["dry_run"]:
            signer = OctopusHook(octopus_conn_id=conn_id).evidence_signer()
            with fail_fast_on_bad_input():
                for plan in plans:
                    cloud = plan["cloud"]
                    doc, _, _ = compact(context, store, signer, cloud, results)
                    released = {
                        sid
                        for sid, e in (doc.get("spaces") or {}).items()
                        if sid.casefold() in let_go or str(e.get("name", "")).casefold() in let_go
                    }
                    if released:
                        log.warning(
                            "%s: letting go of spaces %s (forget_spaces): their records are left as they are",
                            cloud,
                            sorted(released),
                        )
                        doc = ledger.forget(doc, space_ids=released)
                    left = doc.get("spaces") or {}
                    if not left:
                        # Every place a record of ours could be was verified: the evidence is empty, and an
                        # empty fleet is a new generation (a cleared share task of an older run must not replay).
                        doc = ledger.record_fleet({**doc, "owned": []}, [], this_run(context), signer)
                        doc = {**doc, "owned": []}
                    else:
                        summary["spaces_left"][cloud] = sorted(f"{e.get('name')} ({sid})" for sid, e in left.items())
                    ledger.save(store, doc)
            if not summary["failed_spaces"] and not summary["not_destroyed"] and not summary["spaces_left"]:
                for plan in plans:  # the count goes back to the share DAG's param: a paused scaler cannot keep it
                    store.delete(scaler_state.state_key(plan["prefix"], plan["cloud"]))
                _emit_asset(context, plans, summary, event="retired")
        problems = []
        if summary["not_destroyed"]:
            problems.append(f"terraform destroy did not complete for {', '.join(summary['not_destroyed'])}")
        for cloud, left in summary["spaces_left"].items():
            problems.append(
                f"{cloud}: not verified free of our records, kept in the ledger: {', '.join(left)} (grant the "
                "connection's user access, or name a space that is gone for good in forget_spaces)"
            )
        _report("Retire summary", summary, problems, context)
        return summary
    finally:
        release_deployments(context, store)


def drain_report(drained: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the summary shows of a drain: how long it waited, per worker for which steps, and what it left disabled."""
    if not drained:
        return {}
    report = {
        "records": len(drained.get("records") or []),
        "waited_seconds": drained.get("waited_seconds", 0),
        "forced": bool(drained.get("forced")),
        "workers": {
            w["worker"]: {"waited_seconds": w["waited_seconds"], "tasks": list(w["tasks"])}
            for w in drained.get("workers") or []
        },
        "held_by": sorted({f"{h['worker']}: {h['task']}" for h in drained.get("held_by") or []}),
        "stale": sorted({f"{h['worker']}: {h['task']}" for h in drained.get("stale") or []}),
    }
    if drained.get("instances") is not None:
        report["instances"] = list(drained["instances"])
    log.info(
        "Drain: %d records, waited %.0fs%s%s%s",
        report["records"],
        report["waited_seconds"],
        "".join(
            f"; {name} waited {w['waited_seconds']:.0f}s for {', '.join(w['tasks'])}"
            for name, w in report["workers"].items()
            if w["tasks"]
        ),
        f"; FORCED while held by {', '.join(report['held_by'])}" if report["forced"] else "",
        f"; stale leases left disabled: {', '.join(report['stale'])}" if report["stale"] else "",
    )
    return report


def rebuild_report(ti: Any, plans: Sequence[Mapping[str, Any]], upstream: ShareUpstream) -> dict[str, dict[str, Any]]:
    """Per cloud with outdated instances (a rebuild without a gap): which were outdated, the drain, which the second
    apply removed, and which are ``left`` (still running: the drain or the removal did not complete)."""
    applied = {}
    for line in _as_list(ti.xcom_pull(task_ids=upstream["apply"])):
        if line:
            result = _destroy_output(line)
            applied[result.get("cloud")] = result
    drained = {d.get("cloud"): d for d in _as_list(ti.xcom_pull(task_ids=upstream["drain_outdated"])) if d}
    removed = {}
    for line in _as_list(ti.xcom_pull(task_ids=upstream["remove_outdated"])):
        if line:
            result = _destroy_output(line)
            removed[result.get("cloud")] = list(result.get("removed") or [])
    report = {}
    for plan in plans:
        cloud = plan["cloud"]
        outdated = sorted(
            str(n) for n in ((applied.get(cloud) or {}).get("outputs") or {}).get("outdated_instances") or []
        )
        if not outdated:
            continue
        gone = removed.get(cloud) or []
        report[cloud] = {
            "outdated": outdated,
            "drain": drain_report(drained.get(cloud)) if cloud in drained else {},
            "removed": gone,
            "left": [n for n in outdated if n not in gone],
        }
        log.info("%s: rebuilt without a gap: outdated %s, removed %s", cloud, outdated, gone)
    return report


def _destroy_output(value: Any) -> dict[str, Any]:
    """``terraform_apply``/``destroy``'s XCom: a dict (or, from older runs, its JSON line)."""
    return json.loads(value) if isinstance(value, str) else dict(value)


def _report(
    title: str,
    summary: dict[str, Any],
    problems: list[str],
    context: Mapping[str, Any],
    *,
    tolerated: Sequence[str] = (),
) -> None:
    """Log a run's table; with failed spaces or other problems, keep the summary in XCom and fail without retrying.

    The verdict is on finished upstream tasks: retrying it cannot change it, clearing them (with downstream) can.
    """
    note = " (dry run: nothing written)" if summary["dry_run"] else ""
    log.info("%s%s:\n%s", title, note, format_table(summary))
    failed = [s for s in summary["failed_spaces"] if s not in tolerated]
    if failed:
        problems = [*problems, f"{len(failed)} space(s) failed: {', '.join(failed)}"]
    if problems:
        context["ti"].xcom_push(key="summary", value=summary)
        raise AirflowFailException("; ".join(problems) + ". Clear the failed tasks (with downstream) to retry them.")
