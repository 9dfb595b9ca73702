"""The share's behaviours, one suite run in both share modes: the worker path (``operations.share_space`` over the
sync hook) and the triggerer path (``aoperations.share_space`` over the async client), against the emulator.

Both drive the same ``operations.share_steps``; these tests pin what a user sees of it in either mode.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from octopus import aoperations, operations
from octopus.aio import AsyncOctopusClient
from octopus.hooks import OctopusHook
from tests.share_trigger.conftest import OLD, connect, mixed_scenario, upstream

MODES = ["worker", "triggerer"]


def share(mode, visit, fleet, *, prune=True, dry_run=False):
    if mode == "worker":
        with OctopusHook() as hook:
            return operations.share_space(hook, visit, [fleet], prune=prune, dry_run=dry_run)

    async def run():
        async with AsyncOctopusClient() as client:
            return await aoperations.share_space(client, visit, [fleet], prune=prune, dry_run=dry_run)

    return asyncio.run(run())


def records(state, space_id):
    return sorted(
        (w["Name"], tuple(w["WorkerPoolIds"]), w["IsDisabled"], w["Endpoint"].get("Uri"))
        for w in state["workers"]
        if w["SpaceId"] == space_id
    )


def outcome(result):
    keep = ("added", "present", "fixed", "replaced", "pruned", "unshared", "draining", "foreign", "failed")
    return {k: result["clouds"]["local"].get(k, 0) for k in keep}


@pytest.fixture
def mixed(emulator, monkeypatch):
    emulator.control.clear_faults()
    emulator.control.reset(mixed_scenario())
    connect(emulator, monkeypatch)
    visits, fleet = upstream()
    return emulator, {v["name"]: v for v in visits}, fleet


EXPECTED = {
    "Space 002": {"present": 1, "added": 1, "pruned": 1},  # t-local-1 there, t-local-2 added, our old copy pruned
    "Space 003": {"added": 2, "pruned": 1, "foreign": 1},  # the laptop is someone else's: counted, untouched
    "Space 004": {"fixed": 1, "added": 1},  # the disabled copy of t-local-2 is enabled again
    "Space 005": {"added": 2},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", sorted(EXPECTED))
def test_each_case_of_a_space_gives_the_same_outcome_and_state_in_both_modes(mixed, mode, space):
    emulator, visits, fleet = mixed
    result = share(mode, visits[space], fleet)

    assert outcome(result) == {**dict.fromkeys(outcome(result), 0), **EXPECTED[space]}
    after = records(emulator.control.state(), visits[space]["id"])
    ours = [r for r in after if r[0].startswith("t-local-")]
    assert [r[0] for r in ours] == ["t-local-1", "t-local-2"] and not any(r[2] for r in ours)
    assert OLD not in [r[0] for r in after]
    if space == "Space 003":
        assert "laptop" in [r[0] for r in after]


@pytest.mark.parametrize("mode", MODES)
def test_a_second_share_writes_nothing(mixed, mode):
    emulator, visits, fleet = mixed
    share(mode, visits["Space 004"], fleet)
    emulator.control.clear_requests()

    result = share(mode, visits["Space 004"], fleet)

    assert outcome(result) == {**dict.fromkeys(outcome(result), 0), "present": 2}
    assert [r["method"] for r in emulator.control.requests() if r["method"] != "GET"] == []


@pytest.mark.parametrize("mode", MODES)
def test_a_dry_run_plans_and_writes_nothing(mixed, mode):
    emulator, visits, fleet = mixed
    before = records(emulator.control.state(), visits["Space 002"]["id"])
    result = share(mode, visits["Space 002"], fleet, dry_run=True)

    assert sorted(p.split(" ")[0] for p in result["planned"]) == ["create", "delete"]  # as a real run would
    assert records(emulator.control.state(), visits["Space 002"]["id"]) == before


@pytest.mark.parametrize("mode", MODES)
def test_prune_off_keeps_stale_copies(mixed, mode):
    emulator, visits, fleet = mixed
    result = share(mode, visits["Space 002"], fleet, prune=False)

    assert outcome(result)["pruned"] == 0
    assert OLD in [r[0] for r in records(emulator.control.state(), visits["Space 002"]["id"])]


@pytest.mark.parametrize("mode", MODES)
def test_a_denied_space_is_withdrawn_and_gets_nothing_new(mixed, mode):
    emulator, visits, fleet = mixed
    withdraw = copy.deepcopy(visits["Space 002"])
    withdraw["pools"]["local"]["role"] = "withdraw"

    result = share(mode, withdraw, fleet, prune=False)

    assert outcome(result)["added"] == 0 and outcome(result)["pruned"] == 2  # t-local-1 and the old copy
    assert [r[0] for r in records(emulator.control.state(), withdraw["id"])] == []
