"""Helpers for the Tentacle simulator tests: the emulator view, a Terraform runner, polling, cleanup."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from octopus_emulator.testing import EmulatorProcess

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


SCENARIO = {
    "default_take": 2,  # small pages, so every listing has to follow Page.Next
    "default_worker_pool": False,
    "spaces": [
        {
            "Name": "Default",
            "IsDefault": True,
            "pools": [{"Name": f"Pool {i}", "SortOrder": i} for i in range(1, 6)],
            "policies": [{"Name": "Fast"}, {"Name": "Slow"}],
        },
        {"Name": " Second ", "pools": [{"Name": "Airflow Pool", "SortOrder": 1}]},
    ],
}


class Octo:
    """The emulator as the tentacle tests see it: its URLs, request log, worker records and comms channel."""

    def __init__(self, emu: EmulatorProcess, url: str | None = None) -> None:
        self.emu = emu
        self.url = url or emu.url
        self.comms_port = emu.comms_port
        self.control = emu.control
        self.http = emu.session()

    @property
    def log(self) -> list[str]:
        """Requests so far, as ``METHOD /path?query``."""
        return [
            f"{r['method']} {r['path']}" + (f"?{r['query']}" if r["query"] else "") for r in self.control.requests()
        ]

    def clear_log(self) -> None:
        self.control.clear_requests()

    def get(self, path: str):
        resp = self.http.get(self.emu.url + path, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def pool_id(self, space_id: str, name: str) -> str:
        return next(p["Id"] for p in self.get(f"/api/{space_id}/workerpools/all") if p["Name"] == name)

    def policy_id(self, space_id: str, name: str) -> str:
        return next(p["Id"] for p in self.get(f"/api/{space_id}/machinepolicies/all") if p["Name"] == name)

    @property
    def workers(self) -> dict[str, dict]:
        """Every worker record in every space, by Id (fresh from the REST API)."""
        out: dict[str, dict] = {}
        for space in self.get("/api/spaces/all"):
            out.update({w["Id"]: w for w in self.get(f"/api/{space['Id']}/workers/all")})
        return out

    def health(self, worker: dict) -> str:
        return self.get(f"/api/{worker['SpaceId']}/workers/{worker['Id']}")["HealthStatus"]

    def connections(self, subscription: str) -> int:
        """Open comms connections of the tentacle with this subscription id."""
        return sum(c["connections"] for c in self.control.comms() if c["subscription"] == subscription)

    def drop_comms(self) -> None:
        """Close every comms connection from the server side."""
        self.control.drop_tentacle(None)


class PrefixProxy:
    """Serves the emulator under the path prefix /octopus (a reverse proxy that strips it)."""

    def __init__(self, target: str, prefix: str = "/octopus") -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import requests

        session = requests.Session()
        self.log: list[str] = []
        log = self.log

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                log.append(f"{self.command} {self.path}")
                if not self.path.startswith(prefix + "/"):
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = session.request(
                    self.command,
                    target + self.path[len(prefix) :],
                    headers=headers,
                    data=self.rfile.read(length) if length else None,
                    timeout=30,
                )
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TENTACLE_CMD = [sys.executable, "-m", "octopus_emulator", "register-worker"]
