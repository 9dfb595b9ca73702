"""Run the emulator as a real subprocess for tests and benchmarks.

    with EmulatorProcess(scenario=make_scenario(3, "Airflow Pool")) as emu:
        requests.get(emu.url + "/api/spaces", headers={"X-Octopus-ApiKey": emu.api_key})
        emu.control.set_faults({"error_rate": 0.1, "seed": 1})

The API key reaches the child through ``OCTOPUS_EMULATOR_API_KEYS``, never its command line.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class EmulatorStartError(RuntimeError):
    pass


class ControlClient:
    """Client for the ``/_emulator`` control API (no API key needed)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.session.request(method, f"{self.base_url}/_emulator/{path}",
                                    data=None if body is None else json.dumps(body),
                                    headers={"Content-Type": "application/json"}, timeout=self.timeout)
        if resp.status_code >= 400:
            raise RuntimeError(f"emulator control {method} {path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None

    def ping(self) -> dict:
        return self._call("GET", "ping")

    def reset(self, scenario: dict[str, Any] | None = None) -> dict:
        """Replace all state with a scenario (None: the default single "Default" space) or a state dump."""
        return self._call("POST", "reset", scenario)

    def state(self) -> dict:
        return self._call("GET", "state")

    def requests(self) -> list[dict]:
        return self._call("GET", "requests")

    def clear_requests(self) -> None:
        self._call("POST", "requests/clear")

    def counters(self) -> dict:
        return self._call("GET", "counters")

    def faults(self) -> dict:
        return self._call("GET", "faults")

    def set_faults(self, faults: dict[str, Any]) -> dict:
        return self._call("PUT", "faults", faults)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def comms(self) -> list[dict]:
        return self._call("GET", "comms")

    def drop_tentacle(self, subscription: str | None = None) -> int:
        return self._call("POST", "comms/drop", {"subscription": subscription})["dropped"]

    def health_check(self) -> dict[str, str]:
        return self._call("POST", "health-check")

    # ------------------------------------------------------------------ simulated steps and leases (leases.py)
    def start_task(self, pool: str, duration_seconds: float | None = None, *, space: str | None = None,
                   name: str = "Deploy", description: str | None = None, exclusive: bool = False,
                   project_id: str | None = None) -> dict:
        """Start a simulated step on a worker of ``pool`` (id or name) in ``space`` (id or name; None: the
        default space) for ``duration_seconds`` (None: until :meth:`complete_task`). Returns the task view; its
        ``outcome`` is ``failed_no_worker`` when the pool had no leasable worker."""
        body: dict[str, Any] = {"pool": pool, "duration_seconds": duration_seconds, "name": name,
                                "exclusive": exclusive}
        for key, value in (("space", space), ("description", description), ("project_id", project_id)):
            if value is not None:
                body[key] = value
        return self._call("POST", "tasks", body)

    def tasks(self, running: bool | None = None) -> list[dict]:
        """Every simulated task's view (``running``: only those still running, or only completed ones)."""
        suffix = "" if running is None else f"?running={'true' if running else 'false'}"
        return self._call("GET", "tasks" + suffix)["tasks"]

    def task(self, task_id: str) -> dict:
        return self._call("GET", f"tasks/{task_id}")

    def complete_task(self, task_id: str, state: str = "Success", *, keep_lease: bool = False,
                      error: str | None = None) -> dict:
        """End a running task now (``keep_lease``: leave its lease behind, stale)."""
        body: dict[str, Any] = {"state": state, "keep_lease": keep_lease}
        if error is not None:
            body["error"] = error
        return self._call("POST", f"tasks/{task_id}/complete", body)

    def step_counters(self) -> dict[str, int]:
        """``started, succeeded, failed_no_worker, killed, failed, canceled, timed_out, stale_injected,
        stale_cleared`` plus the gauges ``running, leases, stale_leases``."""
        return self._call("GET", "tasks/counters")

    def leases(self) -> dict:
        """``{"settings", "leases": [WorkerTaskLease + TaskState, Stale, Endpoint, Thumbprint], "busy_endpoints"}``."""
        return self._call("GET", "leases")

    def inject_stale_lease(self, worker: str, *, space: str | None = None, state: str = "Canceled",
                           age_seconds: float = 0.0, pool: str | None = None) -> dict:
        """A completed task whose lease on ``worker`` (id or name) remains until :meth:`server_restart`."""
        body: dict[str, Any] = {"worker": worker, "state": state, "age_seconds": age_seconds}
        if space is not None:
            body["space"] = space
        if pool is not None:
            body["pool"] = pool
        return self._call("POST", "leases/stale", body)

    def server_restart(self) -> list[str]:
        """Simulate an Octopus Server restart: clears the stale leases; returns their ids."""
        return self._call("POST", "server-restart")["cleared"]

    def lease_settings(self) -> dict:
        return self._call("GET", "leases/settings")

    def set_lease_settings(self, *, disabled_worker_leases: str | None = None,
                           refuse_delete_while_leased: bool | None = None) -> dict:
        """``disabled_worker_leases``: ``no_new_leases`` (default) or ``still_leased``."""
        body: dict[str, Any] = {}
        if disabled_worker_leases is not None:
            body["disabled_worker_leases"] = disabled_worker_leases
        if refuse_delete_while_leased is not None:
            body["refuse_delete_while_leased"] = refuse_delete_while_leased
        return self._call("PUT", "leases/settings", body)

    def wait_for_task(self, task_id: str, timeout: float = 10.0, interval: float = 0.02) -> dict:
        """Poll until the task has completed (bounded); returns its view, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.task(task_id)
            if view["is_completed"]:
                return view
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{task_id} still {view['state']} after {timeout} s")
            time.sleep(interval)

    def wait_no_running_tasks(self, timeout: float = 10.0, interval: float = 0.02) -> dict[str, int]:
        """Poll until no simulated step runs (bounded); returns the step counters, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            counters = self.step_counters()
            if counters["running"] == 0:
                return counters
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{counters['running']} step(s) still running after {timeout} s")
            time.sleep(interval)


class EmulatorProcess:
    """``python -m octopus_emulator serve`` in a subprocess on free loopback ports.

    ``scenario``: a dict or a path; ``state_file``: a path, ``True`` (a temporary file) or None (no
    persistence: :meth:`restart` then carries the state over through the control API, which needs a live
    process). After :meth:`stop`/:meth:`kill`, :meth:`start` or :meth:`restart` reuse the same ports.
    """

    def __init__(self, *, api_key: str | None = None, scenario: dict[str, Any] | str | Path | None = None,
                 state_file: str | Path | bool | None = None, health_check_delay: float | None = None,
                 host: str = "127.0.0.1", port: int = 0, comms_port: int = 0, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, startup_timeout: float = 30.0, log_path: str | Path | None = None):
        self.api_key = api_key or "API-" + secrets.token_hex(13).upper()
        self.host = host
        self.port = port
        self.comms_port = comms_port
        self.health_check_delay = health_check_delay
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="octopus-emulator-")
        tmp = Path(self._tmp.name)
        if isinstance(scenario, dict):
            path = tmp / "scenario.json"
            path.write_text(json.dumps(scenario), encoding="utf-8")
            self.scenario_path: Path | None = path
        else:
            self.scenario_path = Path(scenario) if scenario else None
        if state_file is True:
            self.state_file: Path | None = tmp / "state.json"
        else:
            self.state_file = Path(state_file) if state_file else None
        self.log_path = Path(log_path) if log_path else tmp / "emulator.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.pid: int | None = None
        self.control: ControlClient | None = None
        self._log_fh = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EmulatorProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self
        cmd = [sys.executable, "-m", "octopus_emulator", "serve", "--host", self.host, "--port", str(self.port),
               "--comms-port", str(self.comms_port)]
        if self.scenario_path:
            cmd += ["--scenario", str(self.scenario_path)]
        if self.state_file:
            cmd += ["--state-file", str(self.state_file)]
        if self.health_check_delay is not None:
            cmd += ["--health-check-delay", str(self.health_check_delay)]
        cmd += self.extra_args
        env = dict(os.environ)
        env.update(self.extra_env)
        env["OCTOPUS_EMULATOR_API_KEYS"] = self.api_key
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._log_fh = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log_fh, stdin=subprocess.DEVNULL,
                                     env=env, cwd=str(PACKAGE_ROOT))
        lines: queue.Queue[bytes] = queue.Queue()
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(b"")

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(0.05, remaining))
            except queue.Empty:
                line = None
            if line:
                try:
                    ready = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ready, dict) and "url" in ready:
                    break
            if line == b"" or remaining <= 0 or proc.poll() is not None:
                self.kill()
                raise EmulatorStartError(f"the emulator did not start: see {self.log_path}:\n{self.read_log()}")
        self.url = ready["url"]
        self.comms_port = int(ready["comms_port"])
        self.port = int(self.url.rsplit(":", 1)[1])
        self.pid = ready.get("pid", proc.pid)
        self.control = ControlClient(self.url)
        return self

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-5000:]
        except OSError:
            return ""

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (state survives only through the state file)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def restart(self) -> EmulatorProcess:
        """Stop and start again on the same ports. State is kept through the state file, or, without one,
        carried over through the control API (the faults and the request log are not kept)."""
        carried = None
        if self.state_file is None and self.running:
            carried = self.control.state()
        self.stop()
        self.start()
        if carried is not None:
            for key in ("comms", "faults", "leases"):
                carried.pop(key, None)
            self.control.reset(carried)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ conveniences
    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def headers(self) -> dict[str, str]:
        return {"X-Octopus-ApiKey": self.api_key}

    def session(self) -> requests.Session:
        s = requests.Session()
        s.headers.update(self.headers())
        return s
