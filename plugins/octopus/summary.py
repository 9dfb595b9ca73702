"""The summary: per-space results merged into a spaces × clouds table, and what the evidence may forget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from octopus.discovery import id_order
from octopus.shapes import OUTCOMES, SpaceResult, SpaceVisit


def summarize(results: Iterable[SpaceResult | None], expected: Sequence[SpaceVisit]) -> dict[str, Any]:
    """Merge per-space results into a spaces × clouds table of outcome counts.

    ``expected`` is the list of spaces the run mapped (``spaces_to_share``, or a retire phase's): a space of it
    with no result (its task failed before pushing one, or never ran) counts as failed for each of its clouds,
    the initial space's index included. A space whose only failures are clashes with a foreign machine holding
    our name is *blocked* (listed apart: no run of ours can fix it).
    """
    rows: dict[str, dict[str, Any]] = {}
    for result in results:
        if result:
            rows[result["space_id"]] = dict(result)
    for space in expected:
        if space["id"] not in rows:
            rows[space["id"]] = {
                "space_id": space["id"],
                "space_name": space["name"],
                "clouds": {c: {"failed": 1, "errors": ["task failed or did not run"]} for c in space["pools"]},
            }
    ordered = sorted(rows.values(), key=lambda r: id_order(r["space_id"]))
    clouds = sorted({c for r in ordered for c in r["clouds"]})
    failed = [r["space_name"] for r in ordered if any(v.get("failed") for v in r["clouds"].values())]
    blocked = {
        r["space_name"]: [m for v in r["clouds"].values() for m in v.get("clashes") or []]
        for r in ordered
        if any(v.get("clashes") for v in r["clouds"].values())
        and all(
            not v.get("failed") or (v.get("clashes") and len(v.get("errors") or []) == 0) for v in r["clouds"].values()
        )
    }
    totals = {o: sum(r["clouds"].get(c, {}).get(o, 0) for r in ordered for c in clouds) for o in OUTCOMES}
    foreign = {r["space_name"]: sorted(r["foreign"]) for r in ordered if r.get("foreign")}
    adoptable = {
        r["space_name"]: [{**a, "cloud": c} for c, v in r["clouds"].items() for a in v.get("adoptable") or []]
        for r in ordered
        if any(v.get("adoptable") for v in r["clouds"].values())
    }
    return {
        "adoptable": adoptable,
        "spaces": ordered,
        "clouds": clouds,
        "failed_spaces": failed,
        "blocked_spaces": blocked,
        "totals": totals,
        "foreign": foreign,
    }


def compact_evidence(
    cloud: str,
    current: Sequence[Mapping[str, Any]],
    owned: Sequence[Mapping[str, Any]],
    recorded_spaces: Mapping[str, Mapping[str, Any]],
    results: Iterable[SpaceResult | None],
) -> tuple[list[str], list[str]]:
    """What the evidence of ``cloud`` may forget after a run: ``(thumbprints, space ids)`` proven gone.

    A space is forgotten only when this run read it (the whole space, every pool) and found no record of ours
    left there. An owned endpoint of an earlier fleet is forgotten only when every recorded space was read so
    and none still holds it. Whatever a run could not see — a space it could not read, did not visit (a
    ``target_spaces`` run, a pool renamed), or whose index failed before its read — stays.
    """
    read: dict[str, Mapping[str, Any]] = {}
    still: set[str] = set()
    for result in results:
        counts = ((result or {}).get("clouds") or {}).get(cloud) or {}
        if counts.get("read"):
            read[result["space_id"]] = counts
            still |= {str(r["thumbprint"]).upper() for r in (result.get("owned_remaining") or {}).get(cloud, [])}
    gone_spaces = [s for s in recorded_spaces if s in read and not read[s].get("ours_left")]
    if any(s not in read for s in recorded_spaces):
        return [], gone_spaces
    current_tps = {str(w["thumbprint"]).upper() for w in current}
    gone = [
        str(o["thumbprint"]).upper()
        for o in owned
        if str(o["thumbprint"]).upper() not in current_tps and str(o["thumbprint"]).upper() not in still
    ]
    return gone, gone_spaces


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as a fixed-width text table (spaces × clouds, then a total per cloud)."""
    clouds = summary["clouds"]

    def cell(counts: Mapping[str, Any] | None) -> str:
        if not counts:
            return "-"
        return ", ".join(f"{o} {counts[o]}" for o in OUTCOMES if counts.get(o)) or "nothing to do"

    header = ["space", *clouds]
    body = [
        [f"{row['space_name']} ({row['space_id']})", *(cell(row["clouds"].get(c)) for c in clouds)]
        for row in summary["spaces"]
    ]
    per_cloud = {
        c: {o: sum(r["clouds"].get(c, {}).get(o, 0) for r in summary["spaces"]) for o in OUTCOMES} for c in clouds
    }
    footer = ["total", *(cell(per_cloud[c]) for c in clouds)]
    widths = [max(len(r[i]) for r in [header, *body, footer]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, body), rule, line(footer)])
