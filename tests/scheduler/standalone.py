"""Run ``airflow standalone`` as a subprocess for tests, and talk to it through the REST API v2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.conftest import ROOT

T = TypeVar("T")

VENV_BIN = Path(sys.executable).parent
SHARE_DAG = "share_octopus_workers"
SCHEDULER_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


class StandaloneError(RuntimeError):
    """Airflow standalone did not start, or did not do what the test waited for in time."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``condition`` until it returns something truthy; raise :class:`StandaloneError` naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
        except requests.RequestException as exc:  # not listening yet, or a restart: try again
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise StandaloneError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


class AirflowApi:
    """Minimal REST API v2 client (``simple_auth_manager_all_admins``: no credentials needed)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        resp = self.session.request(
            method, f"{self.base_url}/api/v2/{path.lstrip('/')}", json=body, params=params, timeout=self.timeout
        )
        if resp.status_code not in ok:
            raise StandaloneError(f"{method} /api/v2/{path}: HTTP {resp.status_code}: {resp.text[:1000]}")
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        return self.call("GET", "monitor/health")

    def import_errors(self) -> list[dict[str, Any]]:
        return self.call("GET", "importErrors")["import_errors"]

    def jobs(self, job_type: str) -> list[dict[str, Any]]:
        """Jobs of one type (``SchedulerJob``, ``TriggererJob``, ``DagProcessorJob``...)."""
        return self.call("GET", "jobs", params={"job_type": job_type, "limit": 100})["jobs"]

    def create_share_pool(self) -> None:
        """The dedicated pool ``octopus_share``, as the README creates it for ``[octopus] share_pool``."""
        from octopus.dag_defaults import share_pool_body

        self.call("POST", "pools", share_pool_body(), ok=(200, 201, 409))

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.call("PATCH", f"dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        """Trigger a run now; returns its run id."""
        run = self.call("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf)})
        return run["dag_run_id"]

    def backfill(self, dag_id: str, from_date: str, to_date: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        """Create a backfill (one run per logical date of the schedule in the range); returns the backfill."""
        body = {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "dag_run_conf": dict(conf),
            "reprocess_behavior": "none",
            "max_active_runs": 1,
        }

        def create() -> dict[str, Any] | None:
            # Airflow answers 503 "Database is locked ... not supported on SQLite under concurrent access" while the
            # scheduler writes (standalone runs on SQLite); the creation was rolled back, so trying again is safe.
            answer = self.call("POST", "backfills", body, ok=(200, 201, 503))
            return answer if "id" in answer else None

        return wait_for(create, timeout=60, interval=1, what="Airflow to accept the backfill (SQLite busy)")

    def pages(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a REST v2 collection (the API returns at most ``[api] maximum_page_limit``, 100, a page)."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", path, params={**(params or {}), "limit": 100, "offset": len(items)})
            items += page[key]
            total = page.get("total_entries")
            if not page[key] or (total is not None and len(items) >= total):
                return items

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.pages(f"dags/{dag_id}/dagRuns", "dag_runs")

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.pages(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def clear_task_instances(self, dag_id: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """POST clearTaskInstances (``dry_run`` must be given: the API defaults it to true)."""
        if "dry_run" not in body:
            raise ValueError("clearTaskInstances defaults to dry_run=true: pass dry_run explicitly")
        return self.call("POST", f"dags/{dag_id}/clearTaskInstances", dict(body))["task_instances"]


class AirflowStandalone:
    """``airflow standalone`` in its own process group with a private ``AIRFLOW_HOME`` on a free loopback port.

    ``extra_env`` is added to the environment of every component (and so of every task and trigger).
    All output goes to ``<home>/standalone.log``.
    """

    def __init__(self, home: Path, extra_env: Mapping[str, str] | None = None, *, startup_timeout: float = 180.0):
        self.home = Path(home)
        self.port = free_port()
        # standalone's log servers bind every interface on fixed default ports: at least make the ports private
        self.log_server_ports = (free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "standalone.log"
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.api = AirflowApi(self.url)

    def environment(self) -> dict[str, str]:
        # Drop the pytest session's own Airflow settings (tests/conftest.py): this instance has its own home.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),  # standalone spawns `airflow ...`
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_server_ports[0]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.log_server_ports[1]),
                "AIRFLOW__CORE__PARALLELISM": "8",  # LocalExecutor forks this many workers up front (2 cores here)
                # Only runs the test triggers: the DAG's @daily schedule must not queue a run of its own.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> AirflowStandalone:
        """Start and wait until every component is healthy (raises with the log tail if not)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "airflow"), "standalone"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=str(self.home),
                start_new_session=True,  # its own process group: teardown signals every component at once
            )
        self.wait(
            self._healthy,
            timeout=self.startup_timeout,
            what="airflow standalone to report every component healthy at /api/v2/monitor/health",
        )
        # No share pool: like a fresh install that skipped the README's optional step (share_to_space then runs
        # in default_pool); a test that configures [octopus] share_pool creates it with create_share_pool().
        return self

    def _healthy(self) -> bool:
        try:
            health = self.api.health()
        except StandaloneError:  # the api-server answers errors while it starts
            return False
        return all((health.get(c) or {}).get("status") == "healthy" for c in SCHEDULER_COMPONENTS)

    def wait(self, condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5) -> T:
        """:func:`wait_for`, but fail at once (with the log tail) if standalone has exited."""

        def check() -> T | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise StandaloneError(f"airflow standalone exited with {self.proc.returncode}\n{self.log_tail()}")
            return condition()

        return wait_for(check, timeout=timeout, what=what, interval=interval, on_timeout=self.log_tail)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last {chars} chars of {self.log_path} ---\n{text[-chars:]}"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout`` seconds."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
            self.proc.poll()  # reap the leader so the group can empty
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=timeout)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_with_env(name: str, value: str) -> list[int]:
    """Ids of this user's processes whose environment has ``name=value`` (finds what a test started)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def kill_leftovers(pids: list[int], what: str) -> None:
    """SIGKILL processes a test left behind, then fail naming them (a teardown must leave nothing running)."""
    for pid in set(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        raise RuntimeError(f"processes outlived {what} and the local cloud (killed): {sorted(set(pids))}")


@contextlib.contextmanager
def share_standalone(
    emulator, base: Path, *, conn: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Iterator[AirflowStandalone]:
    """``airflow standalone`` under ``base`` with the package, the local cloud and ``octopus_default`` pointing at
    ``emulator``; yielded once the share DAG is parsed. ``conn`` overrides connection fields (``extra`` merges),
    ``env`` adds to the environment.

    Teardown stops Airflow's process group, then every simulated VM, and fails if any process started under
    this Airflow home is still alive.
    """
    from tests.dags.harness import stop_local_tentacles

    runtime = base / "runtime"
    conn = dict(conn or {})
    connection = {
        "conn_type": "http",
        "host": emulator.url,
        "password": emulator.api_key,
        **conn,
        "extra": {"timeout": 30, **conn.get("extra", {})},
    }
    airflow = AirflowStandalone(
        base / "home",
        {
            "AIRFLOW_CONN_OCTOPUS_DEFAULT": json.dumps(connection),
            "OCTOPUS_WORKERS_STATE_DIR": str(base / "tf-state"),
            "TF_VAR_runtime_dir": str(runtime),
            "TF_VAR_server_comms_port": str(emulator.comms_port),
            "TF_VAR_boot_delay_seconds": "0",
            # The DAG's default_args retry after 30 s, 60 s...: cap every retry delay at 1 s so a task that
            # retries (summarize, when a space failed) does not hold the suite for minutes.
            "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "1",
            **(env or {}),
        },
    )
    try:
        airflow.start()
        airflow.wait(
            lambda: airflow.api.call("GET", f"dags/{SHARE_DAG}", ok=(200, 404)).get("dag_id"),
            timeout=120,
            what=f"the dag-processor to register {SHARE_DAG}",
        )
        yield airflow
    finally:
        airflow.stop()
        stop_local_tentacles(runtime)
        # only processes that inherited this test's private AIRFLOW_HOME
        kill_leftovers(processes_with_env("AIRFLOW_HOME", str(airflow.home)), "airflow standalone")
