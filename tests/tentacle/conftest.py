"""Fixtures for the Tentacle simulator and the local Terraform cloud (helpers in tentacle_support.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from tentacle_support import (
    API_KEY,
    ROOT,
    SCENARIO,
    TENTACLE_CMD,
    Octo,
    PrefixProxy,
    Terraform,
)

from octopus_emulator.testing import EmulatorProcess


@pytest.fixture
def terraform(tmp_path) -> Iterator[Terraform]:
    """An initialised working copy of include/terraform/local; destroyed (and processes killed) afterwards."""
    tf = Terraform(tmp_path)
    try:
        tf.run("init", "-input=false")
        yield tf
    finally:
        tf.cleanup()


@pytest.fixture(scope="session")
def emulator_for_tentacles() -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(api_key=API_KEY, health_check_delay=0.2, scenario=SCENARIO)
    emu.start()
    try:
        yield emu
    finally:
        emu.close()


@pytest.fixture
def octo(emulator_for_tentacles) -> Octo:
    """The emulator reset to SCENARIO with an empty request log."""
    emu = emulator_for_tentacles
    if not emu.running:
        emu.start()
    emu.control.clear_faults()
    emu.control.reset(SCENARIO)
    emu.control.clear_requests()
    return Octo(emu)


@pytest.fixture
def octo_prefixed(octo) -> Iterator[Octo]:
    """``octo`` reached through a reverse proxy under the path prefix /octopus."""
    proxy = PrefixProxy(octo.emu.url)
    prefixed = Octo(octo.emu, url=proxy.url)
    prefixed.proxy_log = proxy.log
    try:
        yield prefixed
    finally:
        proxy.close()


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
