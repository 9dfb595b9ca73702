"""After a full run, the API key is nowhere it should not be (issue #6, "Secrets")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from octopus_emulator.scenario import make_scenario
from tests.dags.harness import LOCAL_POOL, local_conf, run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore")]


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


def command_lines_containing(needle: bytes) -> list[str]:
    hits = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline:
                hits.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
    return hits


def test_api_key_appears_in_no_log_db_state_output_or_command_line(local_cloud, emulator, capfd, tmp_path):
    key = emulator.api_key.encode()
    emulator.control.reset(make_scenario(4, [LOCAL_POOL]))

    dag_run, states = run_dag("share_octopus_workers", local_conf())
    assert str(dag_run.state) == "success", states

    # Processes started by the run (the simulated VMs are still running now).
    assert command_lines_containing(key) == []
    # Logs, and the metadata DB as a whole (its file and WAL): XCom, rendered fields, params, dag run conf,
    # serialized DAGs.
    from airflow import settings
    from airflow.configuration import conf

    database = Path(settings.engine.url.database)
    assert database.stat().st_size > 0
    assert [p for p in database.parent.glob(database.name + "*") if key in p.read_bytes()] == []
    assert files_containing(Path(conf.get("logging", "base_log_folder")), key) == []
    assert files_containing(Path(os.environ["AIRFLOW_HOME"]), key) == []
    # Terraform state and outputs, and each simulated VM's disk (its "user data", logs and status).
    state_dir = Path(os.environ["OCTOPUS_WORKERS_STATE_DIR"])
    assert any(state_dir.rglob("terraform.tfstate"))
    assert files_containing(state_dir, key) == []
    assert files_containing(local_cloud, key) == []
    # Everything the run printed (dag.test echoes task logs unmasked, so this proves nothing was logged).
    captured = capfd.readouterr()
    assert key.decode() not in captured.out + captured.err
