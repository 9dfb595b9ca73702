"""Throwaway PostgreSQL and Redis servers on loopback for the distributed suite (Debian's packages).

Both live in a temporary directory and stop with :meth:`stop`, whatever state they are in. Postgres refuses to
run as root, so as root the cluster is created and run as the system user ``octopus-pg``
(scripts/setup.d/20-services.sh creates it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.scheduler.standalone import free_port, wait_for

PG_SYSTEM_USER = os.environ.get("OCTOPUS_PG_USER", "octopus-pg")


class ServiceError(RuntimeError):
    """A service of the distributed suite could not be set up."""


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb``, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def missing_services() -> list[str]:
    """What this machine lacks for the distributed suite (empty when everything is there)."""
    missing = []
    if postgres_bin() is None:
        missing.append("PostgreSQL (/usr/lib/postgresql/*/bin/initdb)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            missing.append(f"system user {PG_SYSTEM_USER} (postgres refuses root)")
    return missing


class PostgresCluster:
    """A private cluster: ``initdb`` in a temp dir, ``postgres`` on 127.0.0.1:<free port>, password auth.

    ``superuser`` connects over the Unix socket without a password; ``user``/``password`` own the databases
    made with :meth:`create_database`.
    """

    def __init__(self, *, user: str = "octopus", databases: tuple[str, ...] = ()):
        self.bin = postgres_bin()
        if self.bin is None:
            raise ServiceError("PostgreSQL is not installed (scripts/setup.d/20-services.sh installs it)")
        self.run_as = PG_SYSTEM_USER if os.geteuid() == 0 else None
        # Not under pytest's tmp dirs: those are 0700 root-owned, and the server runs as another user.
        self.base = Path(tempfile.mkdtemp(prefix="octopus-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "run"
        self.log_path = self.base / "postgres.log"
        self.port = free_port()
        self.user = user
        self.password = "pw-" + secrets.token_hex(12)
        self.databases = databases
        self.started = False

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def _run(self, *argv: str, input_text: str | None = None) -> str:
        result = subprocess.run(
            self._cmd(*argv), input=input_text, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(argv[:2])} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    def start(self) -> PostgresCluster:
        self.socket_dir.mkdir()
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.base, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.started = True
        self.sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        for database in self.databases:
            self.create_database(database)
        return self

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; returns psql's unaligned output."""
        return self._run(
            str(self.bin / "psql"),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            statement,
        )

    def create_database(self, name: str) -> None:
        self.sql(f"CREATE DATABASE {name} OWNER {self.user}")

    def url(self, database: str, *, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():  # pg_ctl could not stop it: the postmaster's group goes
                with contextlib.suppress(ValueError, ProcessLookupError, OSError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)


class RedisServer:
    """``redis-server`` on 127.0.0.1:<free port>, no persistence, in its own process group."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="octopus-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base),
            "--logfile",
            str(self.base / "redis.log"),
            "--protected-mode",
            "yes",
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_for(self._ping, timeout=30, what=f"redis-server on port {self.port}", interval=0.1)
        return self

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceError(f"redis-server exited with {self.proc.returncode}")
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=10, check=False
        )
        return result.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, timeout=10, check=False
            )
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def wait_pid_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
