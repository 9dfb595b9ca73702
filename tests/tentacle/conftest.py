"""Fixtures for the Tentacle simulator and the local Terraform cloud: a throwaway Terraform working copy."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "include" / "terraform" / "local"
API_KEY = "API-TENTACLETESTKEY0000000000000000"


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def kill_tentacles_under(runtime_dir: Path) -> None:
    """Last-resort cleanup: SIGKILL every simulator whose pid file is under ``runtime_dir``."""
    for pidfile in runtime_dir.glob("*/tentacle.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)


class Terraform:
    """Runs terraform on a private copy of the local module, with private data dir, state and runtime dir."""

    def __init__(self, tmp: Path, api_key: str | None = API_KEY) -> None:
        self.dir = tmp / "module"
        shutil.copytree(MODULE, self.dir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
        self.runtime_dir = tmp / "runtime"
        cli_config = tmp / "terraformrc"
        cli_config.write_text("")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TF_") and k != "OCTOPUS_API_KEY"}
        self.env.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            TF_DATA_DIR=str(tmp / "tf-data"),
            TF_CLI_CONFIG_FILE=str(cli_config),
            PYTHONPATH=str(ROOT),
        )
        if api_key is not None:
            self.env["OCTOPUS_API_KEY"] = api_key
        self.vars: dict[str, str] = {
            "python_executable": sys.executable,
            "runtime_dir": str(self.runtime_dir),
            "boot_delay_seconds": "0",
        }

    def run(self, *args: str, check: bool = True, **variables) -> subprocess.CompletedProcess[str]:
        """``terraform <args>`` (with ``-var`` for plan/apply/destroy); output captured as text."""
        cmd = ["terraform", f"-chdir={self.dir}", *args, "-no-color"]
        if args[0] in ("plan", "apply", "destroy"):
            for k, v in {**self.vars, **{k: str(v) for k, v in variables.items()}}.items():
                cmd.append(f"-var={k}={v}")
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(args[:1])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def pids(self) -> dict[str, int]:
        """Instance name -> recorded simulator pid."""
        return {p.parent.name: int(p.read_text().strip()) for p in sorted(self.runtime_dir.glob("*/tentacle.pid"))}

    def cleanup(self) -> None:
        if (self.dir / "terraform.tfstate").exists():
            self.run("destroy", "-auto-approve", check=False, instance_count="0")
        kill_tentacles_under(self.runtime_dir)


@pytest.fixture
def terraform(tmp_path) -> Iterator[Terraform]:
    """An initialised working copy of include/terraform/local; destroyed (and processes killed) afterwards."""
    tf = Terraform(tmp_path)
    try:
        tf.run("init", "-input=false")
        yield tf
    finally:
        tf.cleanup()


@pytest.fixture
def octo():
    """An Octopus server with two spaces, paged pools/policies and a comms port (TEMPORARY fake)."""
    from fake_octopus import FakeOctopus

    server = FakeOctopus(API_KEY)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def octo_prefixed():
    """Like ``octo`` but served under the path prefix /octopus."""
    from fake_octopus import FakeOctopus

    server = FakeOctopus(API_KEY, prefix="/octopus")
    try:
        yield server
    finally:
        server.close()


TENTACLE_CMD = [sys.executable, "-m", "octopus_emulator", "register-worker"]


@pytest.fixture
def start_tentacle(tmp_path):
    """Start ``register-worker --run`` subprocesses (key via env); every one is killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(server, name: str = "w1", *extra: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        argv = [*TENTACLE_CMD, "--server", server.url, "--name", name, "--workerpool", "Pool 1"]
        argv += ["--server-comms-port", str(server.comms_port), "--home", str(tmp_path / name), "--run", *extra]
        env = {**os.environ, "OCTOPUS_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = tmp_path / f"{name}.log"
        procs.append(proc)
        log.close()
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
