"""Smoke tests of bench/bench_vs_runbook.py at a tiny size (3 spaces × 2 workers): the code runs and measures
what it claims. No timing is asserted; the benchmark's figures live in docs/performance.md."""

from __future__ import annotations

import pytest

from bench import bench_vs_runbook as bench
from bench.runbook_port import RunbookPort

TINY = bench.Size(3, 2)


@pytest.fixture
def seeded(emulator, monkeypatch):
    """The emulator holding the tiny scenario (fleet registered in Space 001); the connection env restored after."""
    monkeypatch.setenv(bench.CONN_ENV, "{}")
    emulator.control.reset(bench.scenario(TINY))
    return emulator


def run_port(emulator):
    return RunbookPort(emulator.url, emulator.api_key, bench.POOL_NAME, TINY.workers, sleep=pytest.fail).run()


def test_port_first_run_shares_the_fleet_with_the_posts_request_pattern(seeded):
    result = run_port(seeded)

    assert result.aborted is None
    assert result.remaining_space_ids == ["Spaces-2", "Spaces-3"]
    assert bench.shares_present(seeded.control.state()) == (TINY.shares, TINY.workers)
    # 1 spaces page + 3 pool lists + 2 (wait step) + 2 (initial pool and workers) + 2 × (pools + policies + 2 POSTs)
    assert result.requests == len(seeded.control.requests()) == 1 + 3 + 2 + 2 + 2 * 4


def test_port_rerun_posts_every_worker_again_and_swallows_the_rejections(seeded):
    run_port(seeded)

    again = run_port(seeded)

    assert again.aborted is None
    assert again.posts_ok == 0
    assert dict(again.post_errors) == {400: TINY.shares}


def test_port_aborts_on_the_first_429_to_a_get(seeded):
    seeded.control.set_faults({"rate_limit": {"per_minute": 1, "burst": 3}})

    result = run_port(seeded)

    assert result.aborted is not None and result.aborted.startswith("step 1")
    assert result.aborted_status == 429
    assert bench.shares_present(seeded.control.state())[0] == 0


def test_port_swallows_a_429_to_a_post_and_loses_that_share(seeded):
    seeded.control.set_faults({"fail_next": [{"count": 1, "status": 429, "method": "POST", "retry_after": 1}]})

    result = run_port(seeded)

    assert result.aborted is None
    assert dict(result.post_errors) == {429: 1}
    assert bench.shares_present(seeded.control.state())[0] == TINY.shares - 1


def test_package_first_run_and_rerun_cost_exactly_the_api_minimum(seeded):
    first = bench.measure(seeded, "package", lambda: bench.run_package(seeded, TINY, space_parallelism=2), TINY, "1")
    again = bench.measure(seeded, "package", lambda: bench.run_package(seeded, TINY, space_parallelism=2), TINY, "2")

    assert (first.lost, again.lost) == (0, 0)
    # Pruning the initial space reuses the wait's read of its pool, so nothing beyond the minimum.
    assert first.requests == bench.api_minimum(TINY, rerun=False)
    assert again.requests == bench.api_minimum(TINY, rerun=True)
    assert again.by_route.get("POST /api/{space}/workers", 0) == 0


def test_api_minimum_counts_discovery_fleet_read_and_per_space_work():
    # discovery, the fleet read, the initial space's own read (its pruning task), then the remaining spaces
    assert bench.api_minimum(bench.Size(100, 20), rerun=False) == 1 + 100 + 1 + 1 + 99 * 22
    assert bench.api_minimum(bench.Size(100, 20), rerun=True) == 1 + 100 + 1 + 1 + 99


@pytest.mark.parametrize("text", ["100", "1x5", "10x0", "ax3"])
def test_size_rejects_malformed_or_too_small_sizes(text):
    with pytest.raises(Exception, match="size"):
        bench.Size.parse(text)


def test_main_prints_the_count_and_rate_tables_at_a_tiny_size(capsys, monkeypatch):
    monkeypatch.setenv(bench.CONN_ENV, "{}")

    assert bench.main(["--sections", "count,rate", "--sizes", "3x2", "--rate-size", "3x2", "--rate-limit", "6000"]) == 0

    out = capsys.readouterr().out
    assert "| 3 × 2 | port | 16 |" in out
    assert "| 3 × 2 | package |" in out
    assert "| port | 16 |" in out  # rate table: the tiny run never reaches the burst


@pytest.mark.e2e
def test_dag_section_runs_the_dag_twice_and_separates_tentacle_registration(emulator, monkeypatch):
    monkeypatch.setenv(bench.CONN_ENV, "{}")

    first, again = bench.section_dag(emulator, [TINY])

    assert (first.lost, again.lost) == (0, 0)
    assert first.note == again.note == ""
    own_first = first.requests - first.by_route["registration"]
    # The wait may poll the initial pool more than once while the simulated VMs boot.
    assert bench.api_minimum(TINY, rerun=False) <= own_first <= bench.api_minimum(TINY, rerun=False) + 3
    assert again.by_route["registration"] == 0
    assert again.requests == bench.api_minimum(TINY, rerun=True)
