"""``python -m octopus_emulator serve``: the HTTP API and the comms channel in one process, one event loop."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import uvicorn

from .app import Emulator, EmulatorASGI, create_app, new_api_key
from .comms import CommsServer
from .scenario import load_scenario_file
from .state import Options

API_KEYS_ENV = "OCTOPUS_EMULATOR_API_KEYS"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m octopus_emulator serve",
                                description="Run the Octopus Deploy emulator (REST API + comms channel).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8065, help="HTTP port (0: pick a free one)")
    p.add_argument("--comms-port", type=int, default=10943, help="comms channel port (0: pick a free one)")
    p.add_argument("--api-key", action="append", default=[],
                   help=f"accepted API key (repeatable); also from env {API_KEYS_ENV} (comma-separated)")
    p.add_argument("--scenario", help="scenario JSON file (see octopus_emulator/README.md)")
    p.add_argument("--state-file", help="load state from here at start, save after every write")
    p.add_argument("--health-check-delay", type=float, default=None,
                   help="seconds before a new worker is health-checked (default 1.0; a scenario may override)")
    p.add_argument("--max-log", type=int, default=100_000, help="request log entries kept (oldest dropped)")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _serve(args: argparse.Namespace, keys: list[str], generated: bool) -> None:
    options = Options()
    if args.health_check_delay is not None:
        options = options.merged({"health_check_delay_seconds": args.health_check_delay})
    scenario = load_scenario_file(args.scenario) if args.scenario else None
    emu = Emulator(keys, options, args.state_file, max_log=args.max_log)
    emu.attach_loop(asyncio.get_running_loop())
    emu.load_initial(scenario)
    http_sock = bind(args.host, args.port)
    comms_sock = bind(args.host, args.comms_port)
    comms = CommsServer(emu.comms, comms_sock)
    await comms.start()
    emu.comms_server = comms
    config = uvicorn.Config(EmulatorASGI(emu, create_app(emu)), access_log=False, log_level=args.log_level,
                            lifespan="off", timeout_keep_alive=30, proxy_headers=False, server_header=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[http_sock]))
    while not server.started:
        if task.done():
            await task
            raise SystemExit("the HTTP server failed to start")
        await asyncio.sleep(0.01)
    host = f"[{args.host}]" if ":" in args.host else args.host
    ready = {"url": f"http://{host}:{http_sock.getsockname()[1]}", "comms_port": comms.port, "pid": os.getpid()}
    if generated:
        ready["api_key"] = keys[0]
    print(json.dumps(ready), flush=True)
    try:
        await task
    finally:
        await comms.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keys = [k.strip() for k in args.api_key if k.strip()]
    keys += [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    generated = not keys
    if generated:
        keys = [new_api_key()]
    if args.state_file:
        Path(args.state_file).parent.mkdir(parents=True, exist_ok=True)
    factory = uvicorn.Config(app=None).get_loop_factory()  # uvloop when installed
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(args, keys, generated))
    else:  # pragma: no cover
        asyncio.run(_serve(args, keys, generated))
    return 0
