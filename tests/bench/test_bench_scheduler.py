"""Smoke test of bench/bench_scheduler.py at a tiny size (3 spaces × 1 worker, no latency): Postgres, a real
``airflow standalone``, the post's port and the DAG all run and the report has its tables. No timing is asserted."""

from __future__ import annotations

import os
import pwd

import pytest

from tests.distributed.services import PG_SYSTEM_USER, postgres_bin


def _missing() -> str | None:
    if postgres_bin() is None:
        return "PostgreSQL is not installed (scripts/setup.d/20-services.sh installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            return f"system user {PG_SYSTEM_USER} is missing (scripts/setup.d/20-services.sh creates it)"
    return None


@pytest.mark.scheduler
@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_tiny_run_prints_the_issue_table_and_the_breakdowns(capsys, tmp_path):
    from bench import bench_scheduler

    rc = bench_scheduler.main(
        [
            "--sizes",
            "3x1",
            "--latency-ms",
            "0",
            "--poll-interval",
            "1",
            "--test-tuning",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    out = capsys.readouterr().out

    assert rc == 0, out
    assert "| spaces × workers | post first / re-run | DAG first / re-run | post ÷ DAG |" in out
    assert "\n| 3 × 1 | " in out
    for phase in ("first run", "re-run"):
        assert f"DAG {phase}, 3 × 1: wall" in out
    # One mapped share per space (the initial one too: it is pruned), with the per-index parts from the logs.
    assert out.count("| share_to_space | 3 |") == 2
    assert out.count("log-based parts from 3 sampled indexes") == 2
    assert "| execute (the task's own code" in out and "| DAG parse (" in out
    results = (tmp_path / "r.json").read_text()
    assert '"client": "post"' in results and '"client": "dag"' in results
