"""The access policy for share and scale: which spaces get our workers and whose demand counts (pure, no I/O).

A policy names the spaces **allowed** (all of them, or a list of entries) and the spaces **denied**; deny wins.
An entry is a space id (``Spaces-12``), a space name (``Team A``), or a glob pattern (``team-*``, ``Spaces-1?``,
``[ab]*``) matched against both; all case-insensitive, as Octopus compares names. The policy is re-evaluated
against the live space list each run (``demand-scaling.md`` §4, *Access policy*, after GitHub's runner groups):

* a space outside the policy gets no record of ours and adds no demand to the scaler (a scaler that counts work
  that cannot use its workers over-provisions: ARC's ``useRunnerGroupsVisibility``);
* a space taken out of the policy has our copies *drained* there (disable, wait for its leases, delete), never
  deleted under a running step — that is the DAG's job, this module only says which spaces are in.

The param form (a JSON object, as the trigger form gives it)::

    {"allow": "all"}                                   # the default: every space
    {"allow": ["Team A", "Spaces-7", "prod-*"], "deny": ["prod-legacy"]}
    {"deny": ["Sandbox*"]}                             # all but the sandboxes

``allow`` is ``"all"`` (or ``"*"``, or absent, or an empty list) or a list of entries; ``deny`` a list of entries
(a single string is taken as a one-entry list). :func:`parse_access_policy` rejects anything else with a message
naming the bad entry.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar

__all__ = [
    "ALL",
    "AccessPolicy",
    "AccessPolicyError",
    "SpaceRef",
    "allowed_spaces",
    "allows",
    "explain",
    "matching_entry",
    "parse_access_policy",
    "partition_spaces",
    "unmatched_entries",
]

ALL = "all"
#: characters that make an entry a glob pattern
_GLOB_CHARS = frozenset("*?[")
_KEYS = ("allow", "deny")


class AccessPolicyError(ValueError):
    """A policy param that cannot be used; the message names the key and the entry."""


class SpaceRef(TypedDict):
    """A space as the policy sees it: the ``Id`` and ``Name`` of an Octopus ``Space`` resource."""

    Id: str
    Name: str


_S = TypeVar("_S", bound=Mapping[str, Any])


@dataclass(frozen=True)
class AccessPolicy:
    """A parsed policy. ``mode`` ``all`` ignores ``allow``; ``selected`` allows only spaces an ``allow`` entry
    matches. A space any ``deny`` entry matches is out, whatever ``allow`` says."""

    mode: Literal["all", "selected"] = "all"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def to_param(self) -> dict[str, Any]:
        """The JSON form :func:`parse_access_policy` reads back to an equal policy."""
        return {"allow": ALL if self.mode == "all" else list(self.allow), "deny": list(self.deny)}

    def describe(self) -> str:
        """One line for logs: ``all spaces`` / ``spaces matching 'A', 'B'``, then ``except …``."""
        head = "all spaces" if self.mode == "all" else "spaces matching " + ", ".join(repr(e) for e in self.allow)
        return head + (" except " + ", ".join(repr(e) for e in self.deny) if self.deny else "")


def _entries(key: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise AccessPolicyError(
            f"access policy: {key!r} must be a list of space names, ids or glob patterns, not {type(raw).__name__}"
        )
    out: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        if not isinstance(entry, str):
            raise AccessPolicyError(
                f"access policy: {key}[{index}] must be a space name, id or glob pattern (a string), not {entry!r}"
            )
        text = entry.strip()
        if not text:
            raise AccessPolicyError(f"access policy: {key}[{index}] is empty; remove it or name a space")
        if text.lower() in (ALL, "*") and key == "allow":
            raise AccessPolicyError(
                f'access policy: allow[{index}] is {entry!r}, which means every space: write "allow": "all" '
                "instead of mixing it with other entries"
            )
        if "[" in text and not _valid_brackets(text):
            raise AccessPolicyError(f"access policy: {key}[{index}] {entry!r} has an unclosed '[' in its pattern")
        if text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return tuple(out)


def _valid_brackets(pattern: str) -> bool:
    depth = 0
    for ch in pattern:
        if ch == "[":
            if depth:
                return False
            depth = 1
        elif ch == "]" and depth:
            depth = 0
    return depth == 0


def parse_access_policy(raw: Mapping[str, Any] | AccessPolicy | None) -> AccessPolicy:
    """The policy from its param (see the module docstring); ``None`` or ``{}`` allows every space.

    Raises :class:`AccessPolicyError` naming the key or the entry at fault (unknown keys included, so a typo such
    as ``"denied"`` never silently allows a space the operator meant to keep out)."""
    if isinstance(raw, AccessPolicy):
        return raw
    if raw is None:
        return AccessPolicy()
    if not isinstance(raw, Mapping):
        raise AccessPolicyError(
            f"access policy must be an object with 'allow' and/or 'deny', not {type(raw).__name__}: {raw!r}"
        )
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise AccessPolicyError(
            f"access policy: unknown key(s) {', '.join(repr(k) for k in unknown)}; the keys are 'allow' and 'deny'"
        )
    allow_raw = raw.get("allow", ALL)
    if allow_raw is None or (isinstance(allow_raw, str) and allow_raw.strip().lower() in (ALL, "*")):
        mode: Literal["all", "selected"] = "all"
        allow: tuple[str, ...] = ()
    else:
        allow = _entries("allow", allow_raw)
        mode = "selected" if allow else "all"
    deny_raw = raw.get("deny")
    deny = () if deny_raw is None else _entries("deny", deny_raw)
    return AccessPolicy(mode, allow, deny)


def _is_pattern(entry: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in entry)


def _matches(entry: str, space: Mapping[str, Any]) -> bool:
    sid, name = str(space.get("Id", "")).lower(), str(space.get("Name", "")).strip().lower()
    wanted = entry.lower()
    if _is_pattern(entry):
        return fnmatch.fnmatchcase(name, wanted) or fnmatch.fnmatchcase(sid, wanted)
    return wanted in (sid, name)


def matching_entry(entries: Iterable[str], space: Mapping[str, Any]) -> str | None:
    """The first entry that matches the space (by id, name or pattern), or ``None``."""
    return next((e for e in entries if _matches(e, space)), None)


def allows(policy: AccessPolicy, space: Mapping[str, Any]) -> bool:
    """Whether the space (``{"Id", "Name"}``) is in the policy: allowed and not denied (deny wins)."""
    if matching_entry(policy.deny, space) is not None:
        return False
    return policy.mode == "all" or matching_entry(policy.allow, space) is not None


def explain(policy: AccessPolicy, space: Mapping[str, Any]) -> str:
    """One sentence saying whether the space is in the policy and which entry decided it."""
    label = f"space {space.get('Name')!r} ({space.get('Id')})"
    denied_by = matching_entry(policy.deny, space)
    allowed_by = None if policy.mode == "all" else matching_entry(policy.allow, space)
    if denied_by is not None:
        also = f", although allow entry {allowed_by!r} matches it" if allowed_by is not None else ""
        return f"{label} is denied by deny entry {denied_by!r}{also} (deny wins)"
    if policy.mode == "all":
        return f"{label} is allowed: the policy allows all spaces and no deny entry matches it"
    if allowed_by is not None:
        return f"{label} is allowed by allow entry {allowed_by!r}"
    return f"{label} is not allowed: no allow entry ({', '.join(repr(e) for e in policy.allow)}) matches it"


def allowed_spaces(policy: AccessPolicy, spaces: Iterable[_S]) -> list[_S]:
    """The spaces in the policy, in the order given."""
    return [s for s in spaces if allows(policy, s)]


def partition_spaces(policy: AccessPolicy, spaces: Iterable[_S]) -> tuple[list[_S], list[_S]]:
    """``(allowed, left_out)``, each in the order given: left-out spaces get no record and add no demand, and a
    left-out space that holds our copies is one to drain."""
    inside: list[_S] = []
    outside: list[_S] = []
    for space in spaces:
        (inside if allows(policy, space) else outside).append(space)
    return inside, outside


def unmatched_entries(policy: AccessPolicy, spaces: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Entries that match no live space (a typo, or a space since deleted), by key: worth a warning, not an error —
    a deny entry for a space that does not exist yet is a valid precaution."""
    out: dict[str, list[str]] = {}
    for key, entries in (("allow", policy.allow), ("deny", policy.deny)):
        missing = [e for e in entries if not any(_matches(e, s) for s in spaces)]
        if missing:
            out[key] = missing
    return out


def from_settings(
    allowed: Sequence[str] | None,
    denied: Sequence[str] | None,
    *,
    standing_allowed: Sequence[str] | None = None,
    standing_denied: Sequence[str] | None = None,
) -> AccessPolicy:
    """The policy of a run: its ``allowed_spaces`` param, else the standing ``[octopus] allowed_spaces`` (empty:
    every space); denied = the run's ``denied_spaces`` *and* the standing ones (deny wins, so a run's params can
    narrow the standing policy but never let a space it denies back in)."""
    allow = list(allowed or []) or list(standing_allowed or [])
    return parse_access_policy({"allow": allow or ALL, "deny": [*(standing_denied or []), *(denied or [])]})
