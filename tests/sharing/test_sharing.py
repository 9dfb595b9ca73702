"""Unit tests of the pure sharing decisions (no server, no Airflow)."""

from __future__ import annotations

import pytest

from octopus.sharing import (
    SharingError,
    SpaceAccessError,
    format_table,
    match_fleet,
    plan_fleets,
    plan_space,
    pool_name,
    resolve_targets,
    spaces_to_visit,
    summarize,
)

TP1, TP2, TP3, OLD = "A" * 40, "B" * 40, "C" * 40, "D" * 40


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


FLEET = {
    "cloud": "aws",
    "workers": [
        {"name": "octo-aws-1", "thumbprint": TP1, "uri": "poll://1111111111111111111a/"},
        {"name": "octo-aws-2", "thumbprint": TP2, "uri": "poll://2222222222222222222b/"},
    ],
}
COPY = {"id": "Spaces-2", "name": "Team", "pools": {"aws": {"pool_id": "WorkerPools-9", "role": "copy"}}}


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

    def test_plans_sorted_by_cloud(self):
        pools = {"Spaces-1": [pool(1, "AWS Worker Pool TF"), pool(2, "Local Worker Pool TF")]}
        plans, _ = self.plan([space(1)], pools, clouds=["local", "aws"])
        assert [p["cloud"] for p in plans] == ["aws", "local"]
        assert [p["instance_count"] for p in plans] == [2, 3]

    def test_pool_nowhere_names_the_pool(self):
        with pytest.raises(SharingError, match="'AWS Worker Pool TF'"):
            self.plan([space(1)], {"Spaces-1": [pool(1, "Other")]})

    def test_no_spaces_is_an_error(self):
        with pytest.raises(SharingError, match="no spaces"):
            self.plan([], {})

    def test_negative_count_rejected(self):
        with pytest.raises(SharingError, match=r"instance_count\['aws'\]"):
            self.plan([space(1)], {}, instance_count={"aws": -1})

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


class TestResolveTargets:
    def test_unknown_target_is_an_error(self):
        with pytest.raises(SharingError, match="'Nope'"):
            resolve_targets([space(1)], ["Nope"])

    def test_empty_means_all(self):
        assert resolve_targets([space(1)], []) is None


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


class TestMatchFleet:
    def test_counts_distinct_live_thumbprints_named_like_fleet(self):
        workers = [
            worker(1, "octo-aws-1", TP1, ["WorkerPools-1"], health="Unknown"),
            worker(2, "octo-aws-1-dup", TP1, ["WorkerPools-1"]),
            worker(3, "octo-aws-old", OLD, ["WorkerPools-1"], health="Unavailable"),
            worker(4, "someone-else", TP3, ["WorkerPools-1"]),
            worker(5, "octo-aws-listen", TP2, ["WorkerPools-1"], style="TentaclePassive"),
        ]
        seen = match_fleet(workers, name_prefix="octo-aws")
        assert [w["thumbprint"] for w in seen["workers"]] == [TP1]
        assert {w["why"].split(":")[0] for w in seen["ignored"]} == {
            "Unavailable",
            "not named like this fleet",
            "not a polling tentacle",
        }

    def test_expected_names_are_exact(self):
        workers = [worker(1, "octo-local-1", TP1, ["p"]), worker(2, "octo-local-10", TP2, ["p"])]
        seen = match_fleet(workers, name_prefix="octo-local", expected_names=["octo-local-1"])
        assert [w["name"] for w in seen["workers"]] == ["octo-local-1"]


def ops(plan):
    return sorted((a["op"], a["outcome"], a["worker"]["Name"]) for a in plan["actions"])


class TestPlanSpace:
    def test_absent_workers_are_created_with_minimal_body(self):
        plan = plan_space(COPY, {"aws": FLEET}, [], prune=True)
        assert ops(plan) == [("create", "added", "octo-aws-1"), ("create", "added", "octo-aws-2")]
        body = plan["actions"][0]["worker"]
        assert body == {
            "Name": "octo-aws-1",
            "SpaceId": "Spaces-2",
            "IsDisabled": False,
            "MachinePolicyId": "<default>",
            "WorkerPoolIds": ["WorkerPools-9"],
            "Endpoint": {
                "CommunicationStyle": "TentacleActive",
                "Uri": FLEET["workers"][0]["uri"],
                "Thumbprint": TP1,
            },
        }

    def test_present_workers_need_no_write(self):
        existing = [
            worker(1, "octo-aws-1", TP1, ["WorkerPools-9"], uri=FLEET["workers"][0]["uri"]),
            worker(2, "octo-aws-2", TP2, ["WorkerPools-9"], uri=FLEET["workers"][1]["uri"]),
        ]
        plan = plan_space(COPY, {"aws": FLEET}, existing, prune=True)
        assert plan["actions"] == []
        assert plan["present"] == {"aws": 2}

    def test_worker_outside_pool_gets_pool_added(self):
        existing = [worker(1, "octo-aws-1", TP1, ["WorkerPools-3"], uri=FLEET["workers"][0]["uri"])]
        plan = plan_space(COPY, {"aws": {**FLEET, "workers": FLEET["workers"][:1]}}, existing, prune=True)
        assert ops(plan) == [("update", "fixed", "octo-aws-1")]
        assert plan["actions"][0]["worker"]["WorkerPoolIds"] == ["WorkerPools-3", "WorkerPools-9"]

    def test_disabled_or_moved_endpoint_is_fixed_in_place(self):
        existing = [
            worker(1, "octo-aws-1", TP1, ["WorkerPools-9"], uri="poll://old0000000000000000/", disabled=True),
        ]
        plan = plan_space(COPY, {"aws": {**FLEET, "workers": FLEET["workers"][:1]}}, existing, prune=True)
        (action,) = plan["actions"]
        assert (action["op"], action["worker"]["Id"]) == ("update", "Workers-1")
        assert action["worker"]["IsDisabled"] is False
        assert action["worker"]["Endpoint"]["Uri"] == FLEET["workers"][0]["uri"]

    def test_stale_copies_in_pool_are_pruned(self):
        existing = [
            worker(1, "octo-aws-1", TP1, ["WorkerPools-9"], uri=FLEET["workers"][0]["uri"]),
            worker(2, "octo-aws-2", TP2, ["WorkerPools-9"], uri=FLEET["workers"][1]["uri"]),
            worker(3, "octo-aws-old", OLD, ["WorkerPools-9"], health="Unavailable"),
            worker(4, "shared-old", TP3, ["WorkerPools-9", "WorkerPools-3"]),
            worker(5, "other-pool", "E" * 40, ["WorkerPools-3"]),
        ]
        plan = plan_space(COPY, {"aws": FLEET}, existing, prune=True)
        assert ops(plan) == [("delete", "pruned", "octo-aws-old"), ("update", "unshared", "shared-old")]
        unshared = next(a for a in plan["actions"] if a["op"] == "update")
        assert unshared["worker"]["WorkerPoolIds"] == ["WorkerPools-3"]

    def test_no_pruning_without_prune(self):
        existing = [worker(3, "octo-aws-old", OLD, ["WorkerPools-9"], health="Unavailable")]
        plan = plan_space(COPY, {"aws": {**FLEET, "workers": []}}, existing, prune=False)
        assert plan["actions"] == []

    def test_initial_space_prunes_only_unavailable(self):
        initial = {
            "id": "Spaces-1",
            "name": "A",
            "pools": {"aws": {"pool_id": "WorkerPools-9", "role": "initial"}},
        }
        existing = [
            worker(1, "octo-aws-1", TP1, ["WorkerPools-9"]),
            worker(3, "octo-aws-old", OLD, ["WorkerPools-9"], health="Unavailable"),
            worker(4, "octo-aws-new", TP3, ["WorkerPools-9"], health="Unknown"),
        ]
        plan = plan_space(initial, {"aws": FLEET}, existing, prune=True)
        assert ops(plan) == [("delete", "pruned", "octo-aws-old")]

    def test_same_name_stale_copy_is_replaced_not_duplicated(self):
        existing = [worker(1, "octo-aws-1", OLD, ["WorkerPools-9"], health="Unavailable")]
        plan = plan_space(COPY, {"aws": {**FLEET, "workers": FLEET["workers"][:1]}}, existing, prune=True)
        (action,) = plan["actions"]
        assert (action["op"], action["outcome"], action["worker"]["Id"]) == (
            "update",
            "replaced",
            "Workers-1",
        )
        assert action["worker"]["Endpoint"]["Thumbprint"] == TP1

    def test_name_taken_by_foreign_machine_is_an_error(self):
        existing = [worker(7, "octo-aws-1", OLD, ["WorkerPools-3"])]
        plan = plan_space(COPY, {"aws": {**FLEET, "workers": FLEET["workers"][:1]}}, existing, prune=True)
        assert plan["actions"] == []
        (message,) = plan["errors"]["aws"]
        assert "'octo-aws-1' is taken by Workers-7" in message

    def test_cloud_without_fleet_is_not_run(self):
        plan = plan_space(COPY, {}, [worker(3, "x", OLD, ["WorkerPools-9"])], prune=True)
        assert plan == {"actions": [], "present": {}, "errors": {}, "not_run": ["aws"]}

    def test_one_record_in_two_shared_pools_gets_one_update(self):
        two = {
            "id": "Spaces-2",
            "name": "Team",
            "pools": {
                "aws": {"pool_id": "WorkerPools-9", "role": "copy"},
                "gcp": {"pool_id": "WorkerPools-8", "role": "copy"},
            },
        }
        existing = [worker(3, "old", OLD, ["WorkerPools-9", "WorkerPools-8", "WorkerPools-1"])]
        empty = {"workers": []}
        plan = plan_space(
            two, {"aws": {"cloud": "aws", **empty}, "gcp": {"cloud": "gcp", **empty}}, existing, prune=True
        )
        (action,) = plan["actions"]
        assert action["worker"]["WorkerPoolIds"] == ["WorkerPools-1"]


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
        summary = summarize(results, self.plans)
        assert summary["failed_spaces"] == ["C"]
        assert summary["totals"]["added"] == 2
        table = format_table(summary)
        assert "B (Spaces-2) | added 2" in table
        assert "C (Spaces-3) | failed 1" in table


class TestKnownInitialRecords:
    fleet = {
        "cloud": "aws",
        "workers": [],
        "pool_records": [
            {"Id": "Workers-1", "Endpoint": {"CommunicationStyle": "TentacleActive"}},
            {"Id": "Workers-2", "Endpoint": {"CommunicationStyle": "TentaclePassive"}},
        ],
    }

    def test_only_initial_space_reuses_the_waits_read(self):
        from octopus.operations import known_initial_records

        initial = {"id": "Spaces-1", "name": "A", "pools": {"aws": {"pool_id": "p", "role": "initial"}}}
        assert [r["Id"] for r in known_initial_records(initial, [self.fleet])] == ["Workers-1"]

    def test_a_space_that_is_also_a_copy_target_is_read(self):
        from octopus.operations import known_initial_records

        mixed = {
            "id": "Spaces-1",
            "name": "A",
            "pools": {"aws": {"pool_id": "p", "role": "initial"}, "gcp": {"pool_id": "q", "role": "copy"}},
        }
        assert known_initial_records(mixed, [self.fleet, {"cloud": "gcp", "workers": []}]) is None

    def test_a_fleet_without_its_read_means_reading(self):
        from octopus.operations import known_initial_records

        initial = {"id": "Spaces-1", "name": "A", "pools": {"aws": {"pool_id": "p", "role": "initial"}}}
        assert known_initial_records(initial, [{"cloud": "aws", "workers": []}]) is None
