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

from octopus import ledger, operations
from octopus.exceptions import OctopusError
from octopus.hooks import OctopusHook
from octopus.sharing import (
    ASSET_ALIAS,
    DEFAULT_INSTANCE_COUNT,
    DEFAULT_NAME_PREFIX,
    DEFAULT_POOL_NAME_TEMPLATE,
    SharingError,
    compact_owned,
    format_table,
    spaces_to_visit,
)
from octopus.sharing import summarize as summarize_results

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
    return {"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}


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


@contextlib.contextmanager
def fail_fast_on_bad_input() -> Iterator[None]:
    """Turn errors that retrying cannot fix into ``AirflowFailException`` (no task retries)."""
    try:
        yield
    except SharingError as exc:
        raise AirflowFailException(str(exc)) from None
    except OctopusError as exc:
        if not exc.retryable:
            raise AirflowFailException(str(exc)) from exc
        raise


def instance_counts(params: Mapping[str, Any]) -> dict[str, int]:
    """Per-cloud counts: the param's entries over the defaults (a conf may name only the clouds it runs)."""
    return {**DEFAULT_INSTANCE_COUNT, **(params.get("instance_count") or {})}


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
        plans = operations.discover(
            hook,
            clouds=params["clouds"],
            instance_count=instance_counts(params),
            pool_name_template=params.get("worker_pool_name") or DEFAULT_POOL_NAME_TEMPLATE,
            target_spaces=params.get("target_spaces") or None,
            name_prefix=prefix,
            pins={cloud: doc.get("initial_space") for cloud, doc in docs.items()},
            initial_space=params.get("initial_space") or None,
            follow_pins=teardown,
        )
        check_map_length(
            max(len(retire_spaces(plans, role=role)) for role in ("copy", "initial"))
            if teardown
            else len(spaces_to_share(plans, params)),
            conf.getint("core", "max_map_length", fallback=1024),
            task_id="retire_copies" if teardown else "share_to_space",
        )
        for plan in plans:
            doc = docs[plan["cloud"]]
            record = plan["initial_pin"] != "pinned" and not params.get("dry_run") and not teardown
            if record and context is not None:
                ledger.check_fence(doc, this_run(context), run_state)
                ledger.save(store, {**doc, "initial_space": dict(plan["initial_space"])})
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
    log.info("Discovery cost %d Octopus requests", hook.request_count)
    return plans


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


def check_fences(
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    store: ledger.LedgerStore,
    *,
    check_generation: bool,
) -> None:
    """Before a space's first write: this run still holds each of the space's deployments, with a current fleet."""
    prefix = prefix_of(context["params"])
    by_cloud = {f["cloud"]: f for f in fleets}
    with fail_fast_on_bad_input():
        for cloud in sorted(space["pools"]):
            if cloud not in by_cloud:
                continue
            doc = ledger.load(store, prefix, cloud)
            generation = by_cloud[cloud].get("generation") if check_generation else None
            ledger.check_fence(doc, this_run(context), run_state, generation=generation)


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
    hook = OctopusHook(octopus_conn_id=conn_id, concurrency=concurrency)
    ready = _ready_fleets(fleets)
    if not dry_run:
        check_fences(space, ready, context, store or ledger.VariableStore(), check_generation=True)
    try:
        result = operations.share_space(
            hook, space, ready, prune=bool(params.get("prune_stale", True)), dry_run=dry_run
        )
    except OctopusError as exc:
        result = _failed_result(space, exc, dry_run=dry_run)
    _finish_space(result, hook, context, verb="Sharing into")


def _failed_result(space: Mapping[str, Any], exc: OctopusError, *, dry_run: bool) -> dict[str, Any]:
    """The result of a space whose very first read failed: every cloud failed with the same reason."""
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
    """Log and push a space's result; fail its map index if any cloud failed.

    Errors a retry cannot fix (those not ``retryable``: 4xx other than 429, name clashes) fail at once; others
    (5xx, 429, unreachable server, after the hook's own retries) let Airflow retry.
    """
    result["requests"] = hook.request_count
    context["ti"].xcom_push(key=SPACE_RESULT_KEY, value=result)
    for line in result["planned"]:
        log.info("%s: %s", "would" if result["dry_run"] else "planned", line)
    for cloud, counts in result["clouds"].items():
        shown = {k: v for k, v in counts.items() if v and k not in ("errors", "retryable_errors")}
        log.info("%s / %s: %s", result["space_name"], cloud, shown)
    if result.get("foreign"):
        log.info("Foreign, left alone: %s", ", ".join(result["foreign"]))
    failures = {c: v for c, v in result["clouds"].items() if v.get("failed")}
    if not failures:
        return result
    message = f"{verb} space {result['space_name']} ({result['space_id']}) failed: " + "; ".join(
        f"{cloud}: {' | '.join(v['errors'])}" for cloud, v in sorted(failures.items())
    )
    if any(v.get("retryable_errors") for v in failures.values()):
        raise AirflowException(message)
    raise AirflowFailException(message)


def summarize(
    plans: Sequence[Mapping[str, Any]] | None,
    fleets: Iterable[Any] | None,
    context: Mapping[str, Any],
    store: ledger.LedgerStore | None = None,
) -> dict[str, Any]:
    """The run's table; keeps the ledger lean, releases the run's lease, and on full success emits the Asset.

    Raises when a fleet was not ready or any space failed.
    """
    store = store or ledger.VariableStore()
    params = context["params"]
    try:
        if not plans:
            raise AirflowFailException("get_spaces produced no plan: see its log for the reason")
        results = _as_list(context["ti"].xcom_pull(task_ids="share_to_space", key=SPACE_RESULT_KEY))
        summary = summarize_results(results, plans)
        ready = _ready_fleets(fleets)
        summary["clouds_not_ready"] = sorted({p["cloud"] for p in plans} - {f["cloud"] for f in ready})
        summary["dry_run"] = bool(params.get("dry_run", False))
        complete = not summary["failed_spaces"] and not summary["clouds_not_ready"]
        if complete and not summary["dry_run"] and not params.get("target_spaces") and params.get("prune_stale", True):
            for fleet in ready:
                doc = ledger.load(store, prefix_of(params), fleet["cloud"])
                if (doc.get("fleet") or {}).get("generation") == fleet.get("generation"):
                    ledger.save(store, {**doc, "owned": compact_owned(fleet, results, fleet["cloud"])})
        if complete and not summary["dry_run"]:
            _emit_asset(context, plans, summary, event="shared")
        problems = []
        if summary["clouds_not_ready"]:
            problems.append(f"fleet not ready for {', '.join(summary['clouds_not_ready'])} (see terraform_apply/wait)")
        _report("Share summary", summary, problems, context)
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
    context["outlet_events"][AssetAlias(ASSET_ALIAS)].add(Asset(uri), extra=extra)
    log.info("Asset event %s: %s", uri, extra)


# --------------------------------------------------------------------------- retire_octopus_workers


def get_fleet_records(
    plans: Sequence[Mapping[str, Any]], context: Mapping[str, Any], store: ledger.LedgerStore | None = None
) -> list[dict[str, Any]]:
    """Per cloud, what the deployment may remove: its ledger's ``owned`` records (no Octopus request)."""
    store = store or ledger.VariableStore()
    prefix = prefix_of(context["params"])
    fleets = []
    for plan in plans:
        doc = ledger.load(store, prefix, plan["cloud"])
        owned = list(doc.get("owned") or [])
        fleets.append({"cloud": plan["cloud"], "workers": [], "owned": owned})
        log.info(
            "%s: %d records owned by deployment %r: %s", plan["cloud"], len(owned), prefix, [o["name"] for o in owned]
        )
        if not owned:
            log.warning(
                "%s: the ledger %s owns no record: nothing will be removed from Octopus",
                plan["cloud"],
                ledger.ledger_key(prefix, plan["cloud"]),
            )
    return fleets


def retire_spaces(plans: Sequence[Mapping[str, Any]], *, role: str) -> list[dict[str, Any]]:
    """Spaces a teardown visits in one phase: ``copy`` (remaining spaces) or ``initial``."""
    visits = spaces_to_visit(plans, include_initial=True)
    selected = []
    for visit in visits:
        pools = {c: p for c, p in visit["pools"].items() if p["role"] == role}
        if pools:
            selected.append({**visit, "pools": pools})
    return selected


def retire_from_space(
    space: Mapping[str, Any],
    fleets: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    *,
    conn_id: str,
    store: ledger.LedgerStore | None = None,
) -> None:
    """Remove the deployment's own records from one space; push the result, fail this index on any error."""
    dry_run = bool(context["params"].get("dry_run", False))
    hook = OctopusHook(octopus_conn_id=conn_id)
    if not dry_run:
        check_fences(space, list(fleets or []), context, store or ledger.VariableStore(), check_generation=False)
    try:
        result = operations.retire_space(hook, space, list(fleets or []), dry_run=dry_run)
    except OctopusError as exc:
        result = _failed_result(space, exc, dry_run=dry_run)
    _finish_space(result, hook, context, verb="Retiring from")


def summarize_retire(
    plans: Sequence[Mapping[str, Any]] | None, context: Mapping[str, Any], store: ledger.LedgerStore | None = None
) -> dict[str, Any]:
    """Teardown table; forgets the removed records, releases the lease; raises when any space failed."""
    store = store or ledger.VariableStore()
    try:
        if not plans:
            raise AirflowFailException("get_spaces produced no plan: see its log for the reason")
        ti = context["ti"]
        results = [
            r
            for t in ("retire_copies", "retire_initial")
            for r in _as_list(ti.xcom_pull(task_ids=t, key=SPACE_RESULT_KEY))
        ]
        summary = summarize_results(results, [])
        summary["dry_run"] = bool(context["params"].get("dry_run", False))
        done = {_destroy_output(line)["cloud"] for line in _as_list(ti.xcom_pull(task_ids="terraform_destroy")) if line}
        summary["destroyed"] = sorted(done)
        summary["not_destroyed"] = sorted({p["cloud"] for p in plans} - done)
        if not summary["dry_run"] and not summary["failed_spaces"]:
            for plan in plans:
                doc = ledger.load(store, prefix_of(context["params"]), plan["cloud"])
                # An empty fleet as a new generation: a cleared share task of an older run must not replay its fleet.
                retired = ledger.record_fleet(doc, [], this_run(context))
                ledger.save(store, {**retired, "owned": compact_owned({"workers": []}, results, plan["cloud"])})
            if not summary["not_destroyed"]:
                _emit_asset(context, plans, summary, event="retired")
        problems = []
        if summary["not_destroyed"]:
            problems.append(f"terraform destroy did not complete for {', '.join(summary['not_destroyed'])}")
        _report("Retire summary", summary, problems, context)
        return summary
    finally:
        release_deployments(context, store)


def _destroy_output(value: Any) -> dict[str, Any]:
    """``terraform_apply``/``destroy``'s XCom: a dict (or, from older runs, its JSON line)."""
    return json.loads(value) if isinstance(value, str) else dict(value)


def _report(title: str, summary: dict[str, Any], problems: list[str], context: Mapping[str, Any]) -> None:
    """Log a run's table; with failed spaces or other problems, keep the summary in XCom and fail without retrying.

    The verdict is on finished upstream tasks: retrying it cannot change it, clearing them (with downstream) can.
    """
    note = " (dry run: nothing written)" if summary["dry_run"] else ""
    log.info("%s%s:\n%s", title, note, format_table(summary))
    if summary["failed_spaces"]:
        problems = [
            *problems,
            f"{len(summary['failed_spaces'])} space(s) failed: {', '.join(summary['failed_spaces'])}",
        ]
    if problems:
        context["ti"].xcom_push(key="summary", value=summary)
        raise AirflowFailException("; ".join(problems) + ". Clear the failed tasks (with downstream) to retry them.")
