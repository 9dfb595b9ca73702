"""Unit tests of the pure sharing decisions (no server, no Airflow)."""

from __future__ import annotations

import itertools

import pytest

from octopus import sharing
from octopus.sharing import (
    SharingError,
    SpaceAccessError,
    choose_initial_space,
    compact_evidence,
    format_table,
    plan_fleets,
    plan_retire,
    plan_space,
    pool_name,
    pool_names,
    registration_status,
    resolve_targets,
    spaces_to_visit,
    summarize,
    validate_prefix,
)

TP1, TP2, TP3, OLD, FOREIGN = "A" * 40, "B" * 40, "C" * 40, "D" * 40, "E" * 40
AWS_POOL, GCP_POOL, LOCAL_POOL, OTHER_POOL = "WorkerPools-9", "WorkerPools-8", "WorkerPools-7", "WorkerPools-3"


def space(i, name=None):
    return {"Id": f"Spaces-{i}", "Name": name or f"Space {i:03d}"}


def pool(i, name, **extra):
    return {"Id": f"WorkerPools-{i}", "Name": name, **extra}


def worker(wid, name, tp, pools, uri=None, health="Healthy", disabled=False, style="TentacleActive"):
    uri = uri or f"poll://{name[-1] * 20}/"
    return {
        "Id": f"Workers-{wid}",
        "Name": name,
        "SpaceId": "Spaces-2",
        "WorkerPoolIds": list(pools),
        "IsDisabled": disabled,
        "HealthStatus": health,
        "Thumbprint": tp,
        "Uri": uri,
        "Endpoint": {"CommunicationStyle": style, "Thumbprint": tp, "Uri": uri},
    }


W1 = {"name": "octo-aws-1", "thumbprint": TP1, "uri": "poll://1111111111111111111a/"}
W2 = {"name": "octo-aws-2", "thumbprint": TP2, "uri": "poll://2222222222222222222b/"}
# An earlier fleet's worker, still in the ledger's owned list.
STALE = {"name": "octo-aws-old", "thumbprint": OLD}


def fleet(cloud="aws", workers=(W1, W2), owned=(STALE,)):
    workers = [dict(w) for w in workers]
    return {
        "cloud": cloud,
        "prefix": "octo",
        "workers": workers,
        "owned": [{"name": w["name"], "thumbprint": w["thumbprint"]} for w in workers] + [dict(o) for o in owned],
    }


FLEET = fleet()
ONE = fleet(workers=(W1,))
COPY = {"id": "Spaces-2", "name": "Team", "pools": {"aws": {"pool_id": AWS_POOL, "pool_name": "AWS", "role": "copy"}}}
INITIAL = {
    "id": "Spaces-1",
    "name": "A",
    "pools": {"aws": {"pool_id": AWS_POOL, "pool_name": "AWS", "role": "initial"}},
}


def ops(plan):
    return sorted((a["op"], a["outcome"], a["worker"]["Name"]) for a in plan["actions"])


def written_ids(plan):
    return [a["worker"].get("Id") for a in plan["actions"]]


# --------------------------------------------------------------------------- names


class TestPoolName:
    def test_display_names(self):
        assert [pool_name(c) for c in ("aws", "azure", "gcp", "local")] == [
            "AWS Worker Pool TF",
            "Azure Worker Pool TF",
            "GCP Worker Pool TF",
            "Local Worker Pool TF",
        ]

    def test_unknown_cloud(self):
        with pytest.raises(SharingError, match="Unknown cloud 'oci'"):
            pool_name("oci")

    def test_bad_template_names_the_template(self):
        with pytest.raises(SharingError, match=r"\{region\}"):
            pool_name("aws", "{cloud} {region}")

    def test_attribute_placeholder_is_a_sharing_error(self):
        with pytest.raises(SharingError, match=r"\{cloud\.x\}"):
            pool_name("aws", "{cloud.x} Pool")


class TestPoolNames:
    def test_default_template_gives_distinct_names(self):
        assert pool_names(sharing.DEFAULT_POOL_NAME_TEMPLATE, ["gcp", "aws"]) == {
            "gcp": "GCP Worker Pool TF",
            "aws": "AWS Worker Pool TF",
        }

    def test_escaped_placeholder_gives_every_cloud_one_pool(self):
        with pytest.raises(SharingError, match=r"same pool.*'\{cloud\} Worker Pool' for aws, azure, gcp, local"):
            pool_names("{{cloud}} Worker Pool")

    def test_template_without_placeholder_is_rejected(self):
        with pytest.raises(SharingError, match="same pool"):
            pool_names("Shared Pool", ["aws"])

    def test_format_spec_is_refused_even_when_only_gcp_is_selected(self):
        # "{cloud:.1}" would give "A Pool" for both AWS and Azure: only a plain {cloud} field is accepted.
        with pytest.raises(SharingError, match="plain"):
            pool_names("{cloud:.1} Pool", ["gcp"])

    def test_names_that_differ_only_in_case_clash(self, monkeypatch):
        monkeypatch.setitem(sharing.SUPPORTED_CLOUDS, "oci", "aws")  # "aws Pool" vs "AWS Pool"
        with pytest.raises(SharingError, match="same pool"):
            pool_names("{cloud} Pool", ["oci"])

    def test_plan_fleets_rejects_a_colliding_template(self):
        with pytest.raises(SharingError, match="same pool"):
            plan_fleets(
                [space(1)],
                lambda _: [pool(1, "{cloud} Worker Pool")],
                clouds=["aws"],
                instance_count={"aws": 1},
                pool_name_template="{{cloud}} Worker Pool",
            )


class TestValidatePrefix:
    @pytest.mark.parametrize("prefix", ["octopus-shared", "team", "t", "a1-b2", "x" * sharing.NAME_PREFIX_MAX])
    def test_accepts(self, prefix):
        assert validate_prefix(prefix) == prefix

    @pytest.mark.parametrize(
        "prefix",
        ["", "Team", "team.x", "team--x", "team-", "-team", "1team", "team_x", "x" * (sharing.NAME_PREFIX_MAX + 1)],
    )
    def test_rejects_bad_syntax(self, prefix):
        with pytest.raises(SharingError, match="name_prefix .* is invalid"):
            validate_prefix(prefix)

    @pytest.mark.parametrize("prefix", ["team-aws", "x-local-y", "azure", "gcp-team"])
    def test_rejects_cloud_segments(self, prefix):
        with pytest.raises(SharingError, match="contains the cloud name"):
            validate_prefix(prefix)

    def test_cloud_name_inside_a_segment_is_fine(self):
        assert validate_prefix("awsome-localhost") == "awsome-localhost"

    def test_not_a_string(self):
        with pytest.raises(SharingError, match="is invalid"):
            validate_prefix(None)

    def test_rejects_trailing_newline(self):
        with pytest.raises(SharingError):
            validate_prefix("team\n")

    def test_plan_fleets_validates_the_prefix(self):
        with pytest.raises(SharingError, match="'team-aws' contains the cloud name 'aws'"):
            plan_fleets(
                [space(1)],
                lambda _: [pool(1, "AWS Worker Pool TF")],
                clouds=["aws"],
                instance_count={"aws": 1},
                name_prefix="team-aws",
            )

    def test_no_deployment_names_match_another_deployments_prefix(self):
        """Over every prefix of up to 3 segments from a tricky alphabet: names of (p, c) never start with q-d-."""
        segments = ["a", "team", "aws", "azure", "gcp", "local", "awsx", "loc", "x1", "shared", "9"]
        valid = []
        for n in (1, 2, 3):
            for parts in itertools.product(segments, repeat=n):
                try:
                    valid.append(validate_prefix("-".join(parts)))
                except SharingError:
                    continue
        assert "team" in valid and "a-9" in valid and "team-aws" not in valid
        deployments = [(p, c) for p in valid for c in sharing.SUPPORTED_CLOUDS]
        instances = ["1", "i-0abc", "aws-1", "x-local-y", "team-gcp-2"]
        clashes = [
            ((p, c), (q, d))
            for p, c in deployments
            for q, d in deployments
            if (p, c) != (q, d) and any(f"{p}-{c}-{i}".startswith(f"{q}-{d}-") for i in instances)
        ]
        assert len(deployments) > 1000
        assert clashes == []


# --------------------------------------------------------------------------- discovery


class TestPlanFleets:
    def plan(self, spaces, pools, **kw):
        calls = []

        def pools_of(space_id):
            calls.append(space_id)
            return pools.get(space_id, [])

        kw.setdefault("clouds", ["aws"])
        kw.setdefault("instance_count", {"aws": 2, "local": 3})
        return plan_fleets(spaces, pools_of, **kw), calls

    def test_first_space_with_pool_is_initial(self):
        spaces = [space(1), space(2), space(3), space(4)]
        pools = {
            "Spaces-2": [pool(1, "AWS Worker Pool TF")],
            "Spaces-3": [],
            "Spaces-4": [pool(7, "aws worker pool tf")],
        }
        (plan,), _ = self.plan(spaces, pools)
        assert plan["initial_space"] == {"id": "Spaces-2", "name": "Space 002", "pool_id": "WorkerPools-1"}
        assert plan["spaces"] == [{"id": "Spaces-4", "name": "Space 004", "pool_id": "WorkerPools-7"}]
        assert plan["spaces_without_pool"] == ["Space 001", "Space 003"]

    def test_plan_carries_the_deployment_identity(self):
        (plan,), _ = self.plan([space(1)], {"Spaces-1": [pool(1, "AWS Worker Pool TF")]}, name_prefix="team")
        assert (plan["prefix"], plan["name_prefix"]) == ("team", "team-aws")

    def test_plans_sorted_by_cloud(self):
        pools = {"Spaces-1": [pool(1, "AWS Worker Pool TF"), pool(2, "Local Worker Pool TF")]}
        plans, _ = self.plan([space(1)], pools, clouds=["local", "aws"])
        assert [p["cloud"] for p in plans] == ["aws", "local"]
        assert [p["instance_count"] for p in plans] == [2, 3]

    def test_zero_instances_is_a_valid_count(self):
        (plan,), _ = self.plan([space(1)], {"Spaces-1": [pool(1, "AWS Worker Pool TF")]}, instance_count={"aws": 0})
        assert plan["instance_count"] == 0

    def test_pool_nowhere_names_the_pool(self):
        with pytest.raises(SharingError, match="'AWS Worker Pool TF'"):
            self.plan([space(1)], {"Spaces-1": [pool(1, "Other")]})

    def test_no_spaces_is_an_error(self):
        with pytest.raises(SharingError, match="no spaces"):
            self.plan([], {})

    @pytest.mark.parametrize("count", [-1, True, "2", None])
    def test_bad_count_rejected(self, count):
        with pytest.raises(SharingError, match=r"instance_count\['aws'\]"):
            self.plan([space(1)], {}, instance_count={"aws": count})

    def test_dynamic_pool_is_not_a_target(self):
        pools = {
            "Spaces-1": [pool(1, "AWS Worker Pool TF")],
            "Spaces-2": [pool(2, "AWS Worker Pool TF", WorkerPoolType="DynamicWorkerPool", CanAddWorkers=False)],
        }
        (plan,), _ = self.plan([space(1), space(2)], pools)
        assert plan["spaces"] == []
        assert plan["spaces_without_pool"] == ["Space 002 (pool is dynamic)"]

    def test_targets_limit_sharing_and_skip_pool_lookups(self):
        spaces = [space(i) for i in range(1, 6)]
        pools = {s["Id"]: [pool(i, "AWS Worker Pool TF")] for i, s in enumerate(spaces, 1)}
        (plan,), calls = self.plan(spaces, pools, target_spaces=["Space 004"])
        assert [s["id"] for s in plan["spaces"]] == ["Spaces-4"]
        assert calls == ["Spaces-1", "Spaces-4"]

    def test_pinned_space_is_read_even_when_not_targeted(self):
        spaces = [space(i) for i in range(1, 6)]
        pools = {s["Id"]: [pool(i, "AWS Worker Pool TF")] for i, s in enumerate(spaces, 1)}
        pins = {"aws": {"id": "Spaces-1", "name": "Space 001", "pool_id": "WorkerPools-1"}}
        _, calls = self.plan(spaces, pools, target_spaces=["Space 004"], pins=pins)
        assert "Spaces-1" in calls

    def test_unreadable_space_after_initial_is_visited_with_its_reason(self):
        def pools_of(space_id):
            if space_id == "Spaces-2":
                raise SpaceAccessError("403 Missing permission: WorkerView")
            return [pool(1, "AWS Worker Pool TF")]

        (plan,) = plan_fleets([space(1), space(2)], pools_of, clouds=["aws"], instance_count={"aws": 1})
        assert plan["spaces"] == [
            {"id": "Spaces-2", "name": "Space 002", "pool_id": None, "error": "403 Missing permission: WorkerView"}
        ]

    def test_unreadable_space_before_initial_fails_discovery(self):
        def pools_of(space_id):
            raise SpaceAccessError("403")

        with pytest.raises(SharingError, match="initial space cannot be decided"):
            plan_fleets([space(1), space(2)], pools_of, clouds=["aws"], instance_count={"aws": 1})

    def test_target_by_id(self):
        pools = {f"Spaces-{i}": [pool(i, "AWS Worker Pool TF")] for i in (1, 2, 3)}
        (plan,), _ = self.plan([space(1), space(2), space(3)], pools, target_spaces=["spaces-3"])
        assert [s["id"] for s in plan["spaces"]] == ["Spaces-3"]


class TestInitialSpacePin:
    """The initial space is pinned per deployment and never moves silently (issue 9, point 4)."""

    spaces = [space(2, "Platform"), space(3, "Team")]
    pools = {"Spaces-2": [pool(1, "AWS Worker Pool TF")], "Spaces-3": [pool(2, "AWS Worker Pool TF")]}
    pin = {"aws": {"id": "Spaces-2", "name": "Platform", "pool_id": "WorkerPools-1"}}

    def plan(self, spaces=None, pools=None, **kw):
        pools = self.pools if pools is None else pools
        kw.setdefault("clouds", ["aws"])
        kw.setdefault("instance_count", {"aws": 2, "gcp": 2})
        return plan_fleets(spaces or self.spaces, lambda sid: pools.get(sid, []), **kw)

    def test_first_use_takes_the_first_holder(self):
        (plan,) = self.plan(pins={"aws": None})
        assert (plan["initial_space"]["id"], plan["initial_pin"]) == ("Spaces-2", "first_use")

    def test_pinned_space_still_first(self):
        (plan,) = self.plan(pins=self.pin)
        assert (plan["initial_space"]["id"], plan["initial_pin"]) == ("Spaces-2", "pinned")
        assert [s["id"] for s in plan["spaces"]] == ["Spaces-3"]

    def test_new_space_sorting_first_fails_naming_both_and_the_param(self):
        spaces = [space(1, "Aardvark"), *self.spaces]
        pools = {**self.pools, "Spaces-1": [pool(5, "AWS Worker Pool TF")]}
        with pytest.raises(SharingError) as err:
            self.plan(spaces, pools, pins=self.pin)
        message = str(err.value)
        assert "'Platform' (Spaces-2)" in message
        assert "'Aardvark' (Spaces-1)" in message
        assert "initial_space param" in message
        assert "Nothing was changed" in message

    def test_one_moved_cloud_fails_the_whole_plan(self):
        # gcp's pin is fine, aws's would move: no plan for either (nothing is written before the error).
        spaces = [space(1, "Aardvark"), *self.spaces]
        pools = {
            "Spaces-1": [pool(5, "AWS Worker Pool TF")],
            "Spaces-2": [pool(1, "AWS Worker Pool TF"), pool(6, "GCP Worker Pool TF")],
        }
        pins = {**self.pin, "gcp": {"id": "Spaces-2", "name": "Platform", "pool_id": "WorkerPools-6"}}
        with pytest.raises(SharingError, match="aws fleet"):
            self.plan(spaces, pools, pins=pins, clouds=["aws", "gcp"])

    def test_renamed_pinned_space_is_fine(self):
        spaces = [space(2, "Platform (EU)"), space(3, "Team")]
        (plan,) = self.plan(spaces, pins=self.pin)
        assert plan["initial_space"] == {"id": "Spaces-2", "name": "Platform (EU)", "pool_id": "WorkerPools-1"}
        assert plan["initial_pin"] == "pinned"

    def test_pinned_space_that_lost_its_pool_fails(self):
        pools = {"Spaces-3": [pool(2, "AWS Worker Pool TF")]}
        with pytest.raises(SharingError, match=r"pinned to initial space 'Platform' \(Spaces-2\), which no longer"):
            self.plan(pools=pools, pins=self.pin)

    def test_pinned_space_whose_pool_became_dynamic_fails(self):
        pools = {**self.pools, "Spaces-2": [pool(1, "AWS Worker Pool TF", WorkerPoolType="DynamicWorkerPool")]}
        with pytest.raises(SharingError, match="no longer holds"):
            self.plan(pools=pools, pins=self.pin)

    def test_initial_space_param_moves_it_deliberately(self):
        (plan,) = self.plan(pins=self.pin, initial_space="Team")
        assert (plan["initial_space"]["id"], plan["initial_pin"]) == ("Spaces-3", "moved")
        assert [s["id"] for s in plan["spaces"]] == ["Spaces-2"]

    def test_initial_space_param_keeps_a_pin_that_is_no_longer_first(self):
        spaces = [space(1, "Aardvark"), *self.spaces]
        pools = {**self.pools, "Spaces-1": [pool(5, "AWS Worker Pool TF")]}
        (plan,) = self.plan(spaces, pools, pins=self.pin, initial_space="spaces-2")
        assert (plan["initial_space"]["id"], plan["initial_pin"]) == ("Spaces-2", "pinned")

    def test_initial_space_param_on_first_use(self):
        (plan,) = self.plan(pins={}, initial_space="Team")
        assert (plan["initial_space"]["id"], plan["initial_pin"]) == ("Spaces-3", "first_use")

    def test_initial_space_param_without_the_pool_fails(self):
        spaces = [*self.spaces, space(4, "Empty")]
        with pytest.raises(SharingError, match=r"initial_space 'Empty' \(Spaces-4\) holds no static pool"):
            self.plan(spaces, pins=self.pin, initial_space="Empty")

    def test_initial_space_param_naming_no_space_fails(self):
        with pytest.raises(SharingError, match="initial_space 'Nowhere' names no space"):
            self.plan(pins=self.pin, initial_space="Nowhere")

    def test_teardown_follows_the_pin(self):
        spaces = [space(1, "Aardvark"), *self.spaces]
        pools = {**self.pools, "Spaces-1": [pool(5, "AWS Worker Pool TF")]}
        (plan,) = self.plan(spaces, pools, pins=self.pin, follow_pins=True)
        assert (plan["initial_space"]["id"], plan["initial_pin"]) == ("Spaces-2", "pinned")
        assert {s["id"] for s in plan["spaces"]} == {"Spaces-1", "Spaces-3"}

    def test_teardown_still_fails_when_the_pin_lost_its_pool(self):
        with pytest.raises(SharingError, match="no longer holds"):
            self.plan(pools={"Spaces-3": [pool(2, "AWS Worker Pool TF")]}, pins=self.pin, follow_pins=True)

    def test_choose_initial_space_directly(self):
        holders = [{"id": "Spaces-5", "name": "E", "pool_id": "p5"}, {"id": "Spaces-6", "name": "F", "pool_id": "p6"}]
        entry, pin = choose_initial_space(
            "aws",
            holders,
            pinned={"id": "Spaces-6", "name": "F"},
            requested=None,
            pool="P",
            prefix="t",
            follow_pin=True,
        )
        assert (entry["id"], pin) == ("Spaces-6", "pinned")
        with pytest.raises(SharingError, match="No space holds the worker pool 'P'"):
            choose_initial_space("aws", [], pinned=None, requested=None, pool="P", prefix="t")

    def test_target_spaces_excluding_the_initial_space(self):
        (plan,) = self.plan(pins=self.pin, target_spaces=["Team"])
        assert plan["initial_selected"] is False
        visits = spaces_to_visit([plan], include_initial=True)
        assert [v["id"] for v in visits] == ["Spaces-3"]
        assert visits[0]["pools"]["aws"]["role"] == "copy"

    def test_target_spaces_including_the_initial_space(self):
        (plan,) = self.plan(pins=self.pin, target_spaces=["Platform"])
        assert plan["initial_selected"] is True
        assert plan["spaces"] == []
        visits = spaces_to_visit([plan], include_initial=True)
        assert [(v["id"], v["pools"]["aws"]["role"]) for v in visits] == [("Spaces-2", "initial")]


class TestResolveTargets:
    def test_unknown_target_is_an_error(self):
        with pytest.raises(SharingError, match="'Nope'"):
            resolve_targets([space(1)], ["Nope"])

    def test_empty_means_all(self):
        assert resolve_targets([space(1)], []) is None

    def test_names_compare_trimmed_and_ignoring_case(self):
        assert resolve_targets([space(1, "Team A")], ["  team a "]) == {"Spaces-1"}


class TestSpacesToVisit:
    plans = [
        {
            "cloud": "aws",
            "pool_name": "AWS Worker Pool TF",
            "initial_space": {"id": "Spaces-1", "name": "A", "pool_id": "WorkerPools-1"},
            "spaces": [{"id": "Spaces-10", "name": "J", "pool_id": "WorkerPools-3"}],
        },
        {
            "cloud": "gcp",
            "pool_name": "GCP Worker Pool TF",
            "initial_space": {"id": "Spaces-10", "name": "J", "pool_id": "WorkerPools-4"},
            "spaces": [{"id": "Spaces-2", "name": "B", "pool_id": "WorkerPools-5"}],
        },
    ]

    def test_union_sorted_by_id_number(self):
        visits = spaces_to_visit(self.plans, include_initial=False)
        assert [v["id"] for v in visits] == ["Spaces-2", "Spaces-10"]
        assert visits[1]["pools"] == {
            "aws": {"pool_id": "WorkerPools-3", "pool_name": "AWS Worker Pool TF", "role": "copy"}
        }

    def test_initial_spaces_only_when_pruning(self):
        visits = spaces_to_visit(self.plans, include_initial=True)
        assert [v["id"] for v in visits] == ["Spaces-1", "Spaces-2", "Spaces-10"]
        assert visits[2]["pools"]["gcp"]["role"] == "initial"

    def test_unselected_initial_space_is_skipped(self):
        plans = [{**self.plans[0], "initial_selected": False}, self.plans[1]]
        visits = spaces_to_visit(plans, include_initial=True)
        assert [v["id"] for v in visits] == ["Spaces-2", "Spaces-10"]
        assert "gcp" in visits[1]["pools"]


# --------------------------------------------------------------------------- registration (wait)


def record(name, tp, health="Healthy", style="TentacleActive", uri=None):
    return worker(0, name, tp, ["WorkerPools-1"], uri=uri, health=health, style=style) | {"Id": f"Workers-{name}"}


def spec(instances, expected=None, previous=()):
    return {
        "expected_count": len(instances or []) if expected is None else expected,
        "name_prefix": "octo-local",
        "instances": instances,
        "previous": list(previous),
    }


def inst(n, iid=None):
    return {"name": f"octo-local-{n}", "id": iid or f"id-{n}"}


def lost(instances, *, before, kept=None, owned=()):
    """The spec of a wait whose ledger records no fleet (first use, or the ledger was lost)."""
    return {
        **spec(instances),
        "previous": None,
        "registered_before": before,
        "instances_before": kept,
        "owned": list(owned),
    }


class TestRegistrationWithoutALedger:
    """A lost ledger never leads to sharing a replaced instance's old endpoint (issue 17, point 3)."""

    def test_an_instance_this_apply_created_must_register_again(self):
        status = registration_status(
            [record("octo-local-1", OLD)], lost([inst(1, "vm-new")], before={"octo-local-1": OLD})
        )
        assert status["done"] is False
        assert status["seen"]["waiting"] == ["octo-local-1"]
        assert "registered before this run's apply" in status["seen"]["ignored"][0]["why"]

    def test_its_new_registration_counts(self):
        status = registration_status(
            [record("octo-local-1", TP1)], lost([inst(1, "vm-new")], before={"octo-local-1": OLD})
        )
        assert [w["thumbprint"] for w in status["seen"]["workers"]] == [TP1]

    def test_an_instance_the_apply_kept_counts_as_registered(self):
        kept = [inst(1, "vm-1")]
        status = registration_status([record("octo-local-1", TP1)], lost(kept, before={"octo-local-1": TP1}, kept=kept))
        assert status["done"] is True

    def test_an_adopted_endpoint_counts(self):
        status = registration_status(
            [record("octo-local-1", TP1)], lost([inst(1, "vm-new")], before={"octo-local-1": TP1}, owned=[TP1])
        )
        assert status["done"] is True

    def test_a_first_use_with_no_record_before_is_unaffected(self):
        status = registration_status([record("octo-local-1", TP1)], lost([inst(1)], before={}))
        assert status["done"] is True


class TestRegistrationStatus:
    def test_counts_exactly_the_inventory_names(self):
        records = [record("octo-local-1", TP1), record("octo-local-10", TP2)]
        status = registration_status(records, spec([inst(1)]))
        assert status["done"] is True
        assert [w["name"] for w in status["seen"]["workers"]] == ["octo-local-1"]
        assert status["seen"]["workers"][0]["instance_id"] == "id-1"

    def test_look_alike_not_in_inventory_is_suspicious(self):
        records = [record("octo-local-1", TP1), record("octo-local-evil", TP2)]
        status = registration_status(records, spec([inst(1)]))
        (sus,) = status["seen"]["suspicious"]
        assert sus["name"] == "octo-local-evil"
        assert "not in the cloud's inventory" in sus["why"]
        assert "SUSPICIOUS, never shared" in status["summary"]
        assert TP2 not in [w["thumbprint"] for w in status["seen"]["workers"]]

    def test_waits_for_a_missing_instance(self):
        status = registration_status([record("octo-local-1", TP1)], spec([inst(1), inst(2)]))
        assert status["done"] is False
        assert status["seen"]["waiting"] == ["octo-local-2"]

    def test_unavailable_record_is_not_counted(self):
        status = registration_status([record("octo-local-1", TP1, health="Unavailable")], spec([inst(1)]))
        assert status["done"] is False
        assert status["seen"]["workers"] == []

    def test_listening_record_under_the_name_is_suspicious(self):
        status = registration_status([record("octo-local-1", TP1, style="TentaclePassive")], spec([inst(1)]))
        assert status["done"] is False
        assert status["seen"]["suspicious"][0]["why"] == "not a polling tentacle"

    def test_replaced_instance_with_the_old_thumbprint_is_not_counted(self):
        previous = [{"name": "octo-local-1", "thumbprint": OLD, "instance_id": "id-1"}]
        status = registration_status([record("octo-local-1", OLD)], spec([inst(1, "id-1b")], previous=previous))
        assert status["done"] is False
        assert status["seen"]["workers"] == []
        assert "replaced instance" in status["seen"]["ignored"][0]["why"]

    def test_replaced_instance_that_re_registered_counts(self):
        previous = [{"name": "octo-local-1", "thumbprint": OLD, "instance_id": "id-1"}]
        status = registration_status([record("octo-local-1", TP1)], spec([inst(1, "id-1b")], previous=previous))
        assert status["done"] is True
        assert status["seen"]["workers"][0]["thumbprint"] == TP1

    def test_unchanged_instance_with_a_changed_thumbprint_is_suspicious(self):
        previous = [{"name": "octo-local-1", "thumbprint": OLD, "instance_id": "id-1"}]
        status = registration_status([record("octo-local-1", FOREIGN)], spec([inst(1)], previous=previous))
        assert status["done"] is False
        assert status["seen"]["workers"] == []
        assert "thumbprint changed" in status["seen"]["suspicious"][0]["why"]

    def test_unchanged_instance_with_its_thumbprint_counts(self):
        previous = [{"name": "octo-local-1", "thumbprint": TP1, "instance_id": "id-1"}]
        status = registration_status([record("octo-local-1", TP1)], spec([inst(1)], previous=previous))
        assert status["done"] is True

    def test_zero_instances_is_done_at_once_with_no_workers(self):
        records = [record("octo-local-1", TP1), record("octo-local-2", TP2)]
        status = registration_status(records, spec([], expected=0))
        assert status["done"] is True
        assert status["seen"]["workers"] == []
        assert {s["name"] for s in status["seen"]["suspicious"]} == {"octo-local-1", "octo-local-2"}
        assert status["summary"].startswith("0 of 0 workers")

    def test_never_more_than_expected(self):
        records = [record(f"octo-local-{n}", tp) for n, tp in ((1, TP1), (2, TP2), (3, TP3))]
        status = registration_status(records, spec([inst(1), inst(2), inst(3)], expected=2))
        assert status["done"] is True
        assert len(status["seen"]["workers"]) == 2

    def test_unknown_inventory_is_never_done(self):
        status = registration_status([record("octo-local-1", TP1)], spec(None, expected=0))
        assert status["done"] is False
        assert status["seen"]["workers"] == []
        assert "inventory is unknown" in status["summary"]

    def test_instances_from_outputs(self):
        out = {"outputs": {"instances": [{"name": "n1", "id": 7}], "worker_names": ["x"]}}
        assert sharing.instances_from(out) == [{"name": "n1", "id": "7"}]
        # worker_names only: no per-instance id (""), so the ledger's replacement checks are skipped
        assert sharing.instances_from({"outputs": {"worker_names": ["n1"]}}) == [{"name": "n1", "id": ""}]
        assert sharing.instances_from({"outputs": {}}) is None
        assert sharing.instances_from(None) is None


# --------------------------------------------------------------------------- plan_space


class TestPlanSpaceCopies:
    def test_absent_workers_are_created_with_minimal_body(self):
        plan = plan_space(COPY, {"aws": FLEET}, [], prune=True)
        assert ops(plan) == [("create", "added", "octo-aws-1"), ("create", "added", "octo-aws-2")]
        body = plan["actions"][0]["worker"]
        assert body == {
            "Name": "octo-aws-1",
            "SpaceId": "Spaces-2",
            "IsDisabled": False,
            "MachinePolicyId": "<default>",
            "WorkerPoolIds": [AWS_POOL],
            "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": W1["uri"], "Thumbprint": TP1},
        }

    def test_present_workers_need_no_write(self):
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL], uri=W1["uri"]),
            worker(2, "octo-aws-2", TP2, [AWS_POOL], uri=W2["uri"]),
        ]
        plan = plan_space(COPY, {"aws": FLEET}, existing, prune=True)
        assert plan["actions"] == []
        assert plan["present"] == {"aws": 2}

    def test_present_matches_name_ignoring_case_and_thumbprint_case(self):
        existing = [worker(1, "OCTO-AWS-1", TP1.lower(), [AWS_POOL], uri=W1["uri"])]
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=True)
        assert plan["actions"] == []
        assert plan["present"] == {"aws": 1}

    def test_worker_outside_pool_gets_pool_added(self):
        existing = [worker(1, "octo-aws-1", TP1, [OTHER_POOL], uri=W1["uri"])]
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=True)
        assert ops(plan) == [("update", "fixed", "octo-aws-1")]
        assert plan["actions"][0]["worker"]["WorkerPoolIds"] == [OTHER_POOL, AWS_POOL]

    def test_disabled_or_moved_endpoint_is_fixed_in_place(self):
        existing = [worker(1, "octo-aws-1", TP1, [AWS_POOL], uri="poll://old0000000000000000/", disabled=True)]
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=True)
        (action,) = plan["actions"]
        assert (action["op"], action["worker"]["Id"]) == ("update", "Workers-1")
        assert action["worker"]["IsDisabled"] is False
        assert action["worker"]["Endpoint"]["Uri"] == W1["uri"]

    def test_our_same_named_stale_copy_is_re_pointed(self):
        existing = [worker(1, "octo-aws-1", OLD, [AWS_POOL], health="Unavailable")]
        owned = ({"name": "octo-aws-1", "thumbprint": OLD},)
        plan = plan_space(COPY, {"aws": fleet(workers=(W1,), owned=owned)}, existing, prune=True)
        (action,) = plan["actions"]
        assert (action["op"], action["outcome"], action["worker"]["Id"]) == ("update", "replaced", "Workers-1")
        assert action["worker"]["Endpoint"]["Thumbprint"] == TP1
        assert action["worker"]["Endpoint"]["Uri"] == W1["uri"]
        assert action["worker"]["WorkerPoolIds"] == [AWS_POOL]

    def test_our_same_named_stale_copy_without_prune_is_a_clash(self):
        existing = [worker(1, "octo-aws-1", OLD, [AWS_POOL])]
        owned = ({"name": "octo-aws-1", "thumbprint": OLD},)
        plan = plan_space(COPY, {"aws": fleet(workers=(W1,), owned=owned)}, existing, prune=False)
        assert plan["actions"] == []
        assert "enable prune_stale" in plan["clashes"]["aws"][0]

    def test_foreign_record_holding_the_name_is_a_clash_with_no_write(self):
        existing = [worker(7, "octo-aws-1", FOREIGN, [OTHER_POOL])]
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=True)
        assert plan["actions"] == []
        (message,) = plan["clashes"]["aws"]
        assert "'octo-aws-1' is taken in space Team by Workers-7" in message
        assert "did not make" in message and "Rename or remove that machine" in message

    def test_foreign_record_holding_the_name_in_the_pool_is_not_re_pointed(self):
        existing = [worker(7, "octo-aws-1", FOREIGN, [AWS_POOL], health="Unavailable")]
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=True)
        assert plan["actions"] == []
        assert plan["clashes"]["aws"]
        assert plan["foreign"] == {"aws": ["octo-aws-1"]}

    def test_a_copy_renamed_by_a_space_admin_is_still_ours_and_left_as_named(self):
        existing = [worker(7, "builder", TP1, [AWS_POOL], uri=W1["uri"])]
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=True)
        assert plan["actions"] == []
        assert plan["present"] == {"aws": 1}
        assert plan["foreign"] == {}
        assert "renamed to 'builder'" in plan["notes"]["aws"][0]

    def test_a_renamed_stale_copy_is_still_pruned(self):
        existing = [worker(7, "renamed-by-admin", OLD, [AWS_POOL], health="Unavailable")]
        plan = plan_space(COPY, {"aws": fleet(workers=(W1,))}, existing, prune=True)
        assert ("delete", "pruned", "renamed-by-admin") in ops(plan)

    def test_cloud_without_fleet_is_not_run(self):
        plan = plan_space(COPY, {}, [worker(3, "x", OLD, [AWS_POOL])], prune=True)
        assert plan == {
            "actions": [],
            "present": {},
            "errors": {},
            "clashes": {},
            "notes": {},
            "not_run": ["aws"],
            "foreign": {},
            "owned_remaining": {},
            "ours_left": {},
            "adoptable": {},
        }


class TestPlanSpaceOwnership:
    """Only records whose (name, thumbprint) the ledger owns are ever written (issue 9, point 1)."""

    @pytest.mark.parametrize(
        "foreign",
        [
            worker(5, "builder", FOREIGN, [AWS_POOL]),
            worker(5, "laptop", FOREIGN, [AWS_POOL], health="Unavailable"),
            worker(5, "two-pools", FOREIGN, [AWS_POOL, OTHER_POOL], health="Unavailable"),
            worker(5, "octo-aws-lookalike", FOREIGN, [AWS_POOL], health="Unavailable"),
            # Our stale name with a thumbprint the ledger never saw: not ours.
            worker(5, "octo-aws-old", FOREIGN, [AWS_POOL], health="Unavailable"),
            worker(5, "listener", FOREIGN, [AWS_POOL], style="TentaclePassive"),
        ],
        ids=["healthy", "offline", "in-two-pools", "look-alike", "stale-name-other-thumbprint", "listening"],
    )
    @pytest.mark.parametrize("where", [COPY, INITIAL], ids=["copy", "initial"])
    def test_foreign_worker_in_a_shared_pool_is_never_touched(self, foreign, where):
        existing = [worker(1, "octo-aws-1", TP1, [AWS_POOL], uri=W1["uri"]), foreign]
        plan = plan_space(where, {"aws": ONE}, existing, prune=True)
        assert "Workers-5" not in written_ids(plan)
        assert plan["actions"] == []

    @pytest.mark.parametrize(
        "foreign",
        [
            worker(5, "builder", FOREIGN, [AWS_POOL]),
            worker(5, "laptop", FOREIGN, [AWS_POOL], health="Unavailable"),
            worker(5, "two-pools", FOREIGN, [AWS_POOL, OTHER_POOL]),
        ],
        ids=["healthy", "offline", "in-two-pools"],
    )
    @pytest.mark.parametrize("prune", [True, False])
    def test_foreign_worker_in_a_shared_pool_is_listed(self, foreign, prune):
        plan = plan_space(COPY, {"aws": ONE}, [foreign], prune=prune)
        assert plan["foreign"] == {"aws": [foreign["Name"]]}

    def test_listening_worker_in_a_shared_pool_is_listed_as_foreign(self):
        plan = plan_space(
            COPY, {"aws": ONE}, [worker(5, "listener", FOREIGN, [AWS_POOL], style="TentaclePassive")], prune=True
        )
        assert plan["foreign"] == {"aws": ["listener"]}

    def test_foreign_worker_outside_the_shared_pool_is_not_listed(self):
        plan = plan_space(COPY, {"aws": ONE}, [worker(5, "builder", FOREIGN, [OTHER_POOL])], prune=True)
        assert plan["foreign"] == {}

    def test_our_stale_copy_is_pruned(self):
        existing = [worker(3, "octo-aws-old", OLD, [AWS_POOL], health="Unavailable")]
        plan = plan_space(COPY, {"aws": FLEET}, existing, prune=True)
        assert [a for a in plan["actions"] if a["op"] != "create"] == [
            {
                "op": "delete",
                "cloud": "aws",
                "outcome": "pruned",
                "worker": existing[0],
                "reason": "aws: octo-aws-old: no longer in the fleet",
            }
        ]

    def test_our_stale_copy_in_other_pools_is_unshared(self):
        existing = [worker(3, "octo-aws-old", OLD, [AWS_POOL, OTHER_POOL])]
        plan = plan_space(COPY, {"aws": FLEET}, existing, prune=True)
        (update,) = [a for a in plan["actions"] if a["op"] != "create"]
        assert (update["op"], update["outcome"], update["worker"]["WorkerPoolIds"]) == (
            "update",
            "unshared",
            [OTHER_POOL],
        )

    def test_initial_space_prunes_only_our_stale_records(self):
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL]),
            worker(3, "octo-aws-old", OLD, [AWS_POOL], health="Unavailable"),
            worker(4, "laptop", FOREIGN, [AWS_POOL], health="Unavailable"),
        ]
        plan = plan_space(INITIAL, {"aws": FLEET}, existing, prune=True)
        assert ops(plan) == [("delete", "pruned", "octo-aws-old")]
        assert plan["foreign"] == {"aws": ["laptop"]}

    def test_initial_space_adds_and_repairs_nothing(self):
        existing = [worker(1, "octo-aws-1", TP1, [AWS_POOL], uri="poll://elsewhere000000000/", disabled=True)]
        plan = plan_space(INITIAL, {"aws": FLEET}, existing, prune=True)
        assert plan["actions"] == []

    def test_empty_fleet_prunes_every_copy_of_ours(self):
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL]),
            worker(2, "octo-aws-2", TP2, [AWS_POOL]),
            worker(5, "builder", FOREIGN, [AWS_POOL]),
        ]
        empty = {**FLEET, "workers": []}
        plan = plan_space(COPY, {"aws": empty}, existing, prune=True)
        assert ops(plan) == [("delete", "pruned", "octo-aws-1"), ("delete", "pruned", "octo-aws-2")]
        assert plan["foreign"] == {"aws": ["builder"]}

    def test_prune_false_never_deletes(self):
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL], uri="poll://moved00000000000000/"),
            worker(3, "octo-aws-old", OLD, [AWS_POOL], health="Unavailable"),
        ]
        plan = plan_space(COPY, {"aws": {**FLEET, "workers": []}}, existing, prune=False)
        assert plan["actions"] == []
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=False)
        assert [(a["op"], a["worker"]["Id"]) for a in plan["actions"]] == [("update", "Workers-1")]

    def test_owned_remaining_lists_our_stale_records_not_deleted(self):
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL], uri=W1["uri"]),
            worker(3, "octo-aws-old", OLD, [AWS_POOL, OTHER_POOL]),  # unshared: still exists
            worker(4, "octo-aws-older", TP3, [OTHER_POOL]),  # outside the pool: never touched
            worker(6, "octo-aws-gone", "F" * 40, [AWS_POOL]),  # deleted
            worker(5, "builder", FOREIGN, [AWS_POOL]),  # foreign: not ours to remember
        ]
        owned = (
            STALE,
            {"name": "octo-aws-older", "thumbprint": TP3},
            {"name": "octo-aws-gone", "thumbprint": "F" * 40},
        )
        plan = plan_space(COPY, {"aws": fleet(workers=(W1,), owned=owned)}, existing, prune=True)
        assert ops(plan) == [("delete", "pruned", "octo-aws-gone"), ("update", "unshared", "octo-aws-old")]
        assert plan["owned_remaining"] == {
            "aws": [{"name": "octo-aws-old", "thumbprint": OLD}, {"name": "octo-aws-older", "thumbprint": TP3}]
        }

    def test_owned_remaining_without_prune_keeps_the_stale_copy(self):
        existing = [worker(3, "octo-aws-old", OLD, [AWS_POOL])]
        plan = plan_space(COPY, {"aws": ONE}, existing, prune=False)
        assert plan["owned_remaining"] == {"aws": [{"name": "octo-aws-old", "thumbprint": OLD}]}


class TestPlanSpaceOneWritePerRecord:
    """Every cloud's decision about a record is merged into one final write (issue 9, point 5)."""

    two = {
        "id": "Spaces-2",
        "name": "Team",
        "pools": {
            "aws": {"pool_id": AWS_POOL, "pool_name": "AWS", "role": "copy"},
            "gcp": {"pool_id": GCP_POOL, "pool_name": "GCP", "role": "copy"},
        },
    }

    def both_own(self, record_name, tp):
        owned = ({"name": record_name, "thumbprint": tp},)
        return {"aws": fleet("aws", (), owned), "gcp": fleet("gcp", (), owned)}

    def test_record_in_two_shared_pools_gets_one_update(self):
        existing = [worker(3, "old", OLD, [AWS_POOL, GCP_POOL, OTHER_POOL])]
        plan = plan_space(self.two, self.both_own("old", OLD), existing, prune=True)
        (action,) = plan["actions"]
        assert (action["op"], action["worker"]["WorkerPoolIds"]) == ("update", [OTHER_POOL])
        assert action["reason"] == "aws: old: no longer in the fleet; gcp: old: no longer in the fleet"

    def test_record_in_two_shared_pools_gets_one_delete(self):
        existing = [worker(3, "old", OLD, [AWS_POOL, GCP_POOL])]
        plan = plan_space(self.two, self.both_own("old", OLD), existing, prune=True)
        (action,) = plan["actions"]
        assert action["op"] == "delete"
        assert action["worker"]["WorkerPoolIds"] == [AWS_POOL, GCP_POOL]  # the record as read, for the log

    def test_aws_stale_copy_in_the_gcp_pool_only_loses_the_aws_pool(self):
        existing = [worker(3, "octo-aws-old", OLD, [AWS_POOL, GCP_POOL])]
        plan = plan_space(self.two, {"aws": fleet(workers=()), "gcp": fleet("gcp", (), ())}, existing, prune=True)
        (action,) = plan["actions"]
        assert (action["op"], action["outcome"], action["worker"]["WorkerPoolIds"]) == (
            "update",
            "unshared",
            [GCP_POOL],
        )
        assert plan["foreign"] == {"gcp": ["octo-aws-old"]}

    def test_aws_copy_only_in_the_local_pool_gets_both_pools_in_one_put(self):
        both = {
            "id": "Spaces-2",
            "name": "Team",
            "pools": {
                "aws": {"pool_id": AWS_POOL, "pool_name": "AWS", "role": "copy"},
                "local": {"pool_id": LOCAL_POOL, "pool_name": "Local", "role": "copy"},
            },
        }
        local_worker = {"name": "octo-local-1", "thumbprint": TP3, "uri": "poll://3333333333333333333c/"}
        fleets = {"aws": ONE, "local": fleet("local", (local_worker,), ())}
        existing = [
            worker(1, "octo-aws-1", TP1, [LOCAL_POOL], uri=W1["uri"]),
            worker(2, "octo-local-1", TP3, [LOCAL_POOL], uri=local_worker["uri"]),
        ]
        plan = plan_space(both, fleets, existing, prune=True)
        (action,) = plan["actions"]
        assert (action["op"], action["worker"]["Id"]) == ("update", "Workers-1")
        assert sorted(action["worker"]["WorkerPoolIds"]) == sorted([AWS_POOL, LOCAL_POOL])
        assert plan["present"] == {"aws": 0, "local": 1}

    def test_at_most_one_write_per_record_over_many_shapes(self):
        """Every combination of pool membership for our fleet worker, our stale copy and a foreign record."""
        pool_sets = [[], [AWS_POOL], [GCP_POOL], [AWS_POOL, GCP_POOL], [GCP_POOL, OTHER_POOL], [OTHER_POOL]]
        fleets = {"aws": fleet(workers=(W1,)), "gcp": fleet("gcp", (), ())}
        for mine, stale, other in itertools.product(pool_sets, repeat=3):
            existing = [
                worker(1, "octo-aws-1", TP1, mine, uri=W1["uri"]),
                worker(3, "octo-aws-old", OLD, stale),
                worker(5, "builder", FOREIGN, other),
            ]
            plan = plan_space(self.two, fleets, existing, prune=True)
            ids = [i for i in written_ids(plan) if i]
            assert len(ids) == len(set(ids)), (mine, stale, other, plan["actions"])
            assert "Workers-5" not in ids
            final = {a["worker"]["Id"]: a for a in plan["actions"] if a["op"] != "create"}
            if "Workers-1" in final:
                assert AWS_POOL in final["Workers-1"]["worker"]["WorkerPoolIds"]
            if AWS_POOL in stale:
                assert "Workers-3" in final
                assert AWS_POOL not in final["Workers-3"]["worker"]["WorkerPoolIds"] or (
                    final["Workers-3"]["op"] == "delete"
                )


# --------------------------------------------------------------------------- teardown


class TestPlanRetire:
    def test_removes_only_owned_records(self):
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL]),
            worker(2, "octo-aws-2", TP2, [AWS_POOL, OTHER_POOL]),
            worker(3, "octo-aws-old", OLD, [AWS_POOL]),
            worker(5, "builder", FOREIGN, [AWS_POOL]),
            worker(6, "octo-aws-x", FOREIGN, [AWS_POOL], health="Unavailable"),
            worker(7, "elsewhere", TP3, [OTHER_POOL]),
        ]
        plan = plan_retire(COPY, {"aws": FLEET}, existing)
        assert ops(plan) == [
            ("delete", "pruned", "octo-aws-1"),
            ("delete", "pruned", "octo-aws-old"),
            ("update", "unshared", "octo-aws-2"),
        ]
        unshared = next(a for a in plan["actions"] if a["op"] == "update")
        assert unshared["worker"]["WorkerPoolIds"] == [OTHER_POOL]
        assert plan["foreign"] == {"aws": ["builder", "octo-aws-x"]}

    def test_initial_space_is_retired_the_same_way(self):
        existing = [worker(1, "octo-aws-1", TP1, [AWS_POOL]), worker(5, "laptop", FOREIGN, [AWS_POOL])]
        plan = plan_retire(INITIAL, {"aws": FLEET}, existing)
        assert ops(plan) == [("delete", "pruned", "octo-aws-1")]
        assert plan["foreign"] == {"aws": ["laptop"]}

    def test_empty_ledger_removes_nothing(self):
        existing = [worker(1, "octo-aws-1", TP1, [AWS_POOL])]
        plan = plan_retire(COPY, {"aws": {"cloud": "aws", "workers": [], "owned": []}}, existing)
        assert plan == {
            "actions": [],
            "foreign": {"aws": ["octo-aws-1"]},
            "ours_left": {"aws": 0},
            "notes": {"aws": []},
        }

    def test_cloud_without_fleet_is_skipped(self):
        plan = plan_retire(COPY, {}, [worker(1, "octo-aws-1", TP1, [AWS_POOL])])
        assert (plan["actions"], plan["foreign"]) == ([], {})


# --------------------------------------------------------------------------- summary and ledger upkeep


def read_result(space_id, ours_left=0, remaining=(), cloud="aws"):
    """A space's result whose read of the whole space succeeded."""
    return {
        "space_id": space_id,
        "space_name": space_id,
        "owned_remaining": {cloud: [dict(r) for r in remaining]} if remaining else {},
        "clouds": {cloud: {"read": True, "ours_left": ours_left}},
    }


class TestCompactEvidence:
    """The evidence forgets only what a read that could have seen it found gone (issue 17, point 2)."""

    RECORDED = {"Spaces-1": {"name": "A"}, "Spaces-2": {"name": "B"}, "Spaces-3": {"name": "C"}}
    OWNED = [{"thumbprint": TP1}, {"thumbprint": TP2}, {"thumbprint": OLD}]

    def test_every_space_read_and_the_old_endpoint_gone_forgets_it(self):
        results = [read_result("Spaces-1", 2), read_result("Spaces-2", 2), read_result("Spaces-3", 2)]
        gone, spaces = compact_evidence("aws", [W1, W2], self.OWNED, self.RECORDED, results)
        assert (gone, spaces) == ([OLD], [])

    def test_an_old_endpoint_still_held_somewhere_is_kept(self):
        stale = {"name": "octo-aws-old", "thumbprint": OLD}
        results = [read_result("Spaces-1", 2), read_result("Spaces-2", 3, [stale]), read_result("Spaces-3", 2)]
        assert compact_evidence("aws", [W1, W2], self.OWNED, self.RECORDED, results) == ([], [])

    @pytest.mark.parametrize(
        "missing",
        [
            None,  # the index failed before pushing a result
            {"space_id": "Spaces-3", "space_name": "C", "clouds": {"aws": {"failed": 1, "errors": ["403"]}}},
            read_result("Spaces-3", cloud="gcp"),  # another cloud's read says nothing of this one
        ],
        ids=["no-result", "read-failed", "other-cloud"],
    )
    def test_a_space_not_read_keeps_every_old_endpoint(self, missing):
        results = [read_result("Spaces-1", 2), read_result("Spaces-2", 2), missing]
        gone, spaces = compact_evidence("aws", [W1, W2], self.OWNED, self.RECORDED, results)
        assert gone == []
        assert "Spaces-3" not in spaces

    def test_a_space_read_with_nothing_of_ours_left_is_forgotten(self):
        results = [read_result("Spaces-1", 2), read_result("Spaces-2", 0), read_result("Spaces-3", 2)]
        assert compact_evidence("aws", [W1, W2], self.OWNED, self.RECORDED, results) == ([OLD], ["Spaces-2"])

    def test_the_current_fleet_is_never_forgotten(self):
        results = [read_result(s, 0) for s in self.RECORDED]
        gone, _ = compact_evidence("aws", [W1, W2], self.OWNED, self.RECORDED, results)
        assert gone == [OLD]


class TestSummary:
    plans = [
        {
            "cloud": "aws",
            "pool_name": "AWS Worker Pool TF",
            "initial_space": {"id": "Spaces-1", "name": "A", "pool_id": "p"},
            "spaces": [
                {"id": "Spaces-2", "name": "B", "pool_id": "q"},
                {"id": "Spaces-3", "name": "C", "pool_id": "r"},
            ],
        }
    ]

    def test_missing_result_counts_as_failed(self):
        results = [{"space_id": "Spaces-2", "space_name": "B", "clouds": {"aws": {"added": 2, "failed": 0}}}]
        summary = summarize(results, spaces_to_visit(self.plans, include_initial=False))
        assert summary["failed_spaces"] == ["C"]
        assert summary["totals"]["added"] == 2
        table = format_table(summary)
        assert "B (Spaces-2) | added 2" in table
        assert "C (Spaces-3) | failed 1" in table

    def test_foreign_records_are_listed_and_counted(self):
        results = [
            {
                "space_id": "Spaces-2",
                "space_name": "B",
                "foreign": ["laptop", "builder"],
                "clouds": {"aws": {"present": 2, "foreign": 2}},
            },
            {"space_id": "Spaces-3", "space_name": "C", "clouds": {"aws": {"present": 2}}},
        ]
        summary = summarize(results, spaces_to_visit(self.plans, include_initial=False))
        assert summary["foreign"] == {"B": ["builder", "laptop"]}
        assert summary["totals"]["foreign"] == 2
        assert "B (Spaces-2) | present 2, foreign 2" in format_table(summary)

    def test_a_failed_initial_space_index_counts_as_failed(self):
        results = [
            {"space_id": "Spaces-2", "space_name": "B", "clouds": {"aws": {"present": 2}}},
            {"space_id": "Spaces-3", "space_name": "C", "clouds": {"aws": {"present": 2}}},
        ]
        summary = summarize(results, spaces_to_visit(self.plans, include_initial=True))
        assert summary["failed_spaces"] == ["A"]

    def test_a_space_failed_only_by_a_foreign_name_clash_is_blocked(self):
        clash = "the name 'octo-aws-1' is taken in space B by Workers-9"
        results = [
            {
                "space_id": "Spaces-2",
                "space_name": "B",
                "clouds": {"aws": {"failed": 1, "errors": [], "clashes": [clash]}},
            },
            {"space_id": "Spaces-3", "space_name": "C", "clouds": {"aws": {"failed": 1, "errors": ["500"]}}},
        ]
        summary = summarize(results, spaces_to_visit(self.plans, include_initial=False))
        assert summary["failed_spaces"] == ["B", "C"]
        assert summary["blocked_spaces"] == {"B": [clash]}


# --------------------------------------------------------------------------- access policy


class TestAccessPolicyInDiscoveryAndShare:
    spaces = [space(1, "Platform"), space(2, "Team"), space(3, "Sandbox")]
    pools = {f"Spaces-{i}": [pool(i, "AWS Worker Pool TF")] for i in (1, 2, 3)}

    def plan(self, policy, **kw):
        from octopus.access_policy import parse_access_policy

        kw.setdefault("clouds", ["aws"])
        kw.setdefault("instance_count", {"aws": 2})
        return plan_fleets(self.spaces, lambda sid: self.pools[sid], policy=parse_access_policy(policy), **kw)

    def test_a_denied_space_gets_no_copy_and_is_withdrawn(self):
        (plan,) = self.plan({"deny": ["Sand*"]})
        assert [s["id"] for s in plan["spaces"]] == ["Spaces-2"]
        assert [s["id"] for s in plan["spaces_denied"]] == ["Spaces-3"]
        roles = {v["id"]: v["pools"]["aws"]["role"] for v in spaces_to_visit([plan], include_initial=True)}
        assert roles == {"Spaces-1": "initial", "Spaces-2": "copy", "Spaces-3": "withdraw"}

    def test_allow_list_keeps_every_other_space_out_and_deny_wins(self):
        (plan,) = self.plan({"allow": ["Platform", "Team"], "deny": ["spaces-2"]})
        assert plan["spaces"] == [] and [s["name"] for s in plan["spaces_denied"]] == ["Team", "Sandbox"]

    def test_a_denied_pinned_initial_space_fails_naming_it_and_what_to_do(self):
        pin = {"aws": {"id": "Spaces-1", "name": "Platform", "pool_id": "WorkerPools-1"}}
        with pytest.raises(SharingError, match=r"initial space Platform \(Spaces-1\) is denied.*initial_space"):
            self.plan({"deny": ["Platform"]}, pins=pin)

    def test_first_use_skips_a_denied_first_holder(self):
        (plan,) = self.plan({"deny": ["Platform"]}, pins={"aws": None})
        assert plan["initial_space"]["id"] == "Spaces-2"

    def test_target_spaces_still_limit_what_a_run_touches(self):
        (plan,) = self.plan({"deny": ["Sandbox"]}, target_spaces=["Team"])
        assert plan["spaces_denied"] == [] and [s["id"] for s in plan["spaces"]] == ["Spaces-2"]

    def test_withdraw_prunes_every_copy_of_ours_adds_none_and_leaves_foreign_records(self):
        visit = {
            "id": "Spaces-3",
            "name": "Sandbox",
            "pools": {"aws": {"pool_id": AWS_POOL, "pool_name": "AWS", "role": "withdraw"}},
        }
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL]),
            worker(2, "octo-aws-2", TP2, [AWS_POOL, OTHER_POOL]),
            worker(3, "theirs", FOREIGN, [AWS_POOL]),
        ]
        result = plan_space(visit, {"aws": FLEET}, existing, prune=False)
        assert ops(result) == [("delete", "pruned", "octo-aws-1"), ("update", "unshared", "octo-aws-2")]
        assert result["foreign"] == {"aws": ["theirs"]}
        assert result["ours_left"] == {"aws": 1}  # octo-aws-2 stays in the other pool someone put it in


class TestAccessPolicySources:
    def test_the_run_allows_over_the_standing_option_and_denies_add_up(self):
        from octopus.access_policy import allows, from_settings

        policy = from_settings(["Team*"], ["Team-X"], standing_allowed=["Platform"], standing_denied=["Team-Y"])
        named = {
            n: allows(policy, {"Id": f"Spaces-{i}", "Name": n})
            for i, n in enumerate(["Platform", "Team-A", "Team-X", "Team-Y"])
        }
        assert named == {"Platform": False, "Team-A": True, "Team-X": False, "Team-Y": False}

    def test_nothing_set_allows_every_space(self):
        from octopus.access_policy import allows, from_settings

        assert allows(from_settings(None, None), {"Id": "Spaces-9", "Name": "Anything"})

    def test_the_option_reads_a_comma_or_newline_list(self, monkeypatch):
        from octopus import settings

        monkeypatch.setenv("AIRFLOW__OCTOPUS__DENIED_SPACES", "Sandbox, Spaces-7\nLegacy*")
        assert settings.config_option("denied_spaces") == ["Sandbox", "Spaces-7", "Legacy*"]


class TestRebuildLeavingWorkers:
    """An outdated instance of a rebuild is kept where it is until drain_outdated takes it: never added or
    re-enabled by a share (a run after a timed-out drain would otherwise hand it new steps)."""

    def test_a_disabled_leaving_copy_stays_disabled_and_a_missing_one_is_not_added(self):
        leaving = fleet(workers=(W1, {**W2, "leaving": True}))
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL], uri=W1["uri"]),
            worker(2, "octo-aws-2", TP2, [AWS_POOL], uri=W2["uri"], disabled=True),
        ]
        result = plan_space(COPY, {"aws": leaving}, existing, prune=True)
        assert ops(result) == [] and result["present"] == {"aws": 2}

        result = plan_space(COPY, {"aws": leaving}, existing[:1], prune=True)
        assert ops(result) == [] and result["present"] == {"aws": 1}

    def test_the_same_copy_not_leaving_is_re_enabled(self):
        existing = [
            worker(1, "octo-aws-1", TP1, [AWS_POOL], uri=W1["uri"]),
            worker(2, "octo-aws-2", TP2, [AWS_POOL], uri=W2["uri"], disabled=True),
        ]
        result = plan_space(COPY, {"aws": FLEET}, existing, prune=True)
        assert ops(result) == [("update", "fixed", "octo-aws-2")]

    def test_the_mark_survives_the_evidence_check_and_only_restrains(self):
        from octopus import ledger

        signer = ledger.Signer("k")
        doc = ledger.record_fleet(
            ledger.empty("octo", "aws"), [dict(W1), dict(W2)], {"dag_id": "d", "run_id": "r"}, signer
        )
        xcom = {"cloud": "aws", "generation": doc["fleet"]["generation"], "workers": [W1, {**W2, "leaving": True}]}
        (prepared,), _ = ledger.fleets_for_share([xcom], {"aws": doc}, signer, dry_run=False)
        assert [w.get("leaving", False) for w in prepared["workers"]] == [False, True]
