"""A multi-machine Airflow on loopback: CeleryExecutor, PostgreSQL, Redis, two Celery workers.

Every component is its own process group with its own ``AIRFLOW_HOME`` (only the DAGs and plugins folders are
shared, as on separate machines); all listen on 127.0.0.1 on free ports. Each worker reports its own hostname (a
loopback address of its own, like a host name that resolves to that machine), so task instances show where
they ran. Terraform state lives in the ``pg`` backend on the same Postgres.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT
from tests.distributed.services import PostgresCluster, RedisServer
from tests.scheduler.standalone import VENV_BIN, AirflowApi, StandaloneError, free_port, wait_for

HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
#: The task heartbeat timeout the lost-worker test relies on (Airflow's default is 300 s).
HEARTBEAT_TIMEOUT = 20


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Component:
    """One ``airflow ...`` process (group) with its own home and log file."""

    name: str
    argv: list[str]
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.home / f"{self.name}.log"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(self.home),
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once: the machine is gone."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout`` seconds."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pgid):
            self.proc.poll()
            time.sleep(0.2)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- {self.name}: last {chars} chars of {self.log_path} ---\n{text[-chars:]}"


class DistributedAirflow:
    """Airflow on CeleryExecutor: scheduler, dag-processor, api-server, triggerer, two Celery workers.

    ``extra_env`` reaches every component (the Octopus connection, the local cloud's settings).
    """

    WORKERS = {"worker-a": "127.0.0.2", "worker-b": "127.0.0.3"}

    def __init__(self, base: Path, postgres: PostgresCluster, redis: RedisServer, extra_env: Mapping[str, str]):
        self.base = Path(base)
        self.postgres = postgres
        self.redis = redis
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = AirflowApi(self.url)
        self.extra_env = dict(extra_env)
        self.jwt_secret = secrets.token_urlsafe(32)
        self.secret_key = secrets.token_urlsafe(32)
        self.components: dict[str, Component] = {}

    # ------------------------------------------------------------------ environment
    def common_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
                # The hostname callable below lives in this repository's tests package.
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__CORE__PARALLELISM": "32",
                "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "1",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.distributed.hostname.from_env",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url("airflow", driver="postgresql+psycopg2"),
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url("airflow"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": self.secret_key,
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                # Messages a killed worker had prefetched stay unacknowledged in Redis: Airflow re-queues them.
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "45",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _component(self, name: str, argv: list[str], **env: str) -> Component:
        home = self.base / name
        return Component(
            name,
            [str(VENV_BIN / "airflow"), *argv],
            home,
            {
                **self.common_env(),
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "OCTOPUS_TEST_HOSTNAME": "127.0.0.1",
                **env,
            },
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self, startup_timeout: float = 240) -> DistributedAirflow:
        migrate = self._component("db-migrate", ["db", "migrate"])
        migrate.home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            migrate.argv, env=migrate.env, cwd=migrate.home, capture_output=True, text=True, timeout=300, check=False
        )
        if result.returncode != 0:
            raise StandaloneError(f"airflow db migrate failed: {result.stdout[-3000:]}{result.stderr[-3000:]}")
        self.components = {
            "api-server": self._component("api-server", ["api-server", "--port", str(self.port)]),
            "scheduler": self._component("scheduler", ["scheduler"]),
            "dag-processor": self._component("dag-processor", ["dag-processor"]),
            "triggerer": self._component("triggerer", ["triggerer"]),
        }
        for name, host in self.WORKERS.items():
            self.components[name] = self._component(
                name,
                [
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{name}@%h",
                    "--concurrency",
                    "4",
                    "--without-mingle",
                    "--without-gossip",
                ],
                OCTOPUS_TEST_HOSTNAME=host,
                # Nothing of Terraform's is shared between the workers but the pg backend.
                OCTOPUS_WORKERS_STATE_DIR=str(self.base / name / "octopus-workers-state"),
            )
        for component in self.components.values():
            component.start()
        self.wait(self._healthy, timeout=startup_timeout, what="every component healthy at /api/v2/monitor/health")
        self.api.create_share_pool()
        self.wait_workers(set(self.WORKERS))
        return self

    def _healthy(self) -> bool:
        try:
            health = self.api.health()
        except StandaloneError:
            return False
        return all((health.get(c) or {}).get("status") == "healthy" for c in HEALTH_COMPONENTS)

    def celery_nodes(self) -> set[str]:
        """Names (``worker-a``...) of the Celery workers answering a ping through the broker."""
        from celery import Celery

        app = Celery(broker=self.redis.url)
        try:
            replies = app.control.ping(timeout=1.0) or []
        finally:
            app.close()
        return {node.split("@", 1)[0] for reply in replies for node in reply}

    def wait_workers(self, names: set[str], timeout: float = 120) -> None:
        self.wait(lambda: names <= self.celery_nodes(), timeout=timeout, what=f"Celery workers {sorted(names)}")

    def restart_worker(self, name: str) -> None:
        component = self.components[name]
        if not component.alive:
            component.start()
        self.wait_workers({name})

    def wait(self, condition, *, timeout: float, what: str, interval: float = 0.5):
        """Poll ``condition``; fail at once, with log tails, if a component other than a killed worker died."""

        def check():
            for component in self.components.values():
                if component.name not in self.WORKERS and component.proc is not None and not component.alive:
                    raise StandaloneError(f"{component.name} exited\n{component.log_tail()}")
            return condition()

        return wait_for(check, timeout=timeout, what=what, interval=interval, on_timeout=self.log_tails)

    def log_tails(self) -> str:
        return "\n".join(c.log_tail(2500) for c in self.components.values())

    def task_log(self, worker: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        """Every try's log of one task instance as written on ``worker``'s own disk ("" if it ran elsewhere)."""
        root = self.base / worker / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            root = root / f"map_index={map_index}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(root.glob("attempt=*.log")))

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            component.stop()

    def homes(self) -> list[Path]:
        return [c.home for c in self.components.values()]


def dump_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path
