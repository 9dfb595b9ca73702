"""Unit tests of the deployment ledger (octopus.ledger) over MemoryStore: no Airflow DB, no server."""

from __future__ import annotations

import threading

import pytest

from octopus import ledger
from octopus.ledger import LeaseError, MemoryStore, Signer
from octopus.sharing import SharingError

A = {"dag_id": "share_octopus_workers", "run_id": "scheduled__2026-12-01", "task": "claim_deployment[-1]"}
B = {"dag_id": "retire_octopus_workers", "run_id": "manual__2026-12-01", "task": "claim_deployment[-1]"}
C = {"dag_id": "share_octopus_workers", "run_id": "backfill__2026-12-02", "task": "claim_deployment[-1]"}
TP1, TP2, OLD, FOREIGN = "A" * 40, "B" * 40, "D" * 40, "E" * 40
KEY = Signer("API-CONNECTIONKEY0000000000")
OTHER_KEY = Signer("API-SOMEONEELSE000000000000")


def states(**by_run):
    """A run_state callable: run id → state; unknown runs have no state (deleted)."""
    return lambda dag_id, run_id: by_run.get(run_id)


RUNNING = states(**{A["run_id"]: "running", B["run_id"]: "running", C["run_id"]: "queued"})


def task_of(run, task):
    return {**run, "task": task}


W1 = {"name": "team-aws-i-1", "thumbprint": TP1.lower(), "uri": "poll://1/", "instance_id": "i-1"}
W2 = {"name": "team-aws-i-2", "thumbprint": TP2, "uri": "poll://2/", "instance_id": "i-2"}


class TestLoadSave:
    def test_missing_ledger_is_empty(self):
        assert ledger.load(MemoryStore(), "team", "aws") == ledger.empty("team", "aws")

    def test_round_trip(self):
        store = MemoryStore()
        doc = {
            **ledger.empty("team", "aws"),
            "initial_space": {"id": "Spaces-2", "name": "Platform", "pool_id": "WorkerPools-1"},
            "owned": [ledger.owned_entry(KEY, "team", "aws", TP1, "team-aws-i-1")],
        }
        ledger.save(store, doc)
        assert list(store.docs) == ["octopus_workers.team.aws"]
        assert ledger.load(store, "team", "aws") == doc

    def test_another_deployments_ledger_is_refused(self):
        store = MemoryStore()
        store.save(ledger.ledger_key("team", "aws"), {**ledger.empty("other", "aws")})
        with pytest.raises(SharingError, match="is not a ledger of deployment"):
            ledger.load(store, "team", "aws")

    def test_a_version_1_ledger_is_read_with_every_entry_unverified(self):
        store = MemoryStore()
        v1 = {"version": 1, "prefix": "team", "cloud": "aws", "owned": [{"name": "team-aws-1", "thumbprint": TP1}]}
        store.save(ledger.ledger_key("team", "aws"), {**v1, "lease": None})
        doc = ledger.load(store, "team", "aws")
        assert doc["version"] == ledger.LEDGER_VERSION
        assert doc["owned"] == []
        assert doc["unverified"][0]["thumbprint"] == TP1
        assert "lease" not in doc


class TestEvidence:
    """Whoever can edit the Variable but not the connection cannot make the package act (issue 17, point 1)."""

    def test_sealed_entries_verify(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        evidence = ledger.verified(doc, KEY)
        assert [o["thumbprint"] for o in evidence["owned"]] == [TP1]
        assert evidence["rejected"] == []
        assert evidence["fleet"]["generation"] == 1

    def test_a_variable_editors_entries_are_ignored_and_reported(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        forged = [
            {"name": "builder", "thumbprint": FOREIGN},  # no seal at all
            {"name": "builder2", "thumbprint": OLD, "mac": "0" * 64},  # a made-up seal
            ledger.owned_entry(OTHER_KEY, "team", "aws", TP2, "theirs"),  # sealed with another key
            {**ledger.owned_entry(KEY, "team", "aws", TP2, "x"), "thumbprint": OLD},  # a seal moved to another record
            ledger.owned_entry(KEY, "other", "aws", OLD, "other-deployment"),  # another deployment's seal
        ]
        doc = {**doc, "owned": [*doc["owned"], *forged]}
        evidence = ledger.verified(doc, KEY)
        assert [o["thumbprint"] for o in evidence["owned"]] == [TP1]
        assert len(evidence["rejected"]) == len(forged)
        assert all("seal does not verify" in r["why"] for r in evidence["rejected"])
        message = ledger.describe_rejected("octopus_workers.team.aws", evidence["rejected"])
        assert "IGNORED 5 entries" in message and "builder" in message

    def test_an_edited_fleet_record_does_not_verify(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        doc["fleet"]["workers"][0]["thumbprint"] = FOREIGN
        evidence = ledger.verified(doc, KEY)
        assert evidence["fleet"] is None

    def test_rejected_entries_are_kept_aside_never_owned(self):
        doc = {**ledger.empty("team", "aws"), "owned": [{"name": "builder", "thumbprint": FOREIGN}]}
        doc = ledger.record_fleet(doc, [W1], A, KEY)
        assert [o["thumbprint"] for o in doc["owned"]] == [TP1]
        assert [u["thumbprint"] for u in doc["unverified"]] == [FOREIGN]

    def test_the_evidence_key_is_the_connections_secret(self):
        with pytest.raises(ValueError, match="empty"):
            Signer("  ")
        assert Signer("k1").seal("owned", "team", "aws", TP1) != Signer("k2").seal("owned", "team", "aws", TP1)

    def test_adopting_seals_the_listed_records_only(self):
        doc = {**ledger.empty("team", "aws"), "unverified": [{"name": "old", "thumbprint": OLD, "why": "v1"}]}
        doc = ledger.adopt(doc, [{"name": "old", "thumbprint": OLD.lower()}], KEY)
        assert [o["thumbprint"] for o in ledger.verified(doc, KEY)["owned"]] == [OLD]
        assert doc["unverified"] == []


class TestRecordFleet:
    def test_first_fleet_is_generation_one(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        fleet = {k: v for k, v in doc["fleet"].items() if k != "mac"}
        assert fleet == {"generation": 1, "dag_id": A["dag_id"], "run_id": A["run_id"], "workers": [W1]}
        assert [(o["name"], o["thumbprint"]) for o in doc["owned"]] == [("team-aws-i-1", TP1)]

    def test_generation_increments(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        doc = ledger.record_fleet(doc, [W1], B, KEY)
        assert (doc["fleet"]["generation"], doc["fleet"]["run_id"]) == (2, B["run_id"])

    def test_owned_accumulates_until_proven_gone(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        doc = ledger.record_fleet(doc, [W2], B, KEY)
        doc = ledger.record_fleet(doc, [], A, KEY)
        assert [o["thumbprint"] for o in doc["owned"]] == [TP1, TP2]
        doc = ledger.forget(doc, thumbprints=[TP1.lower()])
        assert [o["thumbprint"] for o in doc["owned"]] == [TP2]

    def test_an_endpoint_is_owned_once_whatever_its_name(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        doc = ledger.record_fleet(doc, [{**W1, "name": "renamed", "thumbprint": TP1}], A, KEY)
        assert [o["thumbprint"] for o in doc["owned"]] == [TP1]

    def test_does_not_change_the_doc_it_was_given(self):
        before = ledger.empty("team", "aws")
        ledger.record_fleet(before, [W1], A, KEY)
        assert before == ledger.empty("team", "aws")

    def test_previous_fleet_is_what_the_wait_compares(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1, {**W2, "instance_id": ""}], A, KEY)
        assert ledger.previous_fleet(ledger.empty("team", "aws")) is None
        assert ledger.previous_fleet(doc) == [
            {"name": "team-aws-i-1", "thumbprint": TP1.lower(), "instance_id": "i-1"},
            {"name": "team-aws-i-2", "thumbprint": TP2, "instance_id": ""},
        ]


class TestSpaces:
    def test_spaces_are_recorded_and_forgotten_by_id(self):
        doc = ledger.add_spaces(ledger.empty("team", "aws"), [{"id": "Spaces-2", "name": "B", "pool_id": "P-1"}])
        doc = ledger.add_spaces(doc, [{"id": "Spaces-2", "name": "B renamed", "pool_id": None}])
        assert doc["spaces"] == {"Spaces-2": {"name": "B renamed", "pool_id": "P-1"}}
        assert ledger.forget(doc, space_ids=["Spaces-2"])["spaces"] == {}


def tickets(store):
    return {k: v for k, v in store.docs.items() if ".lease." in k}


class TestClaim:
    def test_a_free_deployment_is_claimed_and_recorded_as_the_latest_writer(self):
        store = MemoryStore()
        assert ledger.claim(store, "team", ["aws", "gcp"], A, RUNNING) is None
        for cloud in ("aws", "gcp"):
            epoch = ledger.load(store, "team", cloud)["epoch"]
            assert (epoch["number"], epoch["run_id"]) == (1, A["run_id"])

    def test_a_second_run_waits_naming_the_holder(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        line = ledger.claim(store, "team", ["aws"], B, RUNNING)
        assert "('team', 'aws') is held by run 'scheduled__2026-12-01'" in line

    def test_runs_are_served_in_ticket_order(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        assert ledger.claim(store, "team", ["aws"], B, RUNNING)  # ticket 2
        assert ledger.claim(store, "team", ["aws"], C, RUNNING)  # ticket 3
        ledger.release(store, "team", ["aws"], A)
        assert ledger.claim(store, "team", ["aws"], C, RUNNING)  # still behind B
        assert ledger.claim(store, "team", ["aws"], B, RUNNING) is None
        assert ledger.load(store, "team", "aws")["epoch"]["run_id"] == B["run_id"]

    def test_a_finished_holder_holds_nothing_and_its_ticket_is_tidied(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        finished = states(**{A["run_id"]: "success", B["run_id"]: "running"})
        assert ledger.claim(store, "team", ["aws"], B, finished) is None
        assert {v["run_id"] for v in tickets(store).values()} == {B["run_id"]}

    def test_disjoint_clouds_and_prefixes_never_wait(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        assert ledger.claim(store, "team", ["gcp"], B, RUNNING) is None
        assert ledger.claim(store, "other", ["aws"], C, RUNNING) is None

    def test_runs_wanting_overlapping_clouds_never_wait_in_a_circle(self):
        store = MemoryStore()
        ledger.take_ticket(store, "team", ["aws", "gcp"], A, RUNNING)
        ledger.take_ticket(store, "team", ["gcp", "aws"], B, RUNNING)
        results = {
            "A": ledger.contest(store, "team", ["aws", "gcp"], A, RUNNING),
            "B": ledger.contest(store, "team", ["aws", "gcp"], B, RUNNING),
        }
        assert [who for who, line in results.items() if line is None] == ["A"]

    def test_tasks_of_the_holding_run_share_its_ticket(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        number = ledger.take_ticket(store, "team", ["aws"], task_of(A, "share_to_space[3]"), RUNNING)
        assert number == 1
        assert ledger.contest(store, "team", ["aws"], task_of(A, "share_to_space[3]"), RUNNING) is None

    def test_a_contender_still_choosing_is_waited_for(self):
        store = MemoryStore()
        ledger.take_ticket(store, "team", ["aws"], A, RUNNING)
        store.save(ledger.ticket_key("team", "aws", B), {**B, "choosing": True, "number": 0, "since": 0})
        assert "is choosing its ticket" in ledger.contest(store, "team", ["aws"], A, RUNNING)

    def test_two_claims_racing_with_a_forced_late_write_make_exactly_one_winner(self):
        """B reads every ticket before A publishes its own, and B's number lands only after A has looked.

        Write-then-confirm gave the lease to both here (the old strict xfail); the bakery's choosing flag makes
        A wait for B's number, and the two numbers then order the runs the same way for both.
        """
        store = MemoryStore()
        b_read, a_looked = threading.Event(), threading.Event()
        results = {}

        class LateStore:
            """B's view: its number write is held back until A has contested."""

            def load(self, key):
                return store.load(key)

            def keys(self, prefix):
                keys = store.keys(prefix)
                b_read.set()
                return keys

            def delete(self, key):
                store.delete(key)

            def save(self, key, doc):
                if doc.get("run_id") == B["run_id"] and not doc.get("choosing"):
                    assert a_looked.wait(10)
                store.save(key, doc)

        class AStore(MemoryStore):
            def load(self, key):
                return store.load(key)

            def keys(self, prefix):
                return store.keys(prefix)

            def delete(self, key):
                store.delete(key)

            def save(self, key, doc):
                if doc.get("run_id") == A["run_id"] and doc.get("choosing"):
                    assert b_read.wait(10)  # B has already read: it cannot see A's ticket
                store.save(key, doc)

        def run_b():
            results["B"] = ledger.claim(LateStore(), "team", ["aws"], B, RUNNING)

        thread = threading.Thread(target=run_b)
        thread.start()
        try:
            first = ledger.claim(AStore(), "team", ["aws"], A, RUNNING)
            a_looked.set()
        finally:
            a_looked.set()
            thread.join(10)
        assert not thread.is_alive()
        results["A"] = first
        # whoever did not win at once retries until the winner is decided; never two winners
        for _ in range(3):
            for who, run in (("A", A), ("B", B)):
                if results[who] is not None and "choosing" in results[who]:
                    results[who] = ledger.claim(store, "team", ["aws"], run, RUNNING)
        winners = [who for who, line in results.items() if line is None]
        assert len(winners) == 1, results
        loser = "B" if winners == ["A"] else "A"
        assert "is held by" in results[loser]


class TestRelease:
    def test_releases_every_ticket_of_its_run(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws", "gcp"], A, RUNNING)
        ledger.take_ticket(store, "team", ["aws"], task_of(A, "share_to_space[0]"), RUNNING)
        ledger.release(store, "team", ["aws", "gcp"], A)
        assert tickets(store) == {}

    def test_leaves_anothers_ticket(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], B, RUNNING)
        ledger.release(store, "team", ["aws"], A)
        assert {v["run_id"] for v in tickets(store).values()} == {B["run_id"]}

    def test_same_run_id_of_another_dag_is_another_run(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        ledger.release(store, "team", ["aws"], {**B, "run_id": A["run_id"]})
        assert len(tickets(store)) == 1


def fence(store, me, **kwargs):
    return ledger.check_fence(store, "team", "aws", me, RUNNING, wait=0, sleep=lambda _s: None, **kwargs)


class TestCheckFence:
    def test_another_active_holder_refuses(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], B, RUNNING)
        with pytest.raises(LeaseError, match=r"\('team', 'aws'\): deployment \('team', 'aws'\) is held by run"):
            fence(store, task_of(A, "share_to_space[0]"))

    def test_the_holders_tasks_pass_and_read_the_ledger(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        doc = fence(store, task_of(A, "share_to_space[0]"))
        assert doc["epoch"]["run_id"] == A["run_id"]

    def test_a_cleared_task_after_its_run_released_takes_a_ticket_again(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        ledger.release(store, "team", ["aws"], A)
        fence(store, task_of(A, "share_to_space[0]"))
        assert {v["task"] for v in tickets(store).values()} == {"share_to_space[0]"}

    def test_a_task_of_an_older_run_refuses_once_a_newer_run_claimed(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        ledger.release(store, "team", ["aws"], A)
        assert ledger.claim(store, "team", ["aws"], B, RUNNING) is None
        ledger.release(store, "team", ["aws"], B)
        with pytest.raises(LeaseError, match="claimed by a newer run, run 'manual__2026-12-01'"):
            fence(store, task_of(A, "retire_initial[0]"))

    def test_older_generation_refuses_naming_the_current_run(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        doc = ledger.load(store, "team", "aws")
        doc = ledger.record_fleet(ledger.record_fleet(doc, [W1], A, KEY), [W2], A, KEY)
        ledger.save(store, doc)
        with pytest.raises(LeaseError) as err:
            fence(store, task_of(A, "share_to_space[0]"), generation=1)
        assert "generation 1" in str(err.value) and "generation 2" in str(err.value)
        assert "refusing to replay" in str(err.value)

    def test_equal_or_no_generation_passes(self):
        store = MemoryStore()
        ledger.claim(store, "team", ["aws"], A, RUNNING)
        fence(store, task_of(A, "x[0]"))
        fence(store, task_of(A, "x[1]"), generation=1)


class TestFleetsForShare:
    def test_the_share_acts_on_the_sealed_ledger_not_the_xcom(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, KEY)
        doc = {**doc, "owned": [*doc["owned"], {"name": "builder", "thumbprint": FOREIGN}]}
        xcom = {"cloud": "aws", "generation": 1, "workers": [{**W1, "thumbprint": FOREIGN}]}
        fleets, rejected = ledger.fleets_for_share([xcom], {"aws": doc}, KEY, dry_run=False)
        assert [w["thumbprint"] for w in fleets[0]["workers"]] == [TP1.lower()]
        assert [o["thumbprint"] for o in fleets[0]["owned"]] == [TP1]
        assert [r["thumbprint"] for r in rejected["aws"]] == [FOREIGN]

    def test_a_fleet_without_a_verified_record_is_refused(self):
        doc = ledger.record_fleet(ledger.empty("team", "aws"), [W1], A, OTHER_KEY)
        with pytest.raises(ledger.EvidenceError, match="seal verifies"):
            ledger.fleets_for_share(
                [{"cloud": "aws", "generation": 1, "workers": [W1]}], {"aws": doc}, KEY, dry_run=False
            )
