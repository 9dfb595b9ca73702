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

from octopus import operations
from octopus.exceptions import OctopusError
from octopus.hooks import OctopusHook
from octopus.sharing import SharingError, format_table, spaces_to_visit
from octopus.sharing import summarize as summarize_results

log = logging.getLogger(__name__)

DEFAULT_INSTANCE_COUNT = {"aws": 2, "azure": 2, "gcp": 2, "local": 3}
SPACE_RESULT_KEY = "space_result"


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


def get_spaces(params: Mapping[str, Any], *, conn_id: str) -> list[dict[str, Any]]:
    """Discovery: fleet plans per selected cloud (see :func:`octopus.sharing.plan_fleets`)."""
    hook = OctopusHook(octopus_conn_id=conn_id)
    with fail_fast_on_bad_input():
        plans = operations.discover(
            hook,
            clouds=params["clouds"],
            instance_count=instance_counts(params),
            pool_name_template=params.get("worker_pool_name") or "{cloud} Worker Pool TF",
            target_spaces=params.get("target_spaces") or None,
            name_prefix=params.get("name_prefix") or "octopus-shared",
        )
    for plan in plans:
        log.info(
            "%s: pool %r, initial space %s (%s), %d remaining spaces%s%s",
            plan["cloud"],
            plan["pool_name"],
            plan["initial_space"]["name"],
            plan["initial_space"]["id"],
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


def share_to_space(
    space: Mapping[str, Any], fleets: Iterable[Any] | None, context: Mapping[str, Any], *, conn_id: str
) -> dict[str, Any]:
    """One space: upsert every ready fleet's workers, prune stale copies; push the result even on failure."""
    params = context["params"]
    dry_run = bool(params.get("dry_run", False))
    hook = OctopusHook(octopus_conn_id=conn_id)
    try:
        ready = _ready_fleets(fleets)
        result = operations.share_space(
            hook,
            space,
            ready,
            prune=bool(params.get("prune_stale", True)),
            dry_run=dry_run,
            existing=operations.known_initial_records(space, ready),
        )
    except OctopusError as exc:
        result = _failed_result(space, exc, dry_run=dry_run)
    return _finish_space(result, hook, context, verb="Sharing into")


def _failed_result(space: Mapping[str, Any], exc: OctopusError, *, dry_run: bool) -> dict[str, Any]:
    """The result of a space whose very first read failed: every cloud failed with the same reason."""
    retryable = int(exc.retryable)
    return {
        "space_id": space["id"],
        "space_name": space["name"],
        "dry_run": dry_run,
        "planned": [],
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
    plans: Sequence[Mapping[str, Any]] | None, fleets: Iterable[Any] | None, context: Mapping[str, Any]
) -> dict[str, Any]:
    """The run's table; raises when a fleet was not ready or any space failed."""
    if not plans:
        raise AirflowFailException("get_spaces produced no plan: see its log for the reason")
    results = _as_list(context["ti"].xcom_pull(task_ids="share_to_space", key=SPACE_RESULT_KEY))
    summary = summarize_results(results, plans)
    ready = {f["cloud"] for f in _ready_fleets(fleets)}
    summary["clouds_not_ready"] = sorted({p["cloud"] for p in plans} - ready)
    summary["dry_run"] = bool(context["params"].get("dry_run", False))
    problems = []
    if summary["clouds_not_ready"]:
        problems.append(f"fleet not ready for {', '.join(summary['clouds_not_ready'])} (see terraform_apply/wait)")
    _report("Share summary", summary, problems, context)
    return summary


# --------------------------------------------------------------------------- retire_octopus_workers


def get_fleet_records(plans: Sequence[Mapping[str, Any]], *, conn_id: str) -> list[dict[str, Any]]:
    """Per cloud, every record of the fleet in its initial pool (one read per cloud)."""
    hook = OctopusHook(octopus_conn_id=conn_id)
    with fail_fast_on_bad_input():
        fleets = [operations.fleet_records(hook, plan) for plan in plans]
    for fleet in fleets:
        log.info(
            "%s fleet: %d records: %s", fleet["cloud"], len(fleet["workers"]), [w["name"] for w in fleet["workers"]]
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
    space: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], context: Mapping[str, Any], *, conn_id: str
) -> dict[str, Any]:
    """Remove the fleets' records from one space; push the result, fail this index on any error."""
    dry_run = bool(context["params"].get("dry_run", False))
    hook = OctopusHook(octopus_conn_id=conn_id)
    try:
        result = operations.retire_space(hook, space, list(fleets or []), dry_run=dry_run)
    except OctopusError as exc:
        result = _failed_result(space, exc, dry_run=dry_run)
    return _finish_space(result, hook, context, verb="Retiring from")


def summarize_retire(plans: Sequence[Mapping[str, Any]] | None, context: Mapping[str, Any]) -> dict[str, Any]:
    """Teardown table; raises when any space failed."""
    if not plans:
        raise AirflowFailException("get_spaces produced no plan: see its log for the reason")
    ti = context["ti"]
    results = [
        r for t in ("retire_copies", "retire_initial") for r in _as_list(ti.xcom_pull(task_ids=t, key=SPACE_RESULT_KEY))
    ]
    summary = summarize_results(results, [])
    summary["dry_run"] = bool(context["params"].get("dry_run", False))
    done = {json.loads(line)["cloud"] for line in _as_list(ti.xcom_pull(task_ids="terraform_destroy")) if line}
    summary["destroyed"] = sorted(done)
    summary["not_destroyed"] = sorted({p["cloud"] for p in plans} - done)
    problems = []
    if summary["not_destroyed"]:
        problems.append(f"terraform destroy did not complete for {', '.join(summary['not_destroyed'])}")
    _report("Retire summary", summary, problems, context)
    return summary


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
